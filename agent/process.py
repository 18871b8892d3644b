"""How the daemon's process is set up on a small router: once, before its heavy imports."""

from __future__ import annotations

import ctypes
import importlib.util
import mimetypes
import re
import sys

M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h
AIOHTTP = "aiohttp"
DNS_RESOLVER = "dns.resolver"  # dnspython's, which paho-mqtt imports if it can
UNKNOWN_VERSION = "unknown"


def prepare_daemon() -> None:
    """Everything here, in order: before any thread starts and before the daemon's imports."""
    one_malloc_arena()
    only_builtin_mime_types()
    aiohttp_without_its_client()
    paho_without_dnspython()


def one_malloc_arena() -> bool:
    """Make every thread allocate from one malloc arena; True when that was done.

    glibc gives each thread that calls malloc its own arena, and memory freed in one
    is not reused by another: the agent's few threads cost it megabytes. musl, the C
    library of OpenWrt, has no arenas; elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, 1))


def only_builtin_mime_types() -> None:
    """Let the content types of static files come from Python's own table only.

    aiohttp's file responses make Python read the system's type files, kept for the life
    of the process: Debian's /etc/mime.types, 2,000 types, is 0.4 MiB. An OpenWrt router
    has no such file, and the portal serves CSS, SVG and PNG, which the table knows.
    """
    mimetypes.knownfiles = []


def aiohttp_without_its_client() -> bool:
    """Let `import aiohttp.web` load aiohttp's server and not its HTTP client.

    aiohttp's package `__init__` imports the whole client first: sessions, connector, cookie
    jar, multipart, two TLS contexts holding every public root certificate. That is over
    3 MiB of a router's memory (35.9 against 32.5 MiB for `import aiohttp.web` on Debian)
    for a client the daemon never uses. This registers the package
    without running its `__init__`; its submodules import each other by name, and the one
    package attribute they read, `__version__`, is set here. Afterwards `aiohttp.web` works
    as usual and `aiohttp.ClientSession` does not exist. True when this was done; False
    when aiohttp was imported already (then nothing changes) or cannot be found.
    """
    if AIOHTTP in sys.modules:
        return False
    spec = importlib.util.find_spec(AIOHTTP)
    if spec is None or spec.submodule_search_locations is None:
        return False
    package = importlib.util.module_from_spec(spec)  # made, and not run
    package.__version__ = _declared_version(spec)  # type: ignore[attr-defined]
    sys.modules[AIOHTTP] = package
    return True


def _declared_version(spec: importlib.machinery.ModuleSpec) -> str:
    """The `__version__ = "…"` line of a package's source; UNKNOWN_VERSION without source."""
    try:
        source = spec.loader.get_source(spec.name) if spec.loader else None  # type: ignore[attr-defined]
    except ImportError:
        source = None
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", source or "", re.MULTILINE)
    return found.group(1) if found else UNKNOWN_VERSION


def paho_without_dnspython() -> bool:
    """Keep paho-mqtt from loading dnspython, which the agent never uses; True when done.

    paho imports `dns.resolver` whenever it can, for `connect_srv` (broker lookup by DNS SRV
    records), and dnspython's resolver pulls in most of dnspython: 3.7 MiB of a router's
    memory, on any machine where python3-dnspython is installed for something else. The
    agent connects to a named broker, so this marks the module as absent: paho then sets
    HAVE_DNS False. False when dnspython was imported already (nothing changes).
    """
    if DNS_RESOLVER in sys.modules:
        return False
    sys.modules[DNS_RESOLVER] = None  # type: ignore[assignment]  # "import ... halted"
    return True
