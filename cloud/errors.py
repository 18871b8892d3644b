"""The cloud's exceptions: one root, narrow subclasses."""

from __future__ import annotations


class CloudError(Exception):
    """Root of every error the cloud raises on purpose."""


class CloudConfigError(CloudError):
    """A cloud setting is wrong; the message names it."""


class EnrolmentError(CloudError):
    """A claim code was refused: unknown, used or expired."""
