"""Errors of the link: one root, narrow subclasses."""

from __future__ import annotations

from agent.errors import LoopspotError


class LinkError(LoopspotError):
    """The link to the cloud cannot do what was asked."""


class IdentityError(LinkError):
    """Who this router is in the cloud is unknown or unreadable; the message names the fix."""


class StateError(LinkError):
    """A state machine was asked for a transition its state does not allow (a bug)."""
