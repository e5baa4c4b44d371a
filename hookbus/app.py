"""The application assembled: the broker with its HTTP side and the tools'
adapters, the subscribers, the process around them. The CLI (cli.py) calls
these; nothing below this package knows the whole configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, cast

from aiohttp import web

from hookbus.adapters import ping, registry
from hookbus.bus.checks.engine import CheckEngine
from hookbus.bus.delivery.runner import SubscriberRunner
from hookbus.bus.filemodes import private_dir
from hookbus.bus.http.app import create_app as create_http_app
from hookbus.bus.http.app import start_http
from hookbus.bus.http.fdlimit import raise_open_file_limit
from hookbus.bus.jobs import runner as jobs
from hookbus.bus.secrets import scrub
from hookbus.bus.store.base import JournalError, Store, StoreUnavailable
from hookbus.bus.store.journal import runner_name
from hookbus.bus.store.leases import Lease, beat
from hookbus.bus.store.opener import open_store
from hookbus.bus.transport import spool
from hookbus.bus.transport.broker import Broker
from hookbus.config import Config
from hookbus.subscribers import create
from hookbus.subscribers.shell import is_gate_table

log = logging.getLogger("hookbus")


def create_app(config: Config, broker: Broker, engine: CheckEngine | None = None) -> web.Application:
    """The HTTP API with every tool's adapter (`/ingest/{tool}`), the ping API (`/ping/{key}`)
    and, given the engine, the checks (`/api/checks`, `/api/silences`, `/badge/{key}.svg`)."""
    return create_http_app(config.http, broker, registry.ingest_handlers(),
                           [functools.partial(ping.add_routes, checks=config.checks)], engine)


def checks_for(broker: Broker, config: Config) -> CheckEngine:
    """The checks, fed by what the broker commits; runners hear of the silences from the broker."""
    engine = CheckEngine(config.checks, broker.journal, broker.ingest)
    broker.attach(engine.on_published)
    broker.silences = lambda: [s.to_json() for s in engine.silences.running(time.time())]
    return engine


FOLLOW_CHECKS_S = 2.0  # a node that does not evaluate the checks reloads their states this often, for its API


def follow_checks(engine: CheckEngine) -> Callable[[], Awaitable[None]]:
    """While another node evaluates the checks: load their saved states now and then, so this
    node's API and page show them too."""
    loop = asyncio.get_running_loop()
    last = [-FOLLOW_CHECKS_S]

    async def follow() -> None:
        if loop.time() - last[0] >= FOLLOW_CHECKS_S:
            last[0] = loop.time()
            try:
                await engine.load()
            except Exception as exc:
                log.warning("checks: cannot load their states: %s", scrub(str(exc)))

    return follow


async def share_operations(engine: CheckEngine, store: Store, checks: Lease) -> None:
    """With several nodes, a silence may be added or ended, and a check paused or resumed, through
    any of them: each node reads the silences now and then, for its runners and its evaluation,
    and the one evaluating the checks takes in pauses and resumes (the others reload it all)."""
    while True:
        await asyncio.sleep(FOLLOW_CHECKS_S)
        try:
            # Those ended in the last hour too: an end made on another node is taken in, and announced.
            engine.silences.merge(await asyncio.to_thread(store.silences, time.time() - 3600))
            if checks.held:
                await engine.adopt_pauses()
            engine.wake()
        except Exception as exc:
            log.warning("checks: cannot read what other nodes changed: %s", scrub(str(exc)))


def singletons(config: Config, store: Store, broker: Broker, engine: CheckEngine) -> list[asyncio.Task[None]]:
    """What one node of the bus does at a time (DESIGN §12), each under its claim, and this node's
    heartbeat: the checks' evaluation and retention."""
    node, lease = config.bus.node_name, config.bus.lease
    checks = Lease(store, "checks", node, lease)
    shared = [asyncio.create_task(share_operations(engine, store, checks), name="shared")] if config.bus.on_postgres else []
    return [*shared,
        asyncio.create_task(beat(store, node, runner_name(), lease), name="node-beat"),
        asyncio.create_task(checks.hold(lambda: evaluate(engine), idle=follow_checks(engine)), name="checks"),
        asyncio.create_task(Lease(store, "retention", node, lease).hold(broker.prune_loop), name="retention"),
    ]


