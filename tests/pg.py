"""A real PostgreSQL server for the tests: Debian's binaries, a cluster made by
initdb in a temporary folder, run as an unprivileged user (initdb refuses root:
as root, the cluster belongs to `nobody`) on a free loopback port.

`pg_server` (session) is shared; `pg_url` gives each test a fresh database on it.
A test that stops and starts the server makes its own (`server_or_skip`); so do
the benchmarks (bench/ingest.py, bench/bus.py --postgres).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from tests.conftest import free_port


def pg_bin() -> Path | None:
    """The newest installed server's bin folder, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PgUnavailable(RuntimeError):
    """Debian's PostgreSQL server is not installed here."""


UNAVAILABLE = "PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)"


class PgServer:
    """One cluster: initdb at creation, then start/stop as often as a test likes."""

    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise PgUnavailable(UNAVAILABLE)
        self.bin = bindir
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.root = Path(tempfile.mkdtemp(prefix="hookbus-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb refuses root: the cluster is nobody's
            self.user = "nobody"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user:
            shutil.chown(pwfile, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "hookbus", "--pwfile", str(pwfile), "--auth-host=scram-sha-256",
                  "--auth-local=trust", "-E", "UTF8", "--no-instructions")
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:  # initdb before 16 has no -c
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                       "max_connections = 300\nshared_buffers = 64MB\n")
        self._databases = count(1)

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, user=self.user,
                              cwd=self.root, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://hookbus:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def ready(self) -> bool:
        return subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True, timeout=10).returncode == 0

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"hookbus_{next(self._databases)}"  # long enough that masking a URL's path would show
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError, RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def server_or_skip() -> Iterator[PgServer]:
    """A server of its own for one test; skipped (saying why) where the binaries are absent."""
    if pg_bin() is None:
        pytest.skip(UNAVAILABLE)
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with server_or_skip() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.new_database()
