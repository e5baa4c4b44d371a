"""Faults against real hookbus processes, with a table of what happened.

    python -m bench.chaos            # full scenarios (several minutes)
    python -m bench.chaos --short    # scaled down, as CI runs it
    python -m bench.chaos --only broker-kill target-429 --json

Each scenario starts its own `hookbus` processes on loopback ports in a temp
dir, drives real traffic, injects one fault, and counts: sent, accepted (a 2xx,
i.e. durable), refused (and how), delivered (distinct events at the far end),
duplicates (repeat deliveries), lost (accepted but never delivered: always 0),
and the seconds from the fault's end until everything accepted was delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ._common import HOST, Processes, free_ports, hookbus_command, wait_port, write_config


@dataclass
class Row:
    scenario: str  # what happened, in words
    name: str = ""  # the scenario's key (--only)
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    recover_s: float | None = None
    note: str = ""
    refusals: dict[str, int] = field(default_factory=dict)


@dataclass
class Scale:
    events: int
    down_s: float
    kills: int


SHORT = Scale(events=1_500, down_s=8.0, kills=4)
FULL = Scale(events=20_000, down_s=180.0, kills=20)


def event(i: int, run: str, job: str | None = None, size: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = {"job_id": job or f"job-{i % 13}", "n": i}
    if size:
        data["output_tail"] = "x" * size
    return {"specversion": "1.0", "id": f"{run}-{i}", "source": f"chaos://{run}", "type": "backup.log", "data": data}


class Site:
    """One hookbus installation in a temp dir, with its processes."""

    def __init__(self, root: Path, procs: Processes, subscribers: list[dict[str, Any]], *,
                 http: dict[str, Any] | None = None, bus: dict[str, Any] | None = None,
                 data_dir: Path | None = None) -> None:
        self.root, self.procs = root, procs
        self.http_port, control, publish = free_ports(3)
        self.config = write_config(root / "hookbus.toml", data_dir=data_dir or root / "var", control_port=control,
                                   publish_port=publish, http_port=self.http_port, subscribers=subscribers,
                                   bus={"heartbeat": 0.5, **(bus or {})})
        if http:
            text = self.config.read_text().replace("[http]\n", "[http]\n" + "".join(
                f"{k} = {json.dumps(v)}\n" for k, v in http.items()), 1)
            self.config.write_text(text)
        self.url = f"http://{HOST}:{self.http_port}"
        self.control, self.publish = f"tcp://{HOST}:{control}", f"tcp://{HOST}:{publish}"

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = self.procs.start(f"{args[0]}-{time.monotonic_ns()}", [*hookbus_command(), *args, "--config", str(self.config)])
        if args[0] in ("serve", "broker"):
            wait_port(self.http_port, proc, self.procs, args[0])
        return proc


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def jsonl_ids(path: Path) -> Counter[str]:
    ids: Counter[str] = Counter()
    if path.exists():
        for line in path.read_bytes().splitlines():
            if line.strip():
                ids[json.loads(line)["id"]] += 1
    return ids


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Poster:
    """Posts events as a careful client would: the same event again until a
    2xx, or until a 4xx says it is refused for good."""

    def __init__(self, url: str, headers: Callable[[bytes], dict[str, str]] | None = None) -> None:
        self.url, self.headers = url, headers
        self.accepted: set[str] = set()
        self.refusals: Counter[str] = Counter()

    async def post(self, session: aiohttp.ClientSession, ev: dict[str, Any], give_up_after: float = 120.0) -> int:
        body = json.dumps(ev).encode()
        deadline = time.monotonic() + give_up_after
        while time.monotonic() < deadline:
            headers = {"Content-Type": "application/cloudevents+json", **(self.headers(body) if self.headers else {})}
            try:
                async with session.post(self.url + "/events", data=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    answer = await resp.text()
                    if resp.status == 202:
                        self.accepted.add(ev["id"])
                        return 202
                    if resp.status < 500:
                        self.refusals[f"{resp.status} {json.loads(answer).get('error', '')[:60]}"] += 1
                        return resp.status
                    self.refusals.setdefault(f"{resp.status} (retried)", 0)
                    self.refusals[f"{resp.status} (retried)"] += 1
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.05)
        return 0

    async def post_all(self, events: list[dict[str, Any]], workers: int = 32,
                       progress: Callable[[int], Awaitable[None]] | None = None) -> None:
        queue = list(reversed(events))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as session:
            async def worker() -> None:
                while queue:
                    await self.post(session, queue.pop())

            await asyncio.gather(*(worker() for _ in range(workers)))


class Target:
    """A local HTTP receiver that can be down (503), throttling (429), stalled or up."""

    def __init__(self) -> None:
        self.mode = "up"
        self.retry_after = 2
        self.received: Counter[str] = Counter()
        self.throttled_at: list[float] = []  # when each 429 was answered
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.mode == "stall":
            await asyncio.sleep(3600)
        if self.mode == "down":
            return web.Response(status=503, text="down for maintenance")
        if self.mode == "throttle":
            self.throttled_at.append(time.monotonic())
            return web.Response(status=429, text="slow down", headers={"Retry-After": str(self.retry_after)})
        self.received[(await request.json())["id"]] += 1
        return web.Response(text="ok")

    async def __aenter__(self) -> Target:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        (port,) = free_ports(1)
        await web.TCPSite(self.runner, HOST, port).start()
        self.url = f"http://{HOST}:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def finish(row: Row, accepted: set[str], seen: Counter[str], poster: Poster | None = None) -> Row:
    row.accepted = len(accepted)
    row.delivered = len(accepted & set(seen))
    row.duplicates = sum(n - 1 for n in seen.values() if n > 1)
    row.lost = row.accepted - row.delivered
    if poster is not None:
        row.refusals = {k: v for k, v in poster.refusals.items() if "(retried)" not in k}
        row.refused = sum(row.refusals.values())
    return row


# -- scenarios ----------------------------------------------------------------

async def broker_kill(root: Path, procs: Processes, scale: Scale) -> Row:
    """SIGKILL `hookbus serve` (broker, journal, subscribers) in the middle of a burst, restart it."""
    out = root / "audit.jsonl"
    site = Site(root, procs, [{"name": "audit", "kind": "jsonl", "path": str(out)}])
    serve = site.start("serve")
    poster = Poster(site.url)
    events = [event(i, "kill") for i in range(scale.events)]
    row = Row("broker SIGKILL mid-burst", sent=len(events))
    restarted_at = 0.0

    async def killer() -> None:
        nonlocal serve, restarted_at
        await until(lambda: len(poster.accepted) >= scale.events // 3, 120)
        kill9(serve)
        serve = site.start("serve")
        restarted_at = time.monotonic()

    await asyncio.gather(poster.post_all(events), killer())
    await until(lambda: set(jsonl_ids(out)) >= poster.accepted, 120)
    row.recover_s = round(time.monotonic() - restarted_at, 2)
    return finish(row, poster.accepted, jsonl_ids(out), poster)


async def subscriber_crash_loop(root: Path, procs: Processes, scale: Scale) -> Row:
    """A subscriber process SIGKILLed again and again while events flow."""
    out = root / "audit.jsonl"
    site = Site(root, procs, [{"name": "audit", "kind": "jsonl", "path": str(out)}])
    site.start("broker")
    sub = site.start("subscriber", "audit")
    poster = Poster(site.url)
    events = [event(i, "crash") for i in range(scale.events)]
    row = Row(f"subscriber crash loop ({scale.kills} SIGKILLs)", sent=len(events))
    last_restart = 0.0

    async def crash_loop() -> None:
        nonlocal sub, last_restart
        for _ in range(scale.kills):
            await asyncio.sleep(0.4)
            kill9(sub)
            sub = site.start("subscriber", "audit")
            last_restart = time.monotonic()

    await asyncio.gather(poster.post_all(events, workers=8), crash_loop())
    await until(lambda: set(jsonl_ids(out)) >= poster.accepted, 120)
    row.recover_s = round(time.monotonic() - last_restart, 2)
    return finish(row, poster.accepted, jsonl_ids(out), poster)


async def _target_fault(root: Path, procs: Processes, scale: Scale, mode: str, name: str,
                        sub_keys: dict[str, Any]) -> tuple[Row, Target]:
    async with Target() as target:
        target.mode = mode
        site = Site(root, procs, [{"name": "hook", "kind": "webhook", "url": target.url, **sub_keys}])
        site.start("serve")
        poster = Poster(site.url)
        count = min(scale.events, 500)
        events = [event(i, mode, job=f"job-{i % 5}") for i in range(count)]
        row = Row(name, sent=count)
        started = time.monotonic()
        await poster.post_all(events, workers=8)
        await until(lambda: time.monotonic() - started >= scale.down_s, scale.down_s + 5)
        target.mode = "up"
        back = time.monotonic()
        await until(lambda: set(target.received) >= poster.accepted, scale.down_s + 180)
        row.recover_s = round(time.monotonic() - back, 2)
        return finish(row, poster.accepted, target.received, poster), target


async def target_down(root: Path, procs: Processes, scale: Scale) -> Row:
    row, _ = await _target_fault(root, procs, scale, "down", f"target answers 503 for {scale.down_s:g}s",
                                 {"retry": {"attempts": 1000, "max_delay": 5.0, "initial_delay": 0.5}})
    return row


async def target_429(root: Path, procs: Processes, scale: Scale) -> Row:
    row, target = await _target_fault(root, procs, scale, "throttle",
                                      f"target answers 429 Retry-After: 2 for {scale.down_s:g}s",
                                      {"retry": {"attempts": 1000, "max_delay": 5.0, "initial_delay": 0.1}})
    # 5 jobs go in 5 lanes; each lane waits Retry-After (2 s) before trying again,
    # so no 2-second window may see more than 5 attempts (10 if windows straddle).
    throttled = sorted(target.throttled_at)
    row.note = f"{len(throttled)} attempts answered 429; at most {max_per_window(throttled, 2.0)} in any 2 s (5 lanes)"
    return row


def max_per_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] < t - window + 1e-3:
            start += 1
        best = max(best, end - start + 1)
    return best


async def stalled_target(root: Path, procs: Processes, scale: Scale) -> Row:
    row, _ = await _target_fault(root, procs, scale, "stall",
                                 f"target accepts, never answers, for {scale.down_s:g}s",
                                 {"timeout": 2.0, "retry": {"attempts": 1000, "max_delay": 3.0, "initial_delay": 0.5}})
    row.note = "each attempt cut at the 2 s handler timeout, then retried"
    return row


async def disk_full(root: Path, procs: Processes, scale: Scale) -> Row:
    """The journal's filesystem fills up: ingest answers 503, then recovers when space returns."""
    mnt = root / "small"
    mnt.mkdir()
    row = Row("journal disk full (4 MiB tmpfs), then grown")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        row.note = f"skipped: cannot mount a small filesystem here ({mounted.stderr.strip()[:80]}); needs root"
        return row
    try:
        out = root / "audit.jsonl"  # the subscriber's file is elsewhere: only the journal runs out of space
        site = Site(root, procs, [{"name": "audit", "kind": "jsonl", "path": str(out)}], data_dir=mnt)
        site.start("serve")
        poster = Poster(site.url)
        events = [event(i, "disk", size=8000) for i in range(min(scale.events, 1500))]
        row.sent = len(events)
        full_at = 0.0
        async with aiohttp.ClientSession() as session:
            refused_in_a_row = posted = 0
            for ev in events[: len(events) // 2]:  # until the disk is plainly full
                status = await poster.post(session, ev, give_up_after=0.3)
                posted += 1
                refused_in_a_row = 0 if status == 202 else refused_in_a_row + 1
                if refused_in_a_row >= 10:
                    break
            full_at = time.monotonic()
            grown = subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], capture_output=True)
            assert grown.returncode == 0
            for ev in events[len(events) // 2:]:
                await poster.post(session, ev, give_up_after=30)
                posted += 1
        refused_503 = poster.refusals.get("503 (retried)", 0)
        await until(lambda: set(jsonl_ids(out)) >= poster.accepted, 120)
        row.recover_s = round(time.monotonic() - full_at, 2)
        finish(row, poster.accepted, jsonl_ids(out), poster)
        row.sent = posted
        row.refused = posted - len(poster.accepted)
        row.refusals = {"503 journal full (answers, retries included)": refused_503}
        row.note = "events answered 503 were not accepted; nothing accepted was lost"
        return row
    finally:
        procs.stop_all()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def signed_headers(secret: str, skew: float) -> Callable[[bytes], dict[str, str]]:
    key = base64.b64decode(secret[6:])

    def headers(body: bytes) -> dict[str, str]:
        msg_id, ts = f"msg-{time.monotonic_ns()}", str(int(time.time() + skew))
        sig = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{sig}"}

    return headers


async def clock_skew(root: Path, procs: Processes, scale: Scale) -> Row:
    """Signed (Standard Webhooks) requests from clients whose clocks are off."""
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    out = root / "audit.jsonl"
    site = Site(root, procs, [{"name": "audit", "kind": "jsonl", "path": str(out)}], http={"hmac_secrets": [secret]})
    site.start("serve")
    row = Row("HMAC clock skew: 0, +4 min, -10 min, +10 min")
    accepted: set[str] = set()
    refusals: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for skew in (0, 240, -600, 600):
            poster = Poster(site.url, signed_headers(secret, skew))
            for i in range(25):
                await poster.post(session, event(i, f"skew{skew}"))
            accepted |= poster.accepted
            refusals.update({f"{k} (skew {skew:+d}s)": v for k, v in poster.refusals.items()})
    row.sent = 100
    await until(lambda: set(jsonl_ids(out)) >= accepted, 30)
    finish(row, accepted, jsonl_ids(out))
    row.refusals = dict(refusals)
    row.refused = sum(refusals.values())
    row.note = "tolerance 300 s: skew within it accepted, beyond it 401"
    return row


SCENARIOS: dict[str, Callable[[Path, Processes, Scale], Awaitable[Row]]] = {
    "broker-kill": broker_kill,
    "subscriber-crash-loop": subscriber_crash_loop,
    "target-down": target_down,
    "target-429": target_429,
    "stalled-target": stalled_target,
    "disk-full": disk_full,
    "clock-skew": clock_skew,
}


def print_table(rows: list[Row]) -> None:
    head = f"{'scenario':<46} {'sent':>6} {'accepted':>8} {'refused':>7} {'delivered':>9} {'dupes':>6} {'lost':>5} {'recover_s':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        rec = "-" if r.recover_s is None else f"{r.recover_s:.2f}"
        print(f"{r.scenario:<46} {r.sent:>6} {r.accepted:>8} {r.refused:>7} {r.delivered:>9} {r.duplicates:>6} {r.lost:>5} {rec:>9}")
        for reason, n in r.refusals.items():
            print(f"{'':<4}refused {n} × {reason}")
        if r.note:
            print(f"{'':<4}{r.note}")


async def main_async(names: list[str], scale: Scale) -> list[Row]:
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"hookbus-chaos-{name}-") as tmp, Processes(Path(tmp)) as procs:
            started = time.monotonic()
            row = await SCENARIOS[name](Path(tmp), procs, scale)
            row.name = name
            print(f"# {name}: {time.monotonic() - started:.1f}s", file=sys.stderr)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="scaled-down scenarios (CI)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = asyncio.run(main_async(args.only or list(SCENARIOS), SHORT if args.short else FULL))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print_table(rows)
    return 1 if any(r.lost for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
