"""Trust boundaries on the HTTP side (issue "Trust boundaries", items 5, 6, 7, 9),
through the real entry point: a `hookbus serve` subprocess and real HTTP.

- deep JSON, from every way in, is a 400 naming the depth limit (never a 500);
- HMAC: a sane timestamp, a valid `whsec_` secret, ingest endpoints only, and a
  signed message accepted once;
- a ping's exit status is ASCII digits 0-255, anything else a 4xx;
- idle connections cannot starve the server of file descriptors.
"""

from __future__ import annotations

import asyncio
import base64
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookbus.bus import signing
from hookbus.bus.events.event import MAX_DEPTH

from .conftest import free_port, http_request, toml_value

TOKEN = "tok-trust-7c1e5a"
SECRET = "whsec_" + base64.b64encode(b"trust-boundaries-secret-32-bytes").decode()
CHECK_KEY = "nightly-db"
HOOKBUS = [sys.executable, "-m", "hookbus.cli"]
DEPTH_LIMIT = str(MAX_DEPTH)


def config_text(root: Path, port: int, *, secrets: list[str] | None = None) -> str:
    bus = {"data_dir": str(root / "var"), "control": f"tcp://127.0.0.1:{free_port()}",
           "publish": f"tcp://127.0.0.1:{free_port()}"}
    http = {"listen": f"127.0.0.1:{port}", "tokens": [TOKEN], "hmac_secrets": secrets if secrets is not None else [SECRET]}
    lines = ["[bus]", *(f"{k} = {toml_value(v)}" for k, v in bus.items()),
             "", "[http]", *(f"{k} = {toml_value(v)}" for k, v in http.items()),
             "", "[[checks]]", f'key = "{CHECK_KEY}"', 'job = "db"',
             "", "[[subscribers]]", 'name = "audit"', 'kind = "jsonl"', f"path = {toml_value(str(root / 'audit.jsonl'))}"]
    return "\n".join(lines) + "\n"


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Server:
    """`hookbus serve` in a subprocess; `nofile` sets its RLIMIT_NOFILE (soft, hard) before exec."""

    def __init__(self, root: Path, nofile: tuple[int, int] | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.port = root, free_port()
        self.config = root / "hookbus.toml"
        self.config.write_text(config_text(root, self.port))
        self.log = root / "serve.log"

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([*HOOKBUS, "serve", "--config", str(self.config)], stdout=out,
                                         stderr=subprocess.STDOUT, cwd=root, preexec_fn=limit)
        wait_until(lambda: self.proc.poll() is not None or self.request("GET", "/healthz")[0] == 200, 30, "hookbus serve")
        assert self.proc.poll() is None, self.log.read_text()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                *, token: bool = True, timeout: float = 10) -> tuple[int, bytes]:
        auth = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        return http_request(self.port, method, path, body, {**auth, **(headers or {})}, timeout)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*HOOKBUS, *args, "--config", str(self.config)], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("trust-http"))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log.read_text(errors="replace")


def nested_json(depth: int) -> bytes:
    """`depth` levels of arrays and objects around a string (orjson cannot write more than 254)."""
    return b"".join(b'{"k":' if i % 2 else b"[" for i in range(depth)) + b'"leaf"' + b"".join(
        b"}" if i % 2 else b"]" for i in reversed(range(depth)))


def event_json(id_: str, data: bytes = b"null") -> bytes:
    return b'{"specversion":"1.0","id":"%s","source":"test://trust","type":"backup.log","data":%s}' % (id_.encode(), data)


def event(id_: str, data: Any = None) -> dict[str, Any]:
    return {"specversion": "1.0", "id": id_, "source": "test://trust", "type": "backup.log", "data": data}


def assert_depth_refused(status: int, answer: bytes) -> None:
    assert status == 400, (status, answer[:300])
    info = orjson.loads(answer)
    assert "nested" in info["error"] and DEPTH_LIMIT in info["error"], info
    assert b"Traceback" not in answer


# -- item 6: one nesting-depth limit for every JSON way in -------------------------------------------

