"""Paced HTTP load for bench.latency, run as its own process.

Sends CloudEvents by POST at a fixed rate (open loop: a request is started on
schedule whether or not earlier ones were answered). Each event carries
`data.sent_ns` (time.time_ns() just before the request is written) and
`data.phase` ("warm" for the warm-up, "measure" after). Prints one line
`LOADGEN {json}` with what was sent and how the 202s came back.

    python -m bench._loadgen --url http://127.0.0.1:P/events --rate 1000 --duration 15 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import aiohttp
import orjson

from ._common import HOST, event_dict, percentile


async def run(args: argparse.Namespace) -> dict[str, Any]:
    template = event_dict(args.run, 0, args.size, args.jobs, sent_ns=10**18, phase="measure")
    headers = {"Content-Type": "application/cloudevents+json"}
    warm_n = int(args.warmup * args.rate)
    total = warm_n + int(args.duration * args.rate)
    answers: list[float] = []
    statuses: dict[str, int] = {}
    lags: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(i: int, scheduled: float) -> None:
            lags.append(time.perf_counter() - scheduled)
            data = {**template["data"], "job_id": f"job-{i % args.jobs}", "phase": "warm" if i < warm_n else "measure",
                    "seq_sent": i, "sent_ns": time.time_ns()}
            body = orjson.dumps({**template, "id": f"{args.run}-{i}", "data": data})
            t = time.perf_counter()
            try:
                async with session.post(args.url, data=body, headers=headers) as resp:
                    await resp.read()
                    key = str(resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                key = type(exc).__name__
            if i >= warm_n:
                answers.append(time.perf_counter() - t)
                statuses[key] = statuses.get(key, 0) + 1

        t0 = time.perf_counter()
        i = 0
        while i < total:
            due = min(total, int((time.perf_counter() - t0) * args.rate) + 1)
            while i < due:
                task = asyncio.create_task(post(i, t0 + i / args.rate))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            await asyncio.sleep(max(0.0, t0 + i / args.rate - time.perf_counter()))
        sending = time.perf_counter() - t0
        if pending:
            await asyncio.wait(set(pending), timeout=30)
    answers.sort()
    lags.sort()
    return {
        "warm": warm_n, "measured": total - warm_n, "seconds": sending,
        "statuses": statuses, "answered_202": statuses.get("202", 0),
        "resp_p50_ms": percentile(answers, 50) * 1e3, "resp_p99_ms": percentile(answers, 99) * 1e3,
        "resp_max_ms": (answers[-1] if answers else float("nan")) * 1e3,
        "lag_p99_ms": percentile(lags, 99) * 1e3, "lag_max_ms": (lags[-1] if lags else float("nan")) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--run", default=f"lat{os.getpid()}")
    args = parser.parse_args()
    if not args.url.startswith(f"http://{HOST}:"):
        parser.error(f"--url must be an http://{HOST}:PORT URL")
    result = asyncio.run(run(args))
    print("LOADGEN " + orjson.dumps(result).decode(), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
