"""The daemon's process set-up: one malloc arena, aiohttp's server alone, no dnspython."""

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


def run_python(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
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


PAHO_AS_THE_DAEMON_LOADS_IT = """
import asyncio, json, sys
from agent.process import prepare_daemon
prepare_daemon()
import aiomqtt
import paho.mqtt.client as paho

async def made() -> aiomqtt.Client:
    return aiomqtt.Client("broker.example", 8883, identifier="shop-0042")

client = asyncio.run(made())
print(json.dumps({"dns_loaded": "dns" in sys.modules, "srv": paho.HAVE_DNS,
                  "client": type(client).__name__}))
"""


def test_the_daemons_mqtt_client_works_without_loading_dnspython(tmp_path: Path) -> None:
    # A dnspython stand-in on the path, whether or not the real one is installed.
    (tmp_path / "dns").mkdir()
    (tmp_path / "dns" / "__init__.py").write_text("")
    (tmp_path / "dns" / "resolver.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    assert run_python("import json, paho.mqtt.client as p; print(json.dumps(p.HAVE_DNS))", env)
    found = run_python(PAHO_AS_THE_DAEMON_LOADS_IT, env)
    assert found == {"dns_loaded": False, "srv": False, "client": "Client"}
