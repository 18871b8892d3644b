"""The daemon's process set-up: one malloc arena, and aiohttp's server without its client."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from agent.process import UNKNOWN_VERSION, _declared_version, one_malloc_arena

SERVE_ONE_PAGE = """
import asyncio, json, socket, sys
from agent.process import aiohttp_without_its_client
done = aiohttp_without_its_client()
from aiohttp import web
import aiohttp.http

async def main():
    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text="portal"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    answer = (await reader.read()).decode()
    await runner.cleanup()
    return answer

answer = asyncio.run(main())
print(json.dumps({
    "done": done,
    "answer": answer,
    "server": aiohttp.http.SERVER_SOFTWARE,
    "client_modules": sorted(m for m in sys.modules if m in (
        "aiohttp.client", "aiohttp.connector", "aiohttp.cookiejar", "aiohttp.client_reqrep")),
}))
"""


def run_python(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_server_runs_without_aiohttps_client_loaded() -> None:
    found = run_python(SERVE_ONE_PAGE)
    assert found["done"] is True
    assert str(found["answer"]).startswith("HTTP/1.1 200 OK")
    assert str(found["answer"]).endswith("portal")
    assert found["client_modules"] == []


def test_the_server_names_the_installed_aiohttp_version() -> None:
    found = run_python(SERVE_ONE_PAGE)
    assert str(found["server"]).endswith(f"aiohttp/{version('aiohttp')}")


def test_an_aiohttp_imported_already_is_left_as_it_is() -> None:
    found = run_python(
        "import json, aiohttp\n"
        "from agent.process import aiohttp_without_its_client\n"
        "print(json.dumps({'done': aiohttp_without_its_client(),"
        " 'client': hasattr(aiohttp, 'ClientSession')}))"
    )
    assert found == {"done": False, "client": True}


def write_package(root: Path, init: str | None) -> importlib.machinery.ModuleSpec:
    package = root / "shop_lib"
    package.mkdir()
    (package / "__init__.py").write_text(init or "")
    spec = importlib.util.spec_from_file_location(
        "shop_lib", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    return spec


def test_the_version_is_read_from_the_package_source(tmp_path: Path) -> None:
    spec = write_package(tmp_path, '"""A library."""\n__version__ = "3.14.5"\n')
    assert _declared_version(spec) == "3.14.5"


def test_a_package_without_a_version_line_gets_the_unknown_version(tmp_path: Path) -> None:
    spec = write_package(tmp_path, "VERSION = (1, 2)\n")
    assert _declared_version(spec) == UNKNOWN_VERSION


@pytest.mark.skipif(not hasattr(os, "confstr"), reason="no confstr")
def test_glibc_takes_the_one_arena_setting() -> None:
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None
    assert one_malloc_arena() is bool(libc)


def test_static_files_are_typed_from_python_s_own_table_only() -> None:
    found = run_python(
        "import json, mimetypes\n"
        "from agent.process import prepare_daemon\n"
        "prepare_daemon()\n"
        "from aiohttp.web_fileresponse import CONTENT_TYPES\n"
        "print(json.dumps({'css': CONTENT_TYPES.guess_type('portal.css')[0],"
        " 'files_read': mimetypes._db is not None and bool(mimetypes._db.types_map[1].keys()"
        " - mimetypes._types_map_default.keys())}))"
    )
    assert found == {"css": "text/css", "files_read": False}