DEPTHS = [65, 300, 1_000]


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_json_is_400_in_structured_mode(server: Server, depth: int) -> None:
    body = event_json(f"deep-structured-{depth}", nested_json(depth))
    assert_depth_refused(*server.request("POST", "/events", body, {"Content-Type": "application/cloudevents+json"}))


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_json_is_400_in_batch_mode(server: Server, depth: int) -> None:
    body = b"[%s,%s]" % (event_json(f"deep-batch-ok-{depth}"), event_json(f"deep-batch-{depth}", nested_json(depth)))
    assert_depth_refused(*server.request("POST", "/events", body, {"Content-Type": "application/cloudevents-batch+json"}))
    status, answer = server.request("GET", "/api/events?type=backup.log&limit=1000")
    assert status == 200, answer
    assert f"deep-batch-ok-{depth}".encode() not in answer, "a refused batch must store none of its events"


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_json_is_400_in_binary_mode(server: Server, depth: int) -> None:
    headers = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": f"deep-binary-{depth}",
               "ce-source": "test://trust", "ce-type": "backup.log"}
    assert_depth_refused(*server.request("POST", "/events", nested_json(depth), headers))


def test_json_at_the_limit_is_accepted(server: Server) -> None:
    body = event_json("at-the-limit", nested_json(64))
    status, answer = server.request("POST", "/events", body, {"Content-Type": "application/json"})
    assert status == 202, answer


@pytest.mark.parametrize("depth", [100, 300])
def test_deep_json_is_400_through_an_adapter(server: Server, depth: int) -> None:
    body = (b'{"hook":"backup_success","job_id":"j-deep","result":true,"record":{"host":"sw1","extra":%s}}'
            % nested_json(depth))
    assert_depth_refused(*server.request("POST", "/ingest/netcfgbu", body, {"Content-Type": "application/json"}))


@pytest.mark.parametrize("depth", [100, 300])
def test_deep_json_in_a_ping_body_is_kept_as_text(server: Server, depth: int) -> None:
    """A ping body is text (the failure's output), not parsed: any nesting is accepted, never a 5xx."""
    body = b'{"a":' * depth + b"1" + b"}" * depth
    status, answer = server.request("POST", f"/ping/{CHECK_KEY}/fail", body, {"Content-Type": "application/json"},
                                    token=False)
    assert status == 200, (status, answer[:300])
    assert server.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize("depth", [100, 300, 1_000])
def test_emit_with_deep_data_exits_2_without_a_traceback(server: Server, depth: int) -> None:
    done = server.cli("emit", "backup.log", "--data", nested_json(depth).decode())
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "nested" in done.stderr and DEPTH_LIMIT in done.stderr, done.stderr


# -- item 7: HMAC ---------------------------------------------------------------------------------

def signed(body: bytes, msg_id: str, **over: str) -> dict[str, str]:
    return {**signing.headers(SECRET, msg_id, body), "Content-Type": "application/json", **over}


def test_a_timestamp_of_400_digits_is_401(server: Server) -> None:
    body = orjson.dumps(event("ts-400"))
    status, answer = server.request("POST", "/events", body, signed(body, "msg-ts", **{"webhook-timestamp": "9" * 400}),
                                    token=False)
    assert status == 401, answer
    assert "webhook-timestamp" in orjson.loads(answer)["error"]


@pytest.mark.parametrize("timestamp", ["１７００００００００", "1_700_000_000", " 1700000000", "+1700000000", "17e8"])
def test_a_timestamp_that_is_not_ascii_digits_is_401(server: Server, timestamp: str) -> None:
    body = orjson.dumps(event("ts-odd"))
    headers = signed(body, "msg-ts-odd", **{"webhook-timestamp": timestamp})
    status, answer = server.request("POST", "/events", body, {k: v.encode().decode("latin-1") for k, v in headers.items()},
                                    token=False)
    assert status == 401, answer


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/events"), ("POST", "/api/dead-letters/1/retry"),
                                              ("GET", "/metrics"), ("GET", "/api/subscribers")])
def test_a_signature_does_not_open_the_api(server: Server, method: str, path: str) -> None:
    status, answer = server.request(method, path, b"" if method == "POST" else None, signed(b"", f"msg-api-{path}"),
                                    token=False)
    assert status == 401, answer
    assert "ingest" in orjson.loads(answer)["error"]


