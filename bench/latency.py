"""Latency benchmark: HTTP POST → subscriber handler, at a fixed rate.

A paced load generator (its own process, `bench._loadgen`) POSTs CloudEvents at
--rate per second for --duration seconds (after a --warmup that is not
counted), each stamped with `data.sent_ns = time.time_ns()` just before it is
sent. A receiver in this process gets every event POSTed on to it and records
`time.time_ns() - sent_ns` (one host, one clock).

hookbus: `hookbus serve` (its own process, temp config, synchronous=FULL) with
one `webhook` subscriber whose url is the receiver: POST /events → journal
commit → 202, and XPUB → SubscriberRunner → webhook POST → receiver.
Baseline: an aiohttp server (its own process, `bench._baseline forward`) that
parses the event with orjson, answers 202 and POSTs it on to the same receiver
(no journal, no bus): the minimum a webhook relay does.

Prints p50/p99/p99.9/max of both; goal: hookbus p99 < 10 ms.

    python -m bench.latency [--rate 1000] [--duration 15] [--warmup 2] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from ._common import (
    HOST,
    CpuWindow,
    Processes,
    add_quiet_options,
    banner,
    bench_dir,
    describe_cpu,
    free_ports,
    hookbus_command,
    percentile,
    quietest,
    run_main,
    until_quiet,
    wait_port,
    write_config,
)


class Receiver:
    """The end of the line: records how long each measured event took to get here."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.latencies_ns: list[int] = []
        self.ids: set[str] = set()
        self.duplicates = 0
        self.warm = 0
        self.changed = asyncio.Event()

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time_ns()
        obj = orjson.loads(body)
        data = obj["data"]
        if data.get("phase") != "measure":
            self.warm += 1
        elif obj["id"] in self.ids:
            self.duplicates += 1
        else:
            self.ids.add(obj["id"])
            self.latencies_ns.append(now - int(data["sent_ns"]))
        self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ids) < count and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break


async def one_side(name: str, argv: list[str], port: int, args: argparse.Namespace, procs: Processes,
                   receiver: Receiver) -> dict[str, Any]:
    receiver.reset()
    server = procs.start(name, argv)
    await asyncio.to_thread(wait_port, port, server, procs, name)
    loadgen = procs.start(f"{name}-loadgen", [
        sys.executable, "-m", "bench._loadgen", "--url", f"http://{HOST}:{port}/events", "--rate", str(args.rate),
        "--duration", str(args.duration), "--warmup", str(args.warmup), "--size", str(args.size),
        "--jobs", str(args.jobs), "--run", f"{name}-{os.getpid()}"], stdout_pipe=True)
    window = CpuWindow({"server": server.pid, "loadgen": loadgen.pid})
    limit = args.warmup + args.duration + 60
    try:
        await asyncio.to_thread(loadgen.wait, limit)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{name}: the load generator did not finish within {limit:.0f} s") from None
    assert loadgen.stdout is not None
    out = loadgen.stdout.read().decode()
    match = re.search(r"^LOADGEN (\{.*\})$", out, re.MULTILINE)
    if loadgen.returncode != 0 or match is None:
        raise RuntimeError(f"{name}: load generator failed ({loadgen.returncode}):\n{out}\n{procs.log_tail(loadgen)}")
    sent = orjson.loads(match.group(1))
    await receiver.wait_for(sent["measured"], 15)
    cpu = window.stop()
    procs.check_alive(server, name)
    procs.stop(server)
    lat = sorted(v / 1e6 for v in receiver.latencies_ns)
    return {
        "sent": sent, "received": len(lat), "missing": sent["measured"] - len(lat), "duplicates": receiver.duplicates,
        "p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
        "p999": percentile(lat, 99.9), "max": lat[-1] if lat else float("nan"), "cpu": cpu,
    }