async def evaluate(engine: CheckEngine) -> None:
    """Run the checks; an unexpected error is logged and evaluation starts over from the saved seq."""
    while True:
        try:
            await engine.run()
        except asyncio.CancelledError:
            raise
        except JournalError as exc:  # the store unavailable (PostgreSQL down): said in a line, no traceback
            log.warning("checks: %s; starting over in 5 s", exc)
            await asyncio.sleep(5)
        except Exception:
            log.exception("checks: evaluation failed; starting over in 5 s")
            await asyncio.sleep(5)


@contextlib.contextmanager
def data_dir_lock(config: Config) -> Iterator[None]:
    """One broker per data directory: a second one would fork the journal."""
    private_dir(config.bus.data_dir)  # 0700, and what is under it owner-only (§13)
    path = config.bus.data_dir / "broker.lock"
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(f"bus.data_dir {config.bus.data_dir}: another hookbus broker is already running on it") from None
        yield


async def opened_store(config: Config, max_delay: float = 30.0) -> Store:
    """Open the store; a database that cannot be reached yet (a node started while PostgreSQL is down
    or failing over) is tried again with backoff, so every node resumes by itself (DESIGN §12).
    Opening checks and migrates the file (or the database's schema): not on the event loop."""
    delay = 1.0
    while True:
        try:
            return await asyncio.to_thread(open_store, config.bus)
        except StoreUnavailable as exc:
            log.error("%s; trying again in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


@contextlib.asynccontextmanager
async def running_broker(config: Config, with_http: bool) -> AsyncIterator[Broker]:
    journal = await opened_store(config)
    broker = Broker(config, journal)
    broker.retention_here = False  # under its claim (singletons)
    try:
        await broker.start()
        # What `hookbus run` could not deliver while the broker was down waits in the spool.
        spooled = asyncio.create_task(spool.ingest_loop(broker, spool.spool_dir(config.bus)), name="spool-ingest")
        engine = checks_for(broker, config)
        background = [spooled, *singletons(config, journal, broker, engine), *follow_sources(config, broker)]
        runner = await start_http(create_app(config, broker, engine)) if with_http and config.http.enabled else None
        try:
            yield broker
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
            await broker.stop()
    finally:
        await asyncio.to_thread(journal.close)


def follow_sources(config: Config, broker: Broker) -> list[asyncio.Task[None]]:
    """The `[[sources]]` followers (DESIGN §14), each committing what it sees as an ingest does;
    one node of the bus at a time follows each (its claim), so several nodes do not all read it."""
    kinds = registry.followers() if config.sources else {}
    node, lease = config.bus.node_name, config.bus.lease
    return [asyncio.create_task(Lease(broker.journal, f"source:{source.name}", node, lease).hold(
                functools.partial(kinds[source.kind], source, broker.ingest)), name=f"source-{source.name}")
            for source in config.sources]



def leased(config: Config, name: str, broker: Broker) -> Coroutine[Any, Any, None]:
    """Run one subscriber in the broker's process while this node holds its claim (DESIGN §12):
    one node of the bus at a time delivers it; another takes it over from the saved cursor."""
    cfg = config.subscriber(name)
    current: list[SubscriberRunner] = []

    async def deliver() -> None:
        runner = SubscriberRunner(cfg, create(cfg), config.bus, feed=broker)
        current[:] = [runner]
        await runner.run()

    def limit(seconds: float) -> None:  # deliveries in progress may finish only while the claim lasts
        for runner in current:
            runner.drain_grace = min(runner.drain_grace, seconds)

    lease = Lease(broker.journal, f"subscriber:{name}", config.bus.node_name, config.bus.lease)
    return lease.hold(deliver, limit=limit)


async def run_leased(config: Config, names: list[str], stop: asyncio.Event, broker: Broker) -> None:
    """The subscribers of `hookbus serve`, each under its claim, until `stop`."""
    for name in names:
        config.subscriber(name)  # an unknown name fails here, before anything runs
    tasks = [asyncio.create_task(leased(config, name, broker), name=f"subscriber-{name}") for name in names]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_subscribers(config: Config, names: list[str], stop: asyncio.Event) -> list[str]:
    """Run the named subscribers, in a process of their own (`hookbus subscriber`), until `stop`.
    Return why each one that stopped on its own stopped."""
    runners = [SubscriberRunner(cfg, create(cfg), config.bus) for cfg in (config.subscriber(n) for n in names)]
    tasks: dict[asyncio.Task[object], SubscriberRunner] = {
        asyncio.create_task(r.run(), name=f"subscriber-{r.name}"): r for r in runners}
    stopper: asyncio.Task[object] = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[object]] = set(tasks)
    failures: list[str] = []
    while pending and not stop.is_set():
        done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopper}:
            pending.discard(task)
            exc = task.exception()
            if exc is not None:  # one subscriber failing to start does not stop the others
                log.error("subscriber %s stopped: %s", tasks[task].name, scrub(str(exc)))
                failures.append(f"subscriber {tasks[task].name}: {exc}")
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stopper.cancel()
    return failures


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def tune_gc() -> None:
    """Set the garbage collector up for a long-running server process.

    Everything imported and configured so far lives as long as the process: it is
    kept out of the collector, whose full passes over it were ~20 ms pauses in
    delivery latency. And a young-generation pass waits for 10,000 new objects
    instead of 700: the requests waiting for a commit hold a few thousand objects
    that reference counting frees moments later, so at 700 the collector ran every
    ~60 requests and found almost nothing (1,015 passes, 1,224 objects in 62,000
    requests; 3 µs per request, measured with bench.ingest_cpu).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def serve(config: Config, *, broker: bool, http: bool, subscribers: list[str]) -> list[str]:
    """Run until stopped; return why subscribers that stopped on their own stopped."""
    stop = stop_event()
    tune_gc()
    raise_open_file_limit()  # every connection, peer and file is a descriptor; 1024 is soon gone
    failures: list[str] = []
    if broker:
        async with running_broker(config, http) as in_process:
            if subscribers:
                await run_leased(config, subscribers, stop, in_process)
            else:
                await stop.wait()
    else:
        failures = await run_subscribers(config, subscribers, stop)
    log.info("stopped")
    return failures


def run_needs(table: dict[str, Any]) -> bool:
    """Of the [[subscribers]] tables, those `hookbus run` loads: its gates (job_gates). The
    notifiers are the serving process's business; their secrets (often not in cron's or a
    timer's environment) must not stop a backup."""
    return is_gate_table(table)


def job_gates(config: Config) -> list[jobs.Gate]:
    """The hooks `hookbus run` runs itself before a start event goes out: the shell
    subscribers with ON_ERROR_CANCEL / ON_ERROR_FATAL (bus/jobs takes them as a
    factory and knows no subscriber kind)."""
    subs = [create(cfg) for cfg in config.subscribers if cfg.kind == "shell"]
    return [cast("jobs.Gate", sub) for sub in subs if getattr(sub, "is_gate", False)]


def run_job(config: Config, name: str, *, job_type: str, job_id: str | None, publish_timeout: float) -> int:
    """`hookbus run NAME`: the job's exit status (see bus.jobs.runner.cmd_run); 2 for a name not configured."""
    job = next((j for j in config.jobs if j.name == name), None)
    if job is None:
        known = ", ".join(j.name for j in config.jobs) or "none configured"
        print(f"hookbus: no job named {name!r} in {config.source} (jobs: {known})", file=sys.stderr)
        return 2
    return jobs.cmd_run(config.bus, job, job_type=job_type, job_id=job_id, publish_timeout=publish_timeout,
                        gates=lambda: job_gates(config))
