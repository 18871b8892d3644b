"""The lab's exceptions: one root, narrow subclasses."""

from __future__ import annotations


class LabError(Exception):
    """Root of every error the lab raises on purpose."""


class LabSetupError(LabError):
    """The lab cannot be built here (not root, a tool is missing, the kernel refused)."""


class NamespaceError(LabError):
    """A network namespace is missing or could not be entered."""


class CommandError(LabError):
    """A command run inside a namespace exited non-zero; the message carries its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)} exited {returncode}: {stderr.strip()}")


class ServiceError(LabError):
    """A lab service (the wan web server or its DNS) did not come up in time."""


class DnsError(LabError):
    """A DNS answer was malformed or reported a failure other than NXDOMAIN."""