def test_a_replayed_signed_request_is_accepted_once(server: Server) -> None:
    # netcfgbu reports carry no id of their own: each accepted request is a new event.
    body = orjson.dumps({"hook": "git_report", "job_id": "j-replay", "success": True, "tag_name": "replay-tag"})
    headers = signed(body, "msg-replay-1")
    first = server.request("POST", "/ingest/netcfgbu", body, headers, token=False)
    again = server.request("POST", "/ingest/netcfgbu", body, headers, token=False)
    assert first[0] == 202, first
    assert again == first, "a repeat of the same webhook-id gets the first answer"
    status, answer = server.request("GET", "/api/events?type=backup.vcs.saved&limit=1000")
    assert status == 200, answer
    assert answer.count(b"replay-tag") == 1, answer


def test_a_valid_signature_on_ingest_still_works(server: Server) -> None:
    body = orjson.dumps(event("signed-ok"))
    status, answer = server.request("POST", "/events", body, signed(body, "msg-ok"), token=False)
    assert status == 202, answer


def test_check_config_refuses_a_malformed_whsec_secret(tmp_path: Path) -> None:
    config = tmp_path / "hookbus.toml"
    for bad in ("whsec_not*base64!", "whsec_" + base64.b64encode(b"short").decode(), "whsec_"):
        config.write_text(config_text(tmp_path, free_port(), secrets=[SECRET, bad]))
        done = subprocess.run([*HOOKBUS, "check-config", "--config", str(config)], capture_output=True, text=True,
                              timeout=30, cwd=tmp_path)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert "http.hmac_secrets" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert bad[6:] == "" or bad[6:] not in done.stderr, "the secret itself must not be printed"


# -- item 9: ping exit status ----------------------------------------------------------------------

@pytest.mark.parametrize("action", ["²", "①", "𝟘", "１", "٣", "9" * 5000, "256"])
def test_a_ping_exit_status_that_is_not_ascii_0_to_255_is_4xx(server: Server, action: str) -> None:
    from urllib.parse import quote

    status, answer = server.request("GET", f"/ping/{CHECK_KEY}/{quote(action)}", token=False)
    assert 400 <= status < 500, (status, answer[:300])
    assert orjson.loads(answer)["error"]


@pytest.mark.parametrize("action", ["0", "7", "255", "007", "0000255"])
def test_a_ping_exit_status_in_ascii_digits_is_accepted(server: Server, action: str) -> None:
    status, answer = server.request("GET", f"/ping/{CHECK_KEY}/{action}", token=False)
    assert status == 200, answer


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=12).filter(lambda a: "/" not in a), header_text, header_text, header_text)
def test_any_ping_action_or_signature_header_gets_a_4xx_or_success(server: Server, action: str, msg_id: str,
                                                                   timestamp: str, signature: str) -> None:
    from urllib.parse import quote

    status, answer = server.request("GET", f"/ping/{CHECK_KEY}/{quote(action, safe='')}", token=False)
    assert status in (200, 400, 404), (action, status, answer[:200])
    body = event_json("signed-fuzz")
    headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": timestamp,
               "webhook-signature": signature}
    # http.client sends header values as latin-1: carry any text as its UTF-8 bytes.
    status, answer = server.request("POST", "/events", body, {k: v.encode().decode("latin-1") for k, v in headers.items()},
                                    token=False)
    assert status in (400, 401), (headers, status, answer[:200])


# -- item 5: file descriptors ----------------------------------------------------------------------

IDLE = 1_100


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hard", ["system", "1024"])
def test_idle_connections_do_not_starve_ingest_emit_or_status(tmp_path: Path, hard: str) -> None:
    """1,100 idle connections to a server started with `ulimit -n 1024` (and the hard
    limit as the system has it, or 1024 too): POST /events, emit and status still work."""
    system_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if system_hard != resource.RLIM_INFINITY and system_hard < IDLE + 200:
        pytest.skip(f"this test process cannot open {IDLE} sockets (hard limit {system_hard})")
    srv = Server(tmp_path, nofile=(1024, system_hard if hard == "system" else 1024))
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        started = time.monotonic()
        body = orjson.dumps(event(f"after-idle-{hard}"))
        status, answer = wait_until(
            lambda: (r := srv.request("POST", "/events", body, {"Content-Type": "application/json"}, timeout=5))[0] and r,
            20, "POST /events answering")
        assert status == 202, answer
        emitted = srv.cli("emit", "backup.log", "--data", '{"n": 1}', "--timeout", "10")
        assert emitted.returncode == 0, emitted.stderr
        status_run = srv.cli("status", "--timeout", "10")
        assert status_run.returncode == 0, status_run.stderr
        assert time.monotonic() - started < 30
        assert srv.proc.poll() is None
        assert "Too many open files" not in srv.log.read_text(errors="replace")
    finally:
        for sock in idle:
            sock.close()
        srv.stop()


