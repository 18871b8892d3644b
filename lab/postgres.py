"""A throwaway PostgreSQL cluster on loopback (initdb/pg_ctl as user postgres: they refuse root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from lab.errors import ServiceError
from lab.freeport import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise ServiceError(f"PostgreSQL's {name} is missing: apt-get install postgresql")
    return found[-1]


class Postgres:
    """One cluster in a temporary folder; `url` is a SQLAlchemy URL for database `loopspot`."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="loopspot-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.running = False

    @property
    def url(self) -> str:
        """The database's SQLAlchemy URL (psycopg 3)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/loopspot"

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ServiceError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()}")
        return done

    def start(self) -> Postgres:
        """initdb, start on a free loopback port, and create database `loopspot`."""
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        self._as_postgres(
            _bin("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=100"
        )
        self._as_postgres(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.workdir / "pg.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True
        self._as_postgres(
            _bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "loopspot"
        )
        return self

    def stop(self) -> None:
        """Stop the cluster and delete its files (idempotent)."""
        if self.running:
            self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