def report(name: str, r: dict[str, Any]) -> None:
    s = r["sent"]
    print(f"{name:>8}: POST→handler latency p50 {r['p50']:.2f} ms  p90 {r['p90']:.2f} ms  p99 {r['p99']:.2f} ms  "
          f"p99.9 {r['p999']:.2f} ms  max {r['max']:.2f} ms", flush=True)
    print(f"          {s['measured']} measured (+{s['warm']} warm-up) sent at {(s['measured'] + s['warm']) / max(s['seconds'], 1e-9):.0f}/s, "
          f"answers {s['statuses']}, 202 round trip p50 {s['resp_p50_ms']:.2f} ms p99 {s['resp_p99_ms']:.2f} ms; "
          f"received {r['received']}, missing {r['missing']}, duplicates {r['duplicates']}; "
          f"sender lag p99 {s['lag_p99_ms']:.2f} ms max {s['lag_max_ms']:.2f} ms", flush=True)
    print(f"          {describe_cpu(r['cpu'])}  [bench = receiver + load generator]", flush=True)


async def run(args: argparse.Namespace, tmp: Path) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    recv_port = free_ports(1)[0]
    await web.TCPSite(runner, HOST, recv_port, backlog=1024).start()
    hook_url = f"http://{HOST}:{recv_port}/hook"
    try:
        with Processes(tmp) as procs:
            banner("baseline: aiohttp POST /events → orjson.loads → 202, then POST on to the receiver")
            runs = []
            for _attempt in until_quiet(args, runs):
                port = free_ports(1)[0]
                r = await one_side("baseline", [sys.executable, "-m", "bench._baseline", "forward", "--port", str(port),
                                                "--to", hook_url], port, args, procs, receiver)
                report("baseline", r)
                runs.append(r)
            base = quietest(runs)

            banner("hookbus serve: POST /events → journal (fsync) → 202; XPUB → webhook subscriber → receiver")
            runs = []
            for attempt in until_quiet(args, runs):
                work = tmp / f"run{attempt}"
                work.mkdir()
                http_port, control_port, publish_port = free_ports(3)
                config = write_config(work / "hookbus.toml", data_dir=work / "var", control_port=control_port,
                                      publish_port=publish_port, http_port=http_port,
                                      subscribers=[{"name": "relay", "kind": "webhook", "url": hook_url,
                                                    "events": ["backup.*"]}],
                                      bus={"synchronous": args.synchronous})
                r = await one_side("hookbus", [*hookbus_command(), "serve", "--config", str(config), "--log-level",
                                               "WARNING"], http_port, args, procs, receiver)
                report("hookbus", r)
                runs.append(r)
            hook = quietest(runs)
    finally:
        await runner.cleanup()
    for name, r in (("baseline", base), ("hookbus", hook)):
        if r["missing"] or r["sent"]["answered_202"] != r["sent"]["measured"]:
            print(f"WARNING: {name}: {r['missing']} events never reached the receiver, "
                  f"{r['sent']['measured'] - r['sent']['answered_202']} POSTs not answered 202", flush=True)
    banner("result")
    print(f"at {args.rate:g} events/s: baseline p50 {base['p50']:.2f} / p99 {base['p99']:.2f} / max {base['max']:.2f} ms   "
          f"hookbus p50 {hook['p50']:.2f} / p99 {hook['p99']:.2f} / max {hook['max']:.2f} ms   "
          f"(goal hookbus p99 < 10 ms: {'met' if hook['p99'] < 10 else 'MISSED'})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second (default 1000)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per side (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per side, not counted (default 2)")
    parser.add_argument("--size", type=int, default=512, help="event JSON size in bytes (default 512)")
    parser.add_argument("--jobs", type=int, default=64, help="distinct data.job_id values (default 64)")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="[bus] synchronous (default FULL)")
    add_quiet_options(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs, journal)")
    args = parser.parse_args()
    if not 1 <= args.rate <= 20_000 or not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--rate in [1, 20000], --duration in (0, 600], --warmup in [0, 60]")
    print(f"latency: {args.rate:g} events/s for {args.duration:g} s (+{args.warmup:g} s warm-up), event ~{args.size} B, "
          f"synchronous={args.synchronous}, {os.cpu_count()} CPUs", flush=True)
    with bench_dir("hookbus-bench-latency-", args.keep) as tmp:
        asyncio.run(run(args, tmp))


if __name__ == "__main__":
    run_main(main)
