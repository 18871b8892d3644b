"""Fixtures for the network lab's own tests; other test trees can import them the same way."""

from lab.pytest_plugin import lab, lab_factory

__all__ = ["lab", "lab_factory"]
