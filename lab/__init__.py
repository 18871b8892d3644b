"""A simulated shop in network namespaces: router, phones and the internet (wan).

Tests, the demo and benchmarks build one with `Lab.create(phones=N)`; see lab.topology.
The wan's web server is `python -m lab.wan`; the probe answers it serves are
agent.probes.PROBES (re-exported as lab.wan.PROBE_ANSWERS).
"""

from __future__ import annotations

from lab.client import HttpResponse, connect, http_get, http_post_form, ping
from lab.dns import dns_query
from lab.errors import (
    CommandError,
    DnsError,
    LabError,
    LabSetupError,
    NamespaceError,
    ServiceError,
)
from lab.netns import popen, run, socket_in
from lab.topology import Lab, Phone, cleanup_stale

__all__ = [
    "CommandError",
    "DnsError",
    "HttpResponse",
    "Lab",
    "LabError",
    "LabSetupError",
    "NamespaceError",
    "Phone",
    "ServiceError",
    "cleanup_stale",
    "connect",
    "dns_query",
    "http_get",
    "http_post_form",
    "ping",
    "popen",
    "run",
    "socket_in",
]
