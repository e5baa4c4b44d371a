"""Ingest CPU benchmark: the cost of one HTTP POST of a CloudEvent inside the
server process, without sockets, wrk or the kernel.

Each side runs in a process of its own and is fed raw HTTP/1.1 requests
through aiohttp's own request handler on in-memory transports, --connections
requests in flight (like wrk's connections: a new request on a connection as
soon as its answer is written). It prints microseconds per request of wall
time, of the process's CPU and of the event loop thread's CPU.

- baseline: the plain aiohttp handler of `bench._baseline ingest`.
- hookbus: `hookbus serve`'s HTTP app with its broker and journal (temp dir,
  synchronous=FULL): POST /events → durable → 202.

What wrk measures on this 2-core machine moves by a fifth within minutes.
Here the baseline stays within a few percent and hookbus within ~15 % (its
fsyncs and writer thread), so interleaved runs can tell a change of a few
microseconds per request. It leaves out what both sides pay alike (the
kernel's socket work, the load generator's share of the cores), so its ratio
is lower than `bench.ingest`'s.

    python -m bench.ingest_cpu [--rounds 3] [--requests 60000] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import add_round_options, banner, event_body, free_ports, print_rounds, run_main

if TYPE_CHECKING:
    from aiohttp import web

WARM = 2000


class _Transport(asyncio.Transport):
    """Takes what aiohttp writes; calls `answered` once per response. The server
    closing a connection before the run is over is an error, as is an error answer."""

    def __init__(self, answered: Any, finished: asyncio.Event) -> None:
        super().__init__()
        self.answered = answered
        self.finished = finished
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = bytes(data[:12])
        if head.startswith(b"HTTP/1.1 "):
            if not head.startswith(b"HTTP/1.1 2"):
                raise SystemExit(f"bench.ingest_cpu: the server answered {bytes(data[:200])!r}")
            self.answered(self)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.finished.is_set():
            raise SystemExit("bench.ingest_cpu: the server closed a connection without answering")
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8765)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def _request(i: int) -> bytes:
    body = event_body("cpu", i, 512)
    return (b"POST /events HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nContent-Type: application/cloudevents+json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


async def _hookbus_app(tmp: Path) -> web.Application:
    from hookbus.app import create_app, tune_gc
    from hookbus.bus.store.journal import Journal
    from hookbus.bus.transport.broker import Broker
    from hookbus.config import build_config

    control, publish = free_ports(2)
    config = build_config({"bus": {"data_dir": str(tmp / "var"), "control": f"tcp://127.0.0.1:{control}",
                                   "publish": f"tcp://127.0.0.1:{publish}"}}, "bench")
    tune_gc()  # as `hookbus serve` does before it starts the broker (the baseline keeps Python's defaults)
    broker = Broker(config, Journal(config.bus.data_dir / "journal.db", synchronous="FULL"))
    await broker.start()
    return create_app(config, broker)


async def _measure(side: str, requests: int, connections: int) -> dict[str, float]:
    from aiohttp import web

    from . import _baseline

    with tempfile.TemporaryDirectory(prefix="hookbus-bench-cpu-") as tmp:
        app = _baseline.ingest_app() if side == "baseline" else await _hookbus_app(Path(tmp))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        pending = iter([_request(i) for i in range(WARM + requests)])
        left = WARM + requests
        done = asyncio.Event()
        marks: dict[str, float] = {}

        def answered(transport: _Transport) -> None:
            nonlocal left
            left -= 1
            if left == requests:  # warm-up over: the clock starts
                marks.update(wall=time.perf_counter(), cpu=time.process_time(), thread=time.thread_time())
            if left == 0:
                done.set()
            nxt = next(pending, None)
            if nxt is not None:
                loop.call_soon(transport.protocol.data_received, nxt)  # type: ignore[attr-defined]

        for _ in range(connections):
            protocol = runner.server()
            transport = _Transport(answered, done)
            transport.protocol = protocol  # type: ignore[attr-defined]
            protocol.connection_made(transport)
            protocol.data_received(next(pending))
        await asyncio.wait_for(done.wait(), 600)
        wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
        return {"wall_us": (wall - marks["wall"]) / requests * 1e6, "cpu_us": (cpu - marks["cpu"]) / requests * 1e6,
                "loop_us": (thread - marks["thread"]) / requests * 1e6}


def _child(side: str, requests: int, connections: int) -> None:
    print(json.dumps(asyncio.run(_measure(side, requests, connections))), flush=True)


def _run_side(side: str, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.ingest_cpu", "--child", side, "--requests", str(args.requests),
                          "--connections", str(args.connections)], capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{side} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{side:>9}: {1e6 / result['wall_us']:8.0f} req/s   µs per request: wall {result['wall_us']:5.1f}  "
          f"process CPU {result['cpu_us']:5.1f}  event loop thread {result['loop_us']:5.1f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60_000, help="measured requests per run (default 60000)")
    parser.add_argument("--connections", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--child", choices=["baseline", "hookbus"], help=argparse.SUPPRESS)
    add_round_options(parser, default=3)
    args = parser.parse_args()
    if not 1_000 <= args.requests <= 500_000 or not 1 <= args.connections <= min(4096, args.requests):
        parser.error("--requests in [1000, 500000] (all are built before the clock starts), "
                     "--connections in [1, min(4096, --requests)]")
    if args.child:
        _child(args.child, args.requests, args.connections)
        return
    print(f"ingest_cpu: {args.requests} POSTs of ~512 B events (+{WARM} warm-up), {args.connections} in flight, "
          "in-process, no sockets", flush=True)
    pairs: list[tuple[float, float]] = []
    for round_ in range(1, args.rounds + 1):
        banner(f"round {round_} of {args.rounds}")
        base = _run_side("baseline", args)
        hook = _run_side("hookbus", args)
        pairs.append((1e6 / base["wall_us"], 1e6 / hook["wall_us"]))
    print_rounds(pairs, "req/s", "HTTP ingest in-process (not the issue's measure: no kernel, no load generator)", goal=False)


if __name__ == "__main__":
    run_main(main)
