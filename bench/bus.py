"""Bus benchmark: publish → subscriber handler, events per second.

hookbus: `hookbus broker --no-http` (its own process, temp config, journal in
a temp dir, synchronous=FULL). This process publishes N CloudEvents with
`ControlClient.publish` (batches of --batch bodies, --inflight calls in flight;
each call returns once the batch is durable), and runs a `SubscriberRunner`
with a tiny counting Subscriber; the clock stops when it has handled all N.

A publisher that waits for durable acks moves at most its window per round
trip (Little's law): with 8 × 100 events in flight and a ~20 ms round trip
(the broker commits what it has while the next batches queue) that is 40,000
events/s whatever the broker could do. 64 calls in flight keep the broker
busy, which is what this measures; the baseline's PUB has no window at all.
`--inflight 8` or `32` show narrower windows (bench/RESULTS.md has the sweep).

Baseline: a plain pyzmq XSUB/XPUB `zmq.proxy` (its own process, SNDHWM/RCVHWM
= 0, i.e. off), a PUB socket sending `[type, seq, body]` with the same bodies,
and a SUB socket counting N messages (publisher and receiver are two threads
of this process, as the hookbus publisher and subscriber share this process).

The two are measured one after the other in each of --rounds rounds; the
result is the median of the rounds' ratios.

--postgres adds, in each round, the same hookbus run on the PostgreSQL store
(a fresh database on a server this benchmark starts as the tests do,
tests/pg.py), and prints each round's ratio PostgreSQL/SQLite and their median.

    python -m bench.bus [--rounds 5] [--events 100000] [--size 512] [--batch 100] [--inflight 64] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from hookbus.bus.delivery.runner import SubscriberRunner
from hookbus.bus.events.event import Event
from hookbus.bus.settings import BusSettings
from hookbus.bus.transport.client import ControlClient
from hookbus.subscribers import Subscriber, SubscriberConfig

from ._common import (
    HOST,
    CpuWindow,
    Processes,
    add_quiet_options,
    add_round_options,
    banner,
    bench_dir,
    describe_cpu,
    event_body,
    free_ports,
    hookbus_command,
    postgres_server,
    print_rounds,
    quietest,
    run_main,
    until_quiet,
    wait_port,
    write_config,
)

TOPIC = b"backup.task.finished"
WARM_TOPIC = b"warm"


class CountingSubscriber(Subscriber):
    """Counts the distinct seqs it was handed; wakes the benchmark at a target."""

    def __init__(self, config: Any, ordered: bool) -> None:
        super().__init__(config)
        self.ordered = ordered  # type: ignore[misc]
        self.seen: set[int] = set()
        self.target = 0
        self.reached = asyncio.Event()

    async def handle(self, event: Event) -> None:
        self.seen.add(event.seq or 0)
        if len(self.seen) >= self.target:
            self.reached.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        self.target = count
        self.reached.clear()
        if len(self.seen) >= count:
            return
        await asyncio.wait_for(self.reached.wait(), timeout)


async def publish_all(client: ControlClient, bodies: list[bytes], batch: int, inflight: int) -> int:
    """Publish bodies in batches, `inflight` calls at a time; return how many were new."""
    slots = asyncio.Semaphore(inflight)
    new = 0

    async def one(chunk: list[bytes]) -> None:
        nonlocal new
        async with slots:
            accepted = await client.publish(chunk, timeout=60.0)
        new += sum(1 for a in accepted if not a["duplicate"])

    await asyncio.gather(*(one(bodies[i:i + batch]) for i in range(0, len(bodies), batch)))
    return new


async def hookbus_side(args: argparse.Namespace, procs: Processes, tmp: Path, warm: list[bytes],
                       bodies: list[bytes], pg: Any = None) -> dict[str, Any]:
    """One run; with `pg` (tests/pg.py's server), on a fresh database of it."""
    tmp.mkdir()
    control_port, publish_port = free_ports(2)
    store = pg.new_database() if pg is not None else "sqlite"
    config = write_config(tmp / "hookbus.toml", data_dir=tmp / "var", control_port=control_port,
                          publish_port=publish_port, http_port=None, bus={"synchronous": args.synchronous, "store": store})
    broker = procs.start("hookbus-broker", [*hookbus_command(), "broker", "--no-http", "--config", str(config),
                                            "--log-level", "WARNING"])
    wait_port(control_port, broker, procs, "hookbus broker")
    wait_port(publish_port, broker, procs, "hookbus broker")

    bus = BusSettings(data_dir=tmp / "var", control=f"tcp://{HOST}:{control_port}", publish=f"tcp://{HOST}:{publish_port}")
    ctx = zmq.asyncio.Context()
    sub_config = SubscriberConfig(name="bench-counter", kind="counter")
    counter = CountingSubscriber(sub_config, ordered=args.ordered)
    runner = SubscriberRunner(sub_config, counter, bus, ctx)
    client = ControlClient(bus, ctx)
    run_task = asyncio.create_task(runner.run(), name="bench-subscriber")
    try:
        await asyncio.wait_for(runner.ready.wait(), 20)
        # warm-up: the whole path once, so that connections and subscriptions are live
        await publish_all(client, warm, args.batch, args.inflight)
        await counter.wait_for(len(warm), 60)

        window = CpuWindow({"broker": broker.pid}, {"postgres": pg.pid} if pg is not None else None)
        t0 = time.perf_counter()
        publishing = asyncio.create_task(publish_all(client, bodies, args.batch, args.inflight))
        acked: list[float] = []
        publishing.add_done_callback(lambda _: acked.append(time.perf_counter()))
        await counter.wait_for(len(warm) + len(bodies), args.timeout)
        t1 = time.perf_counter()
        new = await publishing
        cpu = window.stop()
        procs.check_alive(broker, "hookbus broker")
    finally:
        run_task.cancel()
        await asyncio.gather(run_task, return_exceptions=True)
        client.close()
        ctx.destroy(linger=0)
        procs.stop(broker)
    if new != len(bodies):
        raise RuntimeError(f"the broker took {new} of {len(bodies)} events as new")
    return {"events": len(bodies), "seconds": t1 - t0, "rate": len(bodies) / (t1 - t0),
            "ack_rate": len(bodies) / (acked[0] - t0), "cpu": cpu}


def baseline_side(args: argparse.Namespace, procs: Processes, bodies: list[bytes]) -> dict[str, Any]:
    xsub_port, xpub_port = free_ports(2)
    proxy = procs.start("zmq-proxy", [sys.executable, "-m", "bench._baseline", "proxy",
                                      "--xsub", str(xsub_port), "--xpub", str(xpub_port)])
    wait_port(xsub_port, proxy, procs, "zmq proxy")
    wait_port(xpub_port, proxy, procs, "zmq proxy")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    pub = ctx.socket(zmq.PUB)
    try:
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.linger = 0
        sub.subscribe(b"")
        sub.connect(f"tcp://{HOST}:{xpub_port}")
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.linger = 0
        pub.connect(f"tcp://{HOST}:{xsub_port}")
        # PUB/SUB joins late: send warm-up messages until one comes through
        deadline = time.monotonic() + 20
        while not sub.poll(20):
            if time.monotonic() > deadline:
                raise RuntimeError("no message came through the zmq proxy within 20 s")
            pub.send_multipart([WARM_TOPIC, b"", b""])

        n = len(bodies)
        finished: list[float] = []
        received = [0]

        def receive() -> None:
            count = 0
            poller_deadline = time.monotonic() + args.timeout
            while count < n and time.monotonic() < poller_deadline:
                if not sub.poll(200):
                    continue
                frames = sub.recv_multipart()
                if frames[0] != WARM_TOPIC:
                    count += 1
            received[0] = count
            finished.append(time.perf_counter())

        for i in range(min(n, 10_000)):  # warm-up of the send/receive loops, ignored by the receiver
            pub.send_multipart([WARM_TOPIC, i.to_bytes(8, "big"), bodies[i]])
        window = CpuWindow({"proxy": proxy.pid})
        receiver = threading.Thread(target=receive, name="bench-receiver")
        t0 = time.perf_counter()
        receiver.start()
        for i, body in enumerate(bodies):
            pub.send_multipart([TOPIC, i.to_bytes(8, "big"), body])
        t_sent = time.perf_counter()
        receiver.join(args.timeout + 5)
        cpu = window.stop()
        procs.check_alive(proxy, "zmq proxy")
    finally:
        sub.close(0)
        pub.close(0)
        ctx.term()
        procs.stop(proxy)
    if received[0] != n:
        raise RuntimeError(f"the baseline receiver got {received[0]} of {n} messages")
    seconds = finished[0] - t0
    return {"events": n, "seconds": seconds, "rate": n / seconds, "send_rate": n / (t_sent - t0), "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to publish and handle (default 100000)")
    parser.add_argument("--size", type=int, default=512, help="event JSON size in bytes (default 512)")
    parser.add_argument("--batch", type=int, default=100, help="bodies per ControlClient.publish call (default 100)")
    parser.add_argument("--inflight", type=int, default=64, help="publish calls in flight (default 64)")
    parser.add_argument("--jobs", type=int, default=64, help="distinct data.job_id values (default 64)")
    parser.add_argument("--ordered", action="store_true",
                        help="counting subscriber handles one event at a time in journal order (like jsonl); "
                             "default: per-job lanes, as most kinds")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="[bus] synchronous (default FULL)")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds per side")
    add_round_options(parser)
    add_quiet_options(parser)
    parser.add_argument("--postgres", action="store_true",
                        help="also run hookbus on the PostgreSQL store in each round (a server of the benchmark's own: "
                             "Debian's postgresql binaries)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs, journal)")
    args = parser.parse_args()
    if not 1 <= args.events <= 5_000_000 or not 1 <= args.batch <= 5000 or not 1 <= args.inflight <= 1000 \
            or not 1 <= args.rounds <= 50:
        parser.error("--events in [1, 5e6], --batch in [1, 5000], --inflight in [1, 1000], --rounds in [1, 50]")

    run = f"b{os.getpid()}"
    bodies = [event_body(run, i, args.size, args.jobs) for i in range(args.events)]
    warm = [event_body(f"{run}w", i, args.size, args.jobs) for i in range(2000)]
    print(f"bus: {args.events} events of {len(bodies[0])} B, publish batches of {args.batch} with {args.inflight} in flight, "
          f"subscriber {'ordered' if args.ordered else f'per-job lanes ({args.jobs} jobs)'}, "
          f"synchronous={args.synchronous}, {os.cpu_count()} CPUs", flush=True)
    pairs: list[tuple[float, float]] = []
    on_pg: list[float] = []
    with bench_dir("hookbus-bench-bus-", args.keep) as tmp, Processes(tmp) as procs, postgres_server(args.postgres) as pg:
        for round_ in range(1, args.rounds + 1):
            banner(f"round {round_} of {args.rounds}, baseline: PUB → zmq.proxy XSUB/XPUB (HWM off) → SUB, counting")
            runs = []
            for _attempt in until_quiet(args, runs):
                r = baseline_side(args, procs, bodies)
                print(f"baseline: {r['rate']:10.0f} events/s handled  ({r['events']} in {r['seconds']:.2f} s; "
                      f"sent at {r['send_rate']:.0f}/s)", flush=True)
                print(f"          {describe_cpu(r['cpu'])}", flush=True)
                runs.append(r)
            base = quietest(runs)
            stores = [("hookbus", None), ("hookbus-pg", pg)] if pg is not None else [("hookbus", None)]
            for name, server in stores:
                banner(f"round {round_} of {args.rounds}, {name}: ControlClient.publish (durable ack) → broker → "
                       f"SubscriberRunner → handler; store {'PostgreSQL' if server else 'SQLite'}")
                runs = []
                for attempt in until_quiet(args, runs):
                    r = asyncio.run(hookbus_side(args, procs, tmp / f"run{round_}-{name}-{attempt}", warm, bodies, server))
                    print(f"{name:>10}: {r['rate']:10.0f} events/s handled  ({r['events']} in {r['seconds']:.2f} s; "
                          f"all acked at {r['ack_rate']:.0f}/s)", flush=True)
                    print(f"          {describe_cpu(r['cpu'])}", flush=True)
                    runs.append(r)
                if server is None:
                    pairs.append((base["rate"], quietest(runs)["rate"]))
                else:
                    on_pg.append(quietest(runs)["rate"])

    print_rounds(pairs, "events/s", "publish → durable ack → subscriber handler", digits=3)
    if on_pg:
        print_rounds([(base, pg_rate) for (base, _), pg_rate in zip(pairs, on_pg, strict=True)], "events/s",
                     "the same on the PostgreSQL store", digits=3, names=("baseline", "hookbus-pg"))
        print_rounds([(sqlite, pg_rate) for (_, sqlite), pg_rate in zip(pairs, on_pg, strict=True)], "events/s",
                     "PostgreSQL store against SQLite store", digits=3, goal=False, names=("sqlite", "postgres"))


if __name__ == "__main__":
    run_main(main)
