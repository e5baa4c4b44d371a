"""Shared fixtures: free ports, configs, real hookbus processes, local HTTP receivers."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

HOOKBUS = [sys.executable, "-m", "hookbus.cli"]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free a moment ago, and never handed out before in this
    test run: a port freed and picked again would let two servers of one test
    (hookbus and a stand-in, or two hookbus sockets) race for it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def write_config(path: Path, *, bus: dict[str, Any] | None = None, http: dict[str, Any] | None = None,
                 subscribers: list[dict[str, Any]] | None = None) -> Path:
    lines = ["[bus]"] + [f"{k} = {toml_value(v)}" for k, v in (bus or {}).items()]
    lines += ["", "[http]"] + [f"{k} = {toml_value(v)}" for k, v in (http or {}).items()]
    for sub in subscribers or []:
        lines += ["", "[[subscribers]]"] + [f"{k} = {toml_value(v)}" for k, v in sub.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Site:
    """A hookbus installation in a temp dir: config, ports, data."""

    root: Path
    http_port: int
    control: str
    publish: str
    config: Path = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def configure(self, subscribers: list[dict[str, Any]], **bus: Any) -> Path:
        bus_table = {"data_dir": str(self.root / "var"), "control": self.control, "publish": self.publish,
                     "heartbeat": 0.5, **bus}
        self.config = write_config(self.root / "hookbus.toml", bus=bus_table,
                                   http={"listen": f"127.0.0.1:{self.http_port}"}, subscribers=subscribers)
        return self.config


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path, free_port(), f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")


class Proc:
    """A hookbus process that can be killed with SIGKILL and started again."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.args, self.log, self.cwd = args, log, cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen([*HOOKBUS, *self.args], stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd)
        return self

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> int:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else 0
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def spawn(*args: str) -> Proc:
        proc = Proc(list(args), tmp_path / f"proc{len(started)}.log", tmp_path).start()
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.stop()


async def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll a condition until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """One blocking request to 127.0.0.1:port; (0, b"") when the connection fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


async def http_ready(url: str) -> bool:
    import aiohttp

    try:
        async with aiohttp.ClientSession() as s, s.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
            return r.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def cloudevent(i: int, job: str = "job-1", type_: str = "backup.log", **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"ev-{i}", "source": "test://suite", "type": type_,
            "data": {"job_id": job, "n": i, **data}}


@dataclass
class Receiver:
    """A local HTTP server standing in for a webhook target."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)  # accepted (2xx) bodies
    attempts: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        payload = await request.json()
        if 200 <= self.status < 300:
            self.received.append({"body": payload, "headers": dict(request.headers)})
        return web.Response(status=self.status, text=self.body, headers=self.headers)


@contextlib.asynccontextmanager
async def local_site(app: web.Application) -> AsyncIterator[str]:
    """Serve app on a fresh loopback port until the block ends; yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving_receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    async with local_site(app) as base:
        rec.url = f"{base}/hook/secret-token-123"
        yield rec


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving_receiver() as rec:
        yield rec


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Loading a config remembers its secrets process-wide for scrubbing; keep each test's to itself."""
    from hookbus.bus import secrets

    saved = set(secrets.known_secrets())
    yield
    secrets.known_secrets().clear()
    secrets.known_secrets().update(saved)


@pytest.fixture(autouse=True)
def _no_inherited_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOKBUS_CONFIG", raising=False)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


# The PostgreSQL server (tests/pg.py), registered here so that a run has one server however many
# modules use it (a fixture imported into each module would be one fixture per module).
from tests.pg import pg_server, pg_url  # noqa: E402, F401
