"""A real PostgreSQL server for the tests: Debian's binaries, a cluster made by
initdb in a temporary folder, run as an unprivileged user (initdb refuses root:
as root, the cluster belongs to `nobody`) on a free loopback port.

`pg_server` (session) is shared; `pg_url` gives each test a fresh database on it.
A test that stops and starts the server makes its own (`server_or_skip`); so do
the benchmarks (bench/ingest.py, bench/bus.py --postgres).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest


def pg_bin() -> Path | None:
    """The newest installed server's bin folder, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PgUnavailable(RuntimeError):
    """Debian's PostgreSQL server is not installed here."""


UNAVAILABLE = "PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)"


_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child, before exec: SIGQUIT (PostgreSQL's immediate shutdown) when the test process dies."""
    _prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


class PgServer:
    """One cluster: initdb at creation, then start/stop as often as a test likes."""

    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise PgUnavailable(UNAVAILABLE)
        from tests.conftest import free_port  # here: conftest registers this module's fixtures, importing it

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
        self.proc: subprocess.Popen[bytes] | None = None

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, user=self.user,
                              cwd=self.root, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://hookbus:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Run `postgres` as this process's child (not daemonized by pg_ctl): if the test run is
        killed, the kernel stops the server with it (PR_SET_PDEATHSIG), and nothing is left running.
        (The signal follows the thread that started it: call this from the main thread.)"""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(self.bin / "postgres"), "-D", str(self.data)], stdout=log,
                                         stderr=subprocess.STDOUT, user=self.user, cwd=self.root,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start (see {self.log}): {self.log.read_text()[-500:]}")
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Shut down: smart (wait for clients), fast (roll back, disconnect) or immediate (crash-like)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal({"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
        self.proc.wait(60)

    @property
    def pid(self) -> int:
        """The server's main process (its backends are its children)."""
        assert self.proc is not None
        return self.proc.pid

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
        with contextlib.suppress(subprocess.SubprocessError, OSError):
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
