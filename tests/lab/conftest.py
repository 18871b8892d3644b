"""Fixtures of the lab tests: the lab, the real agent in its router, and the real cloud."""

from lab.pytest_plugin import lab, lab_factory
from tests.cloud.conftest import database_url, postgres_cluster
from tests.lab.agent_fixtures import agent, make_agent
from tests.lab.alliance_fixtures import alliance
from tests.lab.cloud_fixtures import cloud, enrolled

__all__ = [
    "agent",
    "alliance",
    "cloud",
    "database_url",
    "enrolled",
    "lab",
    "lab_factory",
    "make_agent",
    "postgres_cluster",
]
