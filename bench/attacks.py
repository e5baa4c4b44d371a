"""Attacks against a real `hookbus serve`, with a table of what held.

    python -m bench.attacks                 # every attack
    python -m bench.attacks --only shell-injection idle-connections --json

Each attack starts its own `hookbus serve` on loopback ports in a temp dir,
tries what an attacker would (no credentials unless the row says so), and
prints: the attack, what was tried, whether it held, and the serve process's
resident memory before and after (MiB) where the attack is a flood. "Held"
means what DESIGN §13 promises: no code run, no answer without a credential,
no 5xx, nothing accepted lost, memory under the row's stated bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import zmq

from hookbus.bus.transport import protocol
from hookbus.bus.transport.credentials import apply_credential, load_credential

from ._common import HOST, Processes, bench_dir, hookbus_command
from .chaos import Site, signed_headers, until

CANARY = "/tmp/hookbus-attack-canary"


@dataclass
class Row:
    name: str
    tried: str
    held: bool = False
    note: str = ""
    rss_before_mib: float | None = None
    rss_after_mib: float | None = None
    bound_mib: float | None = None


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def statuses(site: Site, requests: list[tuple[str, str, dict[str, str], bytes]]) -> list[int]:
    """Send (method, path, headers, body) requests; return their status codes."""
    codes = []
    async with aiohttp.ClientSession() as session:
        for method, path, headers, body in requests:
            async with session.request(method, site.url + path, headers=headers, data=body) as answer:
                await answer.read()
                codes.append(answer.status)
    return codes


def nested(depth: int) -> str:
    """JSON text of objects nested `depth` deep (built as text: encoders refuse such depths)."""
    return '{"a":' * depth + '"x"' + "}" * depth


def event(i: int, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"attack-{i}", "source": "attack://bench", "type": "backup.log",
            "data": {"job_id": "attack", "message": "m", **data}}


# -- attacks ------------------------------------------------------------------------

async def shell_injection(root: Path, procs: Processes) -> Row:
    row = Row("shell-injection", "events whose subject and data break out of quotes, heredocs, options, into "
                                 "`shell` hooks with double quotes, a heredoc and a bare printf argument")
    out = root / "out"
    site = Site(root, procs, [
        {"name": "dq", "kind": "shell", "events": ["backup.log"], "command": f'echo "s={{{{ subject }}}}" >> {out}.dq'},
        {"name": "doc", "kind": "shell", "events": ["backup.log"],
         "command": f"cat >> {out}.doc <<EOF\n{{{{ data.message }}}}\nEOF"},
        {"name": "bare", "kind": "shell", "events": ["backup.log"],
         "command": f"printf '%s\\n' {{{{ data.message }}}} >> {out}.bare"}])
    site.start("serve")
    subjects = [f"Repo$(touch {CANARY})", f'x"; touch {CANARY}; echo "', f"`touch {CANARY}`", "--output=/tmp/x",
                f"'; touch {CANARY}; '"]
    messages = [*subjects, f"EOF\ntouch {CANARY}\n$(touch {CANARY})"]
    Path(CANARY).unlink(missing_ok=True)
    bodies = [json.dumps({**event(i, message=m), "subject": subjects[i % len(subjects)]}).encode()
              for i, m in enumerate(messages)]
    await statuses(site, [("POST", "/events", {"Content-Type": "application/json"}, b) for b in bodies])
    want = {"dq": "".join(f"s={subjects[i % len(subjects)]}\n" for i in range(len(messages))),
            "doc": "".join(f"{m}\n" for m in messages), "bare": "".join(f"{m}\n" for m in messages)}
    files = {k: Path(f"{out}.{k}") for k in want}
    await until(lambda: all(f.exists() and len(f.read_text()) >= len(want[k]) for k, f in files.items()), 20)
    exact = all(f.exists() and f.read_text() == want[k] for k, f in files.items())
    row.held = not Path(CANARY).exists() and exact
    row.note = ("the canary file was created" if Path(CANARY).exists()
                else "every value arrived as text" if exact else "a hook's output differs from the values sent")
    return row


async def unsafe_templates(root: Path, procs: Processes) -> Row:
    row = Row("unsafe-templates", "check-config on templates that put a value at an argument's start, in single "
                                  "quotes, in backticks, in `bash -c`, in a #!python script")
    bad = ["git log -1 {{ subject }}", "echo '{{ subject }}'", "echo `echo {{ subject }}`",
           'bash -c "echo x{{ subject }}"', '#!/usr/bin/env python3\nprint("{{ subject }}")']
    refused = 0
    for i, command in enumerate(bad):
        (root / f"t{i}").mkdir()
        site = Site(root / f"t{i}", procs, [{"name": "hook", "kind": "shell", "command": command}])
        done = subprocess.run([*hookbus_command(), "check-config", "--config", str(site.config)], capture_output=True,
                              text=True, timeout=60, check=False)
        refused += done.returncode == 2 and "(hook).command" in done.stderr
    row.held = refused == len(bad)
    row.note = f"{refused} of {len(bad)} refused, naming the key"
    return row


async def deep_json(root: Path, procs: Processes) -> Row:
    row = Row("deep-json", "JSON nested 300 and 1,000 deep: structured, batch, binary, /ingest/restic")
    site = Site(root, procs, [])
    site.start("serve")
    requests = []
    for depth in (300, 1000):
        body = json.dumps(event(depth, deep="DEEP")).replace('"DEEP"', nested(depth)).encode()
        requests += [
            ("POST", "/events", {"Content-Type": "application/cloudevents+json"}, body),
            ("POST", "/events", {"Content-Type": "application/cloudevents-batch+json"}, b"[" + body + b"]"),
            ("POST", "/events", {"ce-specversion": "1.0", "ce-id": f"b{depth}", "ce-source": "a://b",
                                 "ce-type": "backup.log", "Content-Type": "application/json"}, nested(depth).encode()),
            ("POST", "/ingest/restic", {"Content-Type": "application/json"}, nested(depth).encode()),
        ]
    codes = await statuses(site, requests)
    row.held = all(400 <= c < 500 for c in codes)
    row.note = "answers " + ", ".join(str(c) for c in sorted(set(codes)))
    return row


async def ping_exit_status(root: Path, procs: Processes) -> Row:
    row = Row("ping-exit-status", "/ping/<key>/² /① /𝟘 /１ (digits that are not ASCII)")
    site = Site(root, procs, [])
    site.config.write_text(site.config.read_text() + '\n[[checks]]\nkey = "k-1"\njob = "nightly"\n')
    site.start("serve")
    codes = await statuses(site, [("POST", f"/ping/k-1/{s}", {}, b"") for s in ("²", "①", "𝟘", "１")])
    row.held = all(400 <= c < 500 for c in codes)
    row.note = "answers " + ", ".join(str(c) for c in codes)
    return row


async def hmac_attacks(root: Path, procs: Processes) -> Row:
    row = Row("hmac", "a 400-digit webhook-timestamp; a signed GET /api/events; one signed netcfgbu report sent twice")
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    site = Site(root, procs, [], http={"hmac_secrets": [secret], "tokens": ["reader-token-1"]})
    site.start("serve")
    sign = signed_headers(secret, 0)
    body = json.dumps(event(1)).encode()
    report = json.dumps({"hook": "git_report", "job_id": "j", "success": True, "tag_name": "t"}).encode()
    post = {**sign(report), "Content-Type": "application/json"}  # netcfgbu reports carry no id: each is a new event
    codes = await statuses(site, [
        ("POST", "/events", {**sign(body), "webhook-timestamp": "9" * 400, "Content-Type": "application/json"}, body),
        ("GET", "/api/events", sign(b""), b""),
        ("POST", "/ingest/netcfgbu", post, report),
        ("POST", "/ingest/netcfgbu", post, report),
    ])
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer reader-token-1"}) as session, \
            session.get(site.url + "/api/events?limit=10") as answer:
        stored = len((await answer.json())["events"])
    row.held = codes[:2] == [401, 401] and codes[2] == 202 and codes[3] < 500 and stored == 1
    row.note = f"answers {', '.join(str(c) for c in codes)}; the repeat handled once ({stored} event stored)"
    return row


async def idle_connections(root: Path, procs: Processes) -> Row:
    row = Row("idle-connections", "1,100 idle TCP connections to the HTTP port of a serve under `ulimit -n 1024`, "
                                  "then POST /events and `hookbus emit`", bound_mib=64)
    site = Site(root, procs, [])
    limited = [*hookbus_command(), "serve", "--config", str(site.config)]
    proc = procs.start("serve-limited", ["prlimit", "--nofile=1024:1024", "--", *limited])
    await until(lambda: _listening(site.http_port), 20)
    before = rss_mib(proc.pid)
    idle = []
    for _ in range(1100):
        try:
            idle.append(socket.create_connection((HOST, site.http_port), timeout=2))
        except OSError:
            break
    try:
        started = time.monotonic()
        ok = False
        while time.monotonic() - started < 20 and not ok:
            try:
                ok = (await asyncio.wait_for(statuses(site, [("POST", "/events", {"Content-Type": "application/json"},
                                                              json.dumps(event(1)).encode())]), 5))[0] == 202
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.5)
        emit = subprocess.run([*hookbus_command(), "emit", "backup.log", "--data", '{"job_id": "x"}', "--config",
                               str(site.config)], capture_output=True, timeout=60, check=False)
        row.rss_before_mib, row.rss_after_mib = before, rss_mib(proc.pid)
        row.held = ok and emit.returncode == 0 and row.rss_after_mib - before < (row.bound_mib or 0)
        row.note = (f"{len(idle)} connections opened; POST {'202' if ok else 'failed'} after "
                    f"{time.monotonic() - started:.1f} s; emit exit {emit.returncode}")
    finally:
        for s in idle:
            s.close()
    return row


async def secrets_in_events(root: Path, procs: Processes) -> Row:
    row = Row("secrets-in-events", "POST /ingest/netcfgbu with ssh_pass, authpass, login user:pass, a URL with "
                                   "user:pass and a password= in error text; then GET /api/events")
    site = Site(root, procs, [])
    site.start("serve")
    record = {"host": "sw1", "ssh_pass": "pw-aaa111", "authpass": "pw-bbb222", "login": "admin:pw-ccc333",
              "mgmt": "ssh://admin:pw-ddd444@sw1"}
    body = json.dumps({"hook": "backup_failed", "job_id": "r1", "record": record,
                       "result": "login failed: password=pw-eee555"}).encode()
    await statuses(site, [("POST", "/ingest/netcfgbu", {"Content-Type": "application/json"}, body)])
    async with aiohttp.ClientSession() as session, session.get(site.url + "/api/events?limit=10") as answer:
        text = await answer.text()
    leaked = [s for s in ("pw-aaa111", "pw-bbb222", "pw-ccc333", "pw-ddd444", "pw-eee555") if s in text]
    row.held = not leaked and '"sw1"' in text
    row.note = f"leaked: {', '.join(leaked)}" if leaked else "no secret in the journal; the device kept its host"
    return row


async def file_modes(root: Path, procs: Processes) -> Row:
    row = Row("file-modes", "what others on the host can read of data_dir after one event")
    site = Site(root, procs, [{"name": "audit", "kind": "jsonl", "path": str(root / "var" / "events.jsonl")}])
    site.start("serve")
    await statuses(site, [("POST", "/events", {"Content-Type": "application/json"}, json.dumps(event(1)).encode())])
    await until(lambda: (root / "var" / "events.jsonl").exists(), 10)
    open_to_others = [str(p.relative_to(root)) for p in [root / "var", *(root / "var").rglob("*")]
                      if p.stat().st_mode & 0o077]
    row.held = not open_to_others
    row.note = f"readable by others: {', '.join(open_to_others)}" if open_to_others else "owner-only, every file"
    return row


async def corrupt_journal(root: Path, procs: Processes) -> Row:
    row = Row("corrupt-journal", "random bytes over the middle of journal.db, then GET /api/events and /api/jobs")
    site = Site(root, procs, [])
    proc = site.start("serve")
    batches = [json.dumps([event(i, message="m" * 2000) for i in range(start, start + 200)]).encode()
               for start in range(0, 2000, 200)]
    accepted = await statuses(site, [("POST", "/events", {"Content-Type": "application/cloudevents-batch+json"}, b)
                                     for b in batches])
    assert accepted == [202] * len(batches), accepted
    procs.stop(proc)
    db = root / "var" / "journal.db"
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek(size // 4)
        f.write(bytes(random.getrandbits(8) for _ in range(size // 4)))
    site.start("serve")
    codes = await statuses(site, [("GET", "/api/events?limit=1000", {}, b""), ("GET", "/api/jobs", {}, b"")])
    row.held = all(c < 500 or c == 503 for c in codes) and 503 in codes
    row.note = "answers " + ", ".join(str(c) for c in codes) + " (503: the journal cannot be read, in JSON)"
    return row


# -- ZeroMQ --------------------------------------------------------------------------------

def _dealer(ctx: zmq.Context[Any], endpoint: str, role: str | None, root: Path) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndtimeo = 2000  # a DEALER with no peer (a refused handshake) blocks on send
    if role is not None:
        apply_credential(sock, load_credential(root / "var" / "keys" / f"{role}.credential"))
    sock.connect(endpoint)
    return sock


def _ask(sock: zmq.Socket[Any], command: bytes, payload: dict[str, Any], wait_ms: int = 1500) -> list[bytes] | None:
    try:
        sock.send_multipart([command, b"r1", json.dumps(payload).encode()])
    except zmq.Again:
        return None  # not even connected: the handshake was refused
    return sock.recv_multipart() if sock.poll(wait_ms) else None


async def zmq_no_credential(root: Path, procs: Processes) -> Row:
    row = Row("zmq-no-credential", "a plain DEALER on the control port sends PUB, FETCH, STATUS, ACK (cursor 10^6), "
                                   "RETRY (next_at inf), DEAD, REPLAY; a plain SUB on the publish port")
    site = Site(root, procs, [])
    site.start("serve")
    ctx = zmq.Context()
    try:
        sock = _dealer(ctx, site.control, None, root)
        tries = [(protocol.PUB, {}), (protocol.FETCH, {"after": 0, "limit": 10}), (protocol.STATUS, {}),
                 (protocol.ACK, {"name": "audit", "cursor": 1_000_000, "epoch": 0}),
                 (protocol.RETRY, {"name": "audit", "seq": 1, "attempts": 1, "next_at": "inf", "error": "x"}),
                 (protocol.DEAD, {"name": "audit", "seq": 1, "attempts": 1, "error": "forged"}),
                 (protocol.REPLAY, {"subscriber": "audit", "from_seq": 1})]
        answers = [await asyncio.to_thread(_ask, sock, c, p) for c, p in tries]
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.subscribe(b"")
        sub.connect(site.publish)
        await statuses(site, [("POST", "/events", {"Content-Type": "application/json"}, json.dumps(event(1)).encode())])
        heard = sub.poll(1500)
        row.held = all(a is None for a in answers) and not heard
        row.note = f"{sum(a is not None for a in answers)} of {len(tries)} answered; the SUB heard " + \
                   ("something" if heard else "nothing")
    finally:
        ctx.destroy(linger=0)
    return row


async def zmq_impostor(root: Path, procs: Processes) -> Row:
    row = Row("zmq-impostor", "the broker down, a ROUTER of another process binds its control port and answers "
                              "every request with a seq; then `hookbus emit`")
    site = Site(root, procs, [])
    proc = site.start("serve")  # sets up the keys, as on any installed host
    procs.stop(proc)
    ctx = zmq.Context()
    stop = asyncio.Event()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(site.control)

    def answer() -> None:
        while not stop.is_set():
            if router.poll(100):
                ident, _, req, *_ = router.recv_multipart()
                router.send_multipart([ident, protocol.OK, req, b'[{"id": "x", "seq": 424242, "duplicate": false}]'])

    task = asyncio.create_task(asyncio.to_thread(answer))
    try:
        emit = await asyncio.to_thread(subprocess.run, [*hookbus_command(), "emit", "backup.log", "--data",
                                                        '{"job_id": "x"}', "--timeout", "5", "--config",
                                                        str(site.config)], capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
        await task
        ctx.destroy(linger=0)
    row.held = emit.returncode != 0 and "424242" not in emit.stdout
    row.note = f"emit exit {emit.returncode}; " + ("printed the impostor's seq" if "424242" in emit.stdout
                                                   else "the impostor's answer was never believed")
    return row


async def zmq_floods(root: Path, procs: Processes) -> Row:
    row = Row("zmq-floods", "a journal of 2,000 events of 100 KB; then, with the operate credential, a 64 MiB frame, "
                            "20 DEALERs x 2,000 unread FETCH requests and an idle SUB while 400 more such events "
                            "come in; /healthz meanwhile (RSS from after the journal was filled)",
              bound_mib=20 * 16 + 64)  # the broker's stated bound: 16 MiB of queued replies per unread connection
    site = Site(root, procs, [])
    proc = site.start("serve")
    payload = "y" * 100_000

    async def post_events(first: int, count: int) -> None:
        for start in range(first, first + count, 8):
            batch = json.dumps([event(i, output_tail=payload) for i in range(start, start + 8)]).encode()
            await statuses(site, [("POST", "/events", {"Content-Type": "application/cloudevents-batch+json"}, batch)])

    await post_events(0, 2000)
    before = rss_mib(proc.pid)
    ctx = zmq.Context()
    try:
        big = _dealer(ctx, site.control, "operate", root)
        with contextlib.suppress(zmq.Again):
            big.send_multipart([protocol.PUB, b"r1", b"{}", b"x" * (64 << 20)])
        flooders = [_dealer(ctx, site.control, "operate", root) for _ in range(20)]
        sent = 0
        for sock in flooders:
            for i in range(2000):
                try:
                    sock.send_multipart([protocol.FETCH, str(i).encode(), b'{"after": 0, "limit": 500}'],
                                        flags=zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    break  # the broker takes no more from this sender: the flood slows its sender
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        apply_credential(sub, load_credential(root / "var" / "keys" / "operate.credential"))
        sub.subscribe(b"")
        sub.connect(site.publish)
        started = time.monotonic()
        health = await statuses(site, [("GET", "/healthz", {}, b"")])
        healthz_s = time.monotonic() - started
        await post_events(2000, 400)
        await asyncio.sleep(2)
        peak = rss_mib(proc.pid)
        row.rss_before_mib, row.rss_after_mib = before, peak
        row.held = health == [200] and healthz_s < 5 and peak - before < (row.bound_mib or 0)
        row.note = (f"{sent} FETCH requests taken before the senders had to wait; /healthz {health[0]} in "
                    f"{healthz_s:.2f} s during the flood; RSS +{peak - before:.0f} MiB")
    finally:
        ctx.destroy(linger=0)
    return row


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


ATTACKS: dict[str, Callable[[Path, Processes], Awaitable[Row]]] = {
    "shell-injection": shell_injection,
    "unsafe-templates": unsafe_templates,
    "deep-json": deep_json,
    "ping-exit-status": ping_exit_status,
    "hmac": hmac_attacks,
    "idle-connections": idle_connections,
    "secrets-in-events": secrets_in_events,
    "file-modes": file_modes,
    "corrupt-journal": corrupt_journal,
    "zmq-no-credential": zmq_no_credential,
    "zmq-impostor": zmq_impostor,
    "zmq-floods": zmq_floods,
}


def print_table(rows: list[Row]) -> None:
    print(f"{'attack':<20} {'held':<5} {'RSS MiB (before → after, bound)':<32} what was tried / what happened")
    for r in rows:
        rss = (f"{r.rss_before_mib:.0f} → {r.rss_after_mib:.0f} (< +{r.bound_mib:.0f})"
               if r.rss_before_mib is not None and r.rss_after_mib is not None else "")
        print(f"{r.name:<20} {'yes' if r.held else 'NO':<5} {rss:<32} {r.tried}\n{'':<59} → {r.note}")


async def main_async(names: list[str]) -> list[Row]:
    rows = []
    with bench_dir("hookbus-attacks-", keep=False) as root:
        for name in names:
            folder = root / name
            folder.mkdir()
            with Processes(folder) as procs:
                try:
                    rows.append(await ATTACKS[name](folder, procs))
                except Exception as exc:  # a broken attack is a row that did not hold, not a crashed table
                    rows.append(Row(name, "", held=False, note=f"{type(exc).__name__}: {exc}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(ATTACKS), help="run only these attacks")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # our 1,100 idle sockets
    rows = asyncio.run(main_async(args.only or list(ATTACKS)))
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else "", end="")
    if not args.json:
        print_table(rows)
    return 0 if all(r.held for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
