"""Trust boundaries on the ZeroMQ sockets (DESIGN §2.7, §13), through the real
entry points: a `hookbus broker` process and real zmq sockets.

On the default configuration a local process without a credential gets nothing
from the control or publish socket; a publish credential publishes but does not
operate; a client never believes a process squatting the broker's port; memory
stays bounded under oversized frames, FETCH floods and idle subscribers; a
subscriber process survives malformed live messages; control inputs are checked.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import zmq

from hookbus.bus.transport import protocol

try:
    from hookbus.bus.transport.credentials import Credential, apply_credential, load_credential
except ImportError:  # the code before trust boundaries: these tests then fail on what they test, not on an import
    Credential = Any  # type: ignore[misc,assignment]
    apply_credential = load_credential = None  # type: ignore[assignment]

from .conftest import HOOKBUS, Site, cloudevent, http_ready, read_jsonl, wait_for, write_config

REPLY_WAIT_MS = 1500  # a refused request gets an ERR at once; a refused connection gets nothing
_OPEN: list[zmq.Socket[Any]] = []  # closed when the test ends (a socket collected open warns)


def open_socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.linger = 0
    _OPEN.append(sock)
    return sock


# -- helpers -------------------------------------------------------------------

async def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run a hookbus command to its end without blocking the loop; return (status, output)."""
    proc = await asyncio.create_subprocess_exec(
        *HOOKBUS, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


async def start_broker(site: Site, procs: Any, command: str = "broker", **bus: Any) -> Any:
    """`hookbus broker` (or `serve`: with the audit subscriber running) on the site, HTTP included."""
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(site.root / "audit.jsonl")}],
                   synchronous="NORMAL", **bus)
    proc = procs(command, "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 30, f"hookbus {command} to listen")
    return proc


def credential(site: Site, role: str) -> Credential | None:
    if load_credential is None:
        return None
    return load_credential(site.root / "var" / "keys" / f"{role}.credential")


def dealer(ctx: zmq.Context[Any], endpoint: str, cred: Credential | None = None) -> zmq.Socket[Any]:
    sock = open_socket(ctx, zmq.DEALER)
    if cred is not None:
        apply_credential(sock, cred)  # type: ignore[misc]
    sock.connect(endpoint)
    return sock


def ask(sock: zmq.Socket[Any], command: bytes, payload: dict[str, Any], *bodies: bytes) -> list[bytes] | None:
    """One request; the reply's frames, or None when nothing came within REPLY_WAIT_MS."""
    req = os.urandom(8)
    try:  # a DEALER whose handshakes fail has no peer: a send would block
        sock.send_multipart([command, req, orjson.dumps(payload), *bodies], flags=zmq.NOBLOCK)
    except zmq.Again:
        return None
    deadline = time.monotonic() + REPLY_WAIT_MS / 1000
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            reply = sock.recv_multipart()
            if reply[1] == req:
                return reply
    return None


def status(site: Site) -> dict[str, Any]:
    ctx = zmq.Context()
    try:
        reply = ask(dealer(ctx, site.control, credential(site, "operate")), protocol.STATUS, {})
        assert reply is not None and reply[0] == protocol.OK, reply
        result: dict[str, Any] = orjson.loads(reply[2])
        return result
    finally:
        ctx.destroy(linger=0)


def vm(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure, in KiB (VmRSS now, VmHWM its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def publish_events(site: Site, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, site.control, credential(site, "operate"))
        out = []
        for start in range(0, len(events), 50):
            reply = ask(sock, protocol.PUB, {}, *(orjson.dumps(e) for e in events[start:start + 50]))
            assert reply is not None and reply[0] == protocol.OK, reply
            out += orjson.loads(reply[2])["accepted"]
        return out
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    while _OPEN:
        _OPEN.pop().close(linger=0)
    ctx.destroy(linger=0)


# -- who may do what ---------------------------------------------------------------

ATTACKS: list[tuple[bytes, dict[str, Any]]] = [
    (protocol.PUB, {}),
    (protocol.FETCH, {"after": 0, "limit": 500}),
    (protocol.STATUS, {}),
    (protocol.REPLAY, {"subscriber": "audit", "from_seq": 1}),
    (protocol.DEAD, {"name": "audit", "seq": 1, "attempts": 1, "error": "forged: call 555-0100"}),
    (protocol.ACK, {"name": "audit", "cursor": 1_000_000, "epoch": 0}),
    (protocol.RETRY, {"name": "audit", "seq": 1, "attempts": 1, "next_at": "inf", "error": "x"}),
]


async def test_a_dealer_without_credential_gets_nothing_and_changes_nothing(site: Site, procs: Any, zctx: Any) -> None:
    await start_broker(site, procs, "serve", heartbeat=0.2)
    code, out = await run("emit", "--config", str(site.config), "backup.log", "--data", '{"n": 1}')
    assert code == 0, out  # the user that runs hookbus publishes with no configuration at all
    await wait_for(lambda: status(site)["subscribers"][0]["cursor"] == 1, 20, "the audit subscriber's cursor at seq 1")
    before = status(site)

    stranger = dealer(zctx, site.control)
    for command, payload in ATTACKS:
        bodies = [orjson.dumps(cloudevent(99))] if command == protocol.PUB else []
        reply = await asyncio.to_thread(ask, stranger, command, payload, *bodies)
        assert reply is None or reply[0] == protocol.ERR, (command, reply)

    listener = open_socket(zctx, zmq.SUB)
    listener.subscribe(b"")
    listener.connect(site.publish)
    assert not await asyncio.to_thread(listener.poll, 1500), "a SUB without credential heard the live stream"

    after = status(site)
    assert after["head"] == before["head"] == 1
    assert [(s["name"], s["cursor"]) for s in after["subscribers"]] == [(s["name"], s["cursor"]) for s in before["subscribers"]]
    assert after["dead_letters"] == [] and all(s["retries_in_flight"] == 0 for s in after["subscribers"])


async def test_a_publish_credential_publishes_but_cannot_operate(site: Site, procs: Any, zctx: Any, tmp_path: Path) -> None:
    await start_broker(site, procs)
    granted = tmp_path / "backrest" / "hookbus.credential"
    code, out = await run("grant", "publish", "--config", str(site.config), "--to", str(granted))
    assert code == 0, out
    assert stat.S_IMODE(granted.stat().st_mode) == 0o600
    assert stat.S_IMODE((site.root / "var" / "keys").stat().st_mode) == 0o700

    # `hookbus emit` as that user: its own (empty) data_dir, only the granted file.
    elsewhere = write_config(tmp_path / "other.toml", bus={"data_dir": str(tmp_path / "other-var"),
                                                          "control": site.control, "publish": site.publish})
    code, out = await run("emit", "--config", str(elsewhere), "backup.log", env={"HOOKBUS_CREDENTIAL": str(granted)})
    assert code == 0 and '"seq":1' in out.replace(" ", ""), out
    code, out = await run("status", "--config", str(elsewhere), env={"HOOKBUS_CREDENTIAL": str(granted)})
    assert code != 0, out

    sock = dealer(zctx, site.control, load_credential(granted))
    reply = await asyncio.to_thread(ask, sock, protocol.PUB, {}, orjson.dumps(cloudevent(2)))
    assert reply is not None and reply[0] == protocol.OK, reply
    for command, payload in [(protocol.ACK, {"name": "audit", "cursor": 2, "epoch": 0}),
                             (protocol.REPLAY, {"subscriber": "audit", "from_seq": 1}),
                             (protocol.FETCH, {"after": 0, "limit": 10}),
                             (protocol.STATUS, {})]:
        reply = await asyncio.to_thread(ask, sock, command, payload)
        assert reply is not None and reply[0] == protocol.ERR, (command, reply)
        assert "publish" in orjson.loads(reply[2])["error"], reply
    assert status(site)["head"] == 2


async def test_an_impostor_on_the_control_port_is_not_believed(site: Site, procs: Any, zctx: Any) -> None:
    broker = await start_broker(site, procs)  # the keys exist, as after any first start
    assert broker.stop() == 0
    site.config.write_text(site.config.read_text() + '\n[[jobs]]\nname = "nightly"\nrepository = "r"\nbackup = "true"\n')

    impostor = open_socket(zctx, zmq.ROUTER)
    impostor.bind(site.control)
    stop = threading.Event()

    def answer_everything() -> None:
        while not stop.is_set():
            if impostor.poll(50):
                frames = impostor.recv_multipart()
                accepted = [{"id": "x", "seq": 424242, "duplicate": False}]
                impostor.send_multipart([frames[0], protocol.OK, frames[2], orjson.dumps({"accepted": accepted})])

    thread = threading.Thread(target=answer_everything)
    thread.start()
    try:
        code, out = await run("emit", "--config", str(site.config), "--timeout", "2", "backup.log")
        assert code != 0 and "424242" not in out, out
        code, out = await run("run", "--config", str(site.config), "--timeout", "2", "nightly")
        assert list((site.root / "var" / "spool").glob("*.jsonl")), out  # kept for the real broker
    finally:
        stop.set()
        thread.join()


async def test_check_config_refuses_a_non_loopback_endpoint_without_curve(tmp_path: Path) -> None:
    config = write_config(tmp_path / "h.toml", bus={"data_dir": str(tmp_path / "var"), "control": "tcp://0.0.0.0:7600"})
    code, out = await run("check-config", "--config", str(config))
    assert code == 2 and "bus.control" in out and "curve_secret_key" in out, out


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
async def test_grant_to_another_user_writes_a_file_only_that_user_reads(site: Site, tmp_path: Path) -> None:
    import pwd

    site.configure([])
    dest = tmp_path / "nobody" / "credential"
    code, out = await run("grant", "publish", "--config", str(site.config), "--to", str(dest), "--user", "nobody")
    assert code == 0, out
    info = dest.stat()
    assert info.st_uid == pwd.getpwnam("nobody").pw_uid and stat.S_IMODE(info.st_mode) == 0o600
    assert "HOOKBUS_CREDENTIAL" in out


async def test_a_key_folder_others_can_read_is_refused_at_start(site: Site, procs: Any) -> None:
    site.configure([])
    code, out = await run("grant", "publish", "--config", str(site.config), "--to", str(site.root / "c"))
    assert code == 0, out  # the keys exist now
    (site.root / "var" / "keys").chmod(0o755)
    code, out = await run("broker", "--config", str(site.config), timeout=30)
    assert code == 1 and "keys" in out and "chmod go-rwx" in out, out


# -- control inputs ------------------------------------------------------------------

async def test_control_inputs_are_checked(site: Site, procs: Any, zctx: Any) -> None:
    await start_broker(site, procs)
    publish_events(site, [cloudevent(1)])
    sock = dealer(zctx, site.control, credential(site, "operate"))
    bad = [
        (protocol.RETRY, {"name": "audit", "seq": 1, "attempts": 1, "next_at": "inf", "error": "x"}, "next_at"),
        (protocol.RETRY, {"name": "audit", "seq": 1, "attempts": 1, "next_at": 1e300, "error": "x"}, "next_at"),
        (protocol.ACK, {"name": "audit", "cursor": 1_000_000, "epoch": 0}, "cursor"),
        (protocol.ACK, {"name": "audit", "cursor": 2 ** 63, "epoch": 0}, "cursor"),
        (protocol.FETCH, {"after": "x"}, "after"),
        (protocol.HELLO, {"name": "../etc"}, "name"),
        (protocol.REPLAY, {"dead_letters": True, "ids": list(range(100_000))}, "ids"),
    ]
    for command, payload, field in bad:
        reply = await asyncio.to_thread(ask, sock, command, payload)
        assert reply is not None and reply[0] == protocol.ERR, (command, payload, reply)
        assert orjson.loads(reply[2]).get("field") == field, (command, reply)
    after = status(site)
    assert all(s["retries_in_flight"] == 0 and s["cursor"] <= 1 for s in after["subscribers"]), after


# -- bounded memory ------------------------------------------------------------------

async def test_a_frame_over_the_limit_does_not_grow_the_broker(site: Site, procs: Any, zctx: Any) -> None:
    broker = await start_broker(site, procs)
    pid = broker.popen.pid
    peak_before = vm(pid, "VmHWM")
    sock = dealer(zctx, site.control, credential(site, "operate"))
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    _OPEN.append(monitor)
    big = b"x" * (64 << 20)
    sock.send_multipart([protocol.PUB, b"r1", b"{}", big])
    # The broker drops the connection at its frame limit, before taking the frame in.
    dropped = await asyncio.to_thread(monitor.poll, 30_000)
    answered = sock.poll(0)
    assert dropped and not answered
    assert status(site)["head"] == 0
    grown = vm(pid, "VmHWM") - peak_before
    assert grown < 32 * 1024, f"the broker's peak RSS grew by {grown} KiB for one 64 MiB frame (bound 32 MiB)"


async def test_a_fetch_flood_leaves_healthz_answering(site: Site, procs: Any, zctx: Any) -> None:
    broker = await start_broker(site, procs)
    publish_events(site, [cloudevent(i, blob="y" * 2000) for i in range(300)])
    rss_before = vm(broker.popen.pid, "VmRSS")
    cred = credential(site, "operate")
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        socks = [dealer(zctx, site.control, cred) for _ in range(20)]
        for s in socks:
            s.sndhwm = 10_000
        request = orjson.dumps({"after": 0, "limit": 5000})
        while not stop.is_set() and sent[0] < 200_000:
            for s in socks:
                try:
                    s.send_multipart([protocol.FETCH, b"f", request], flags=zmq.NOBLOCK)
                    sent[0] += 1
                except zmq.Again:
                    time.sleep(0.001)

    thread = threading.Thread(target=flood)
    thread.start()
    slowest = 0.0
    try:
        await wait_for(lambda: sent[0] >= 5_000, 30, "the flood to start")
        async with aiohttp.ClientSession() as session:
            for _ in range(15):
                t0 = time.monotonic()
                async with session.get(site.url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    assert r.status == 200
                slowest = max(slowest, time.monotonic() - t0)
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    grown = vm(broker.popen.pid, "VmRSS") - rss_before
    assert slowest < 2.0, f"/healthz took {slowest:.1f}s under the flood (deadline 2 s)"
    assert grown < 300 * 1024, f"the broker grew by {grown} KiB under the flood (bound 300 MiB)"


async def test_an_idle_sub_socket_does_not_grow_the_broker(site: Site, procs: Any, zctx: Any) -> None:
    broker = await start_broker(site, procs, heartbeat=0.2)
    idle = open_socket(zctx, zmq.SUB)
    idle.rcvhwm = 1
    if apply_credential is not None:
        apply_credential(idle, credential(site, "operate"))
    idle.subscribe(b"")
    idle.connect(site.publish)
    assert await asyncio.to_thread(idle.poll, 10_000), "no heartbeat on the publish socket"
    rss_before = vm(broker.popen.pid, "VmRSS")
    blob = "z" * 100_000
    for start in range(0, 4000, 200):
        await asyncio.to_thread(publish_events, site, [cloudevent(i, blob=blob) for i in range(start, start + 200)])
    grown = vm(broker.popen.pid, "VmRSS") - rss_before
    assert grown < 100 * 1024, f"an idle SUB socket grew the broker by {grown} KiB for 4,000 × 100 KB (bound 100 MiB)"


# -- subscriber processes and the publish socket -------------------------------------

class FakeBroker:
    """Stands in for the broker, with its keys, to feed a subscriber process
    what only the broker could send on the publish socket; counts FETCHes."""

    def __init__(self, site: Site, ctx: zmq.Context[Any]) -> None:
        from hookbus.bus.settings import BusSettings
        from hookbus.bus.transport.curve import apply_server

        self.router, self.xpub = open_socket(ctx, zmq.ROUTER), open_socket(ctx, zmq.XPUB)
        try:
            from hookbus.bus.transport.credentials import ensure_keys
        except ImportError:  # the code before trust boundaries: no keys
            pass
        else:
            keys = ensure_keys(BusSettings(data_dir=site.root / "var"))
            for sock in (self.router, self.xpub):
                apply_server(sock, keys)
        self.router.bind(site.control)
        self.xpub.bind(site.publish)
        self.events: list[bytes] = []
        self.fetches = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.router.poll(20):
                continue
            ident, command, req, payload, *_ = self.router.recv_multipart()
            info = orjson.loads(payload)
            head = len(self.events)
            bodies: list[bytes] = []
            if command == protocol.HELLO:
                answer: dict[str, Any] = {"cursor": 0, "epoch": 0, "head": head, "retries": []}
            elif command == protocol.PING:
                answer = {"head": head, "epoch": 0, "cursor": 0, "replays": 0}
            elif command == protocol.FETCH:
                self.fetches += 1
                after = int(info["after"])
                bodies = self.events[after:after + 500]
                answer = {"seqs": list(range(after + 1, after + 1 + len(bodies))), "scanned_to": head, "head": head}
            else:
                answer = {"ok": True}
            self.router.send_multipart([ident, protocol.OK, req, orjson.dumps(answer), *bodies])

    def send_live(self, *frames: bytes) -> None:
        self.xpub.send_multipart(list(frames))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


async def test_malformed_live_messages_leave_a_subscriber_process_running(site: Site, procs: Any, zctx: Any) -> None:
    site.configure([{"name": "audit", "kind": "jsonl", "path": str(site.root / "audit.jsonl")}], heartbeat=0.2)
    fake = FakeBroker(site, zctx)
    try:
        fake.events.append(orjson.dumps(cloudevent(1)))
        sub = procs("subscriber", "audit", "--config", str(site.config))
        out = site.root / "audit.jsonl"
        await wait_for(lambda: len(read_jsonl(out)) == 1, 30, "the subscriber to deliver seq 1")
        subscribed = await asyncio.to_thread(fake.xpub.poll, 10_000)
        assert subscribed and fake.xpub.recv()[:1] == b"\x01"
        good = orjson.dumps(cloudevent(2))
        malformed = [
            [b"\xff\xfe not utf-8", protocol.seq_bytes(2), good],
            [b"backup.log", protocol.seq_bytes(2)],
            [b"backup.log", b"\x7f" * 100, good],
            [b"backup.log", protocol.seq_bytes(2), b"not json"],
            [b"backup.log", protocol.seq_bytes(2), good, b"one frame too many"],
            [protocol.HEARTBEAT_TOPIC, protocol.seq_bytes(2 ** 62)],
        ]
        for frames in malformed:
            fake.send_live(*frames)
        fetches = fake.fetches
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert sub.popen.poll() is None, sub.output()
            await asyncio.sleep(0.1)
        assert fake.fetches - fetches < 100, f"{fake.fetches - fetches} FETCHes in 3 s after a seq beyond the head"

        fake.events.append(good)
        fake.send_live(b"backup.log", protocol.seq_bytes(2), good)
        await wait_for(lambda: [e["id"] for e in read_jsonl(out)] == ["ev-1", "ev-2"], 20, "the later event delivered")
        assert sub.popen.poll() is None, sub.output()
    finally:
        fake.close()