def test_an_idle_connection_is_closed_after_a_bounded_time(server: Server) -> None:
    """A connection that never sends a complete request header is closed by the server."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=40) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        started = time.monotonic()
        while sock.recv(4096):  # an answer (408) may come first; then the close
            pass
        waited = time.monotonic() - started
    assert waited < 30, waited


def test_the_server_raises_its_open_file_limit(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard limit leaves nothing to raise")
    srv = Server(tmp_path, nofile=(1024, hard))
    try:
        limits = Path(f"/proc/{srv.proc.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        soft = line.split()[3]
        assert soft == (str(hard) if hard != resource.RLIM_INFINITY else "unlimited"), line
    finally:
        srv.stop()


def test_systemd_units_set_limit_nofile() -> None:
    units = Path(__file__).resolve().parent.parent / "config" / "systemd"
    found = sorted(units.glob("*.service"))
    assert [u.name for u in found] == ["hookbus-run@.service", "hookbus-subscriber@.service", "hookbus.service"]
    for unit in found[1:]:  # the long-running ones (`hookbus run` opens a few files)
        assert "LimitNOFILE=65536" in unit.read_text(), unit.name


# -- the replay cache alone ------------------------------------------------------------------------

async def test_replay_cache_handles_an_id_once_and_forgets_failures_and_stale_ids() -> None:
    from aiohttp import web

    from hookbus.bus.http.replay import ReplayCache

    calls: list[int] = []

    async def handle(status: int) -> web.Response:
        calls.append(status)
        await asyncio.sleep(0.01)
        return web.Response(status=status, body=b'{"n": %d}' % len(calls), content_type="application/json")

    cache = ReplayCache(tolerance=300, max_entries=3)
    now = int(time.time())
    first, repeat = await asyncio.gather(cache.once("a", b"", now, lambda: handle(202)),
                                         cache.once("a", b"", now, lambda: handle(202)))
    assert calls == [202] and first.status == repeat.status == 202 and repeat.body == first.body  # type: ignore[attr-defined]
    await cache.once("b", b"", now, lambda: handle(400))
    await cache.once("b", b"", now, lambda: handle(202))
    assert calls == [202, 400, 202], "a refusal is not remembered: the retry is handled"
    await cache.once("a", b"another body", now, lambda: handle(202))
    assert calls == [202, 400, 202, 202], "an id reused for another body is another message"
    await cache.once("c", b"", now, lambda: handle(202))
    await cache.once("d", b"", now, lambda: handle(202))
    assert len(cache) == 3, "bounded: the oldest id is forgotten first"
    stale = ReplayCache(tolerance=300)
    await stale.once("old", b"", now - 400, lambda: handle(202))
    await stale.once("new", b"", now, lambda: handle(202))
    assert len(stale) == 1, "an id whose timestamp went stale is forgotten (the signature check refuses it anyway)"


@pytest.mark.parametrize(("soft", "limit", "backlog"), [(1024, 640, 128), (4096, 3328, 512), (65536, 4096, 1024),
                                                        (256, 16, 32), (resource.RLIM_INFINITY, 4096, 1024)])
def test_the_connection_bound_leaves_room_under_the_open_file_limit(monkeypatch: pytest.MonkeyPatch, soft: int,
                                                                    limit: int, backlog: int) -> None:
    from hookbus.bus.http import fdlimit

    monkeypatch.setattr(fdlimit.resource, "getrlimit", lambda _: (soft, resource.RLIM_INFINITY))
    assert fdlimit.http_sizes() == (limit, backlog)
