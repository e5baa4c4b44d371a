"""Sustained load: a steady rate of events over HTTP to `hookbus serve` with
three subscribers, watching memory, journal size and latency.

    python -m bench.soak                          # 1,000 events/s for 10 minutes
    python -m bench.soak --rate 500 --duration 60

Subscribers: `audit` (jsonl, every event), `hook` (webhook to a local
receiver in this process, which measures POST-to-delivery latency), and
`failures` (jsonl, only outcome=failed, a tenth of the events). Retention is
short (`--retention` seconds) so that pruning runs during the soak. Every
`--every` seconds it prints: events sent, delivered at the webhook, the serve
process's RSS, the journal's size on disk (db + WAL), and latency p50/p99 over
the interval. At the end: RSS growth after warm-up, journal size range,
overall p50/p99/max. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ._common import HOST, Processes, free_ports, hookbus_command, percentile, wait_port, write_config


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def journal_mib(data_dir: Path) -> float:
    return sum(p.stat().st_size for p in data_dir.glob("journal.db*")) / 2**20


class Receiver:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.delivered = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.latencies_ms.append((time.time_ns() - body["data"]["sent_ns"]) / 1e6)
        self.delivered += 1
        return web.Response(text="ok")


async def run(rate: int, duration: float, every: float, retention_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hookbus-soak-") as tmp, Processes(Path(tmp)) as procs:
        root = Path(tmp)
        receiver = Receiver()
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        recv_port, http_port, control, publish = free_ports(4)
        await web.TCPSite(runner, HOST, recv_port).start()
        data_dir = root / "var"
        config = write_config(
            root / "hookbus.toml", data_dir=data_dir, control_port=control, publish_port=publish, http_port=http_port,
            bus={"retention_days": retention_s / 86400},
            subscribers=[
                {"name": "audit", "kind": "jsonl", "path": str(root / "audit.jsonl")},
                {"name": "hook", "kind": "webhook", "url": f"http://{HOST}:{recv_port}/hook"},
                {"name": "failures", "kind": "jsonl", "events": ["backup.job.finished"],
                 "when": {"outcome": ["failed"]}, "path": str(root / "failures.jsonl")},
            ])
        serve = procs.start("serve", [*hookbus_command(), "serve", "--config", str(config), "--log-level", "WARNING"])
        wait_port(http_port, serve, procs, "hookbus serve")
        url = f"http://{HOST}:{http_port}/events"
        sent = 0
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        print(f"{'t_s':>6} {'sent':>8} {'delivered':>9} {'rss_MiB':>8} {'journal_MiB':>11} {'p50_ms':>7} {'p99_ms':>7}")

        async def produce(session: aiohttp.ClientSession) -> None:
            nonlocal sent
            interval = 1.0 / rate
            next_at = time.monotonic()
            pending: set[asyncio.Task[Any]] = set()
            while time.monotonic() - started < duration:
                i = sent
                sent += 1
                ev = {"specversion": "1.0", "id": f"soak-{i}", "source": "bench://soak", "type": "backup.job.finished",
                      "data": {"job_id": f"job-{i % 50}", "outcome": "failed" if i % 10 == 0 else "success",
                               "sent_ns": time.time_ns()}}
                task = asyncio.create_task(session.post(url, json=ev))
                pending.add(task)
                task.add_done_callback(lambda t: (pending.discard(t), t.result().release() if not t.exception() else None))
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.gather(*pending, return_exceptions=True)

        async def watch() -> None:
            seen = 0
            while time.monotonic() - started < duration + every:
                await asyncio.sleep(every)
                window = sorted(receiver.latencies_ms[seen:])
                seen = len(receiver.latencies_ms)
                sample = {"t_s": round(time.monotonic() - started), "sent": sent, "delivered": receiver.delivered,
                          "rss_mib": round(rss_mib(serve.pid), 1), "journal_mib": round(journal_mib(data_dir), 1),
                          "p50_ms": round(percentile(window, 50), 2), "p99_ms": round(percentile(window, 99), 2)}
                samples.append(sample)
                print(" ".join(f"{sample[k]:>{w}}" for k, w in (("t_s", 6), ("sent", 8), ("delivered", 9), ("rss_mib", 8),
                                                                 ("journal_mib", 11), ("p50_ms", 7), ("p99_ms", 7))), flush=True)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
            await asyncio.gather(produce(session), watch())
        deadline = time.monotonic() + 60
        while receiver.delivered < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await runner.cleanup()
        warm = [s for s in samples if s["t_s"] >= min(60, duration / 4)] or samples
        lat = sorted(receiver.latencies_ms)
        return {
            "rate": rate, "duration_s": duration, "sent": sent, "delivered": receiver.delivered,
            "rss_mib_after_warmup": [warm[0]["rss_mib"], warm[-1]["rss_mib"]],
            "rss_growth_after_warmup_mib": round(warm[-1]["rss_mib"] - warm[0]["rss_mib"], 1),
            "journal_mib_min_max_after_warmup": [min(s["journal_mib"] for s in warm), max(s["journal_mib"] for s in warm)],
            "latency_ms": {"p50": round(percentile(lat, 50), 2), "p99": round(percentile(lat, 99), 2),
                           "max": round(max(lat, default=0), 2)},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="events per second (default 1000)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--retention", type=float, default=60.0, help="journal retention in seconds (default 60)")
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args.rate, args.duration, args.every, args.retention))
    print(json.dumps(summary, indent=2))
    return 0 if summary["delivered"] >= summary["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
