"""Fixtures of the lab tests: the lab itself, and the real agent running in its router."""

from lab.pytest_plugin import lab, lab_factory
from tests.lab.agent_fixtures import agent, make_agent

__all__ = ["agent", "lab", "lab_factory", "make_agent"]
