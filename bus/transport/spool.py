"""Events that could not reach the broker yet, kept on disk until they can.

`hookbus run` writes every event it publishes to a spool file first (one
CloudEvent per line, fsynced), then sends it. When the broker acks them all the
file is deleted; when it cannot be reached the file stays, and whoever comes
next delivers it: the broker reads `data_dir/spool/` when it starts and every
few seconds after, and every `hookbus run` sends what earlier runs left. A
spool file is locked (flock) while its run is still writing it, and ingest is
idempotent (source + id), so sending a file twice, or in part, is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from hookbus.bus.events.event import Event, EventError, parse_event
from hookbus.bus.settings import BusSettings
from hookbus.bus.transport.client import BrokerRefused, BrokerUnavailable, ControlClient

log = logging.getLogger("hookbus.spool")

SUFFIX = ".jsonl"
BATCH = 500
SCAN_INTERVAL = 2.0


def spool_dir(bus: BusSettings) -> Path:
    return bus.data_dir / "spool"


class SpoolFile:
    """One run's write-ahead file, locked for as long as the run holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: IO[bytes] = path.open("ab")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def append(self, body: bytes) -> None:
        self.file.write(body + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self, delete: bool) -> None:
        if delete:  # while still locked: nobody can have claimed it meanwhile
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.file.close()


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[IO[bytes] | None]:
    """Lock a spool file if no run holds it and it still exists; yield it, or None."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        yield None
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # its run is still going
            return
        if os.fstat(f.fileno()).st_nlink == 0:
            yield None  # delivered and deleted by the one that held it before us
            return
        yield f


def read_events(f: IO[bytes], path: Path) -> list[Event]:
    """The events in a spool file; a line torn by a crash or not an event is skipped, and said so."""
    events = []
    for number, line in enumerate(f.read().splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(parse_event(orjson.loads(line)))
        except (orjson.JSONDecodeError, EventError) as exc:
            log.warning("spool %s line %d skipped: %s", path, number, exc)
    return events


def pending_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


async def deliver_dir(directory: Path, send: Callable[[list[Event]], Awaitable[Any]]) -> int:
    """Send every unclaimed spool file in `directory` with `send`, oldest name
    first, deleting each once sent. Return how many events went; stop at the
    first file that cannot be sent (the exception propagates)."""
    total = 0
    for path in await asyncio.to_thread(pending_files, directory):
        with claimed(path) as f:
            if f is None:
                continue
            events = await asyncio.to_thread(read_events, f, path)
            for start in range(0, len(events), BATCH):
                await send(events[start:start + BATCH])
            await asyncio.to_thread(path.unlink)
            total += len(events)
            log.info("spool %s: %d event(s) delivered", path.name, len(events))
    return total


async def ingest_loop(broker: Any, directory: Path, interval: float = SCAN_INTERVAL) -> None:
    """In the broker: take in what runs left in the spool, at start and then every `interval` s."""

    async def send(events: list[Event]) -> None:
        try:
            await broker.ingest(events)
        except EventError:  # one bad event must not keep the others out
            for event in events:
                try:
                    await broker.ingest([event])
                except EventError as exc:
                    log.error("spool: event %s from %s refused: %s", event.id, event.source, exc)

    while True:
        try:
            await deliver_dir(directory, send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the journal cannot commit: the files stay for the next round
            log.error("spool %s: not ingested yet: %s", directory, exc)
        await asyncio.sleep(interval)


class SpoolingPublisher:
    """Publishes a run's events in order without ever holding the run up.

    `publish` writes the event to the spool file (durable) and returns; a
    background task sends the backlog to the broker, and when the broker does
    not answer it tries again every `retry_interval` seconds. `close` gives it
    a last `final_timeout` seconds; what is still unsent stays in the spool.
    """

    def __init__(self, bus: BusSettings, name: str, *, attempt_timeout: float = 3.0, retry_interval: float = 2.0) -> None:
        self.bus = bus
        self.path = spool_dir(bus) / f"{name}{SUFFIX}"
        self.attempt_timeout = attempt_timeout
        self.retry_interval = retry_interval
        self.pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._spool: SpoolFile | None = None
        self._client: ControlClient | None = None
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import zmq.asyncio

        self._spool = await asyncio.to_thread(SpoolFile, self.path)
        self._client = ControlClient(self.bus, zmq.asyncio.Context())
        self._sender = asyncio.create_task(self._send_loop())

    async def flush_earlier(self, timeout: float) -> int:
        """Send what earlier runs left in the spool (not our own file: we hold its lock)."""
        assert self._client is not None
        client = self._client

        async def send(events: list[Event]) -> None:
            await client.publish([e.to_json() for e in events], timeout=timeout)

        try:
            return await deliver_dir(self.path.parent, send)
        except (BrokerUnavailable, BrokerRefused) as exc:
            log.debug("earlier spool files not sent yet: %s", exc)
            return 0

    async def publish(self, event: Event) -> None:
        assert self._spool is not None
        body = event.to_json()
        await asyncio.to_thread(self._spool.append, body)
        self.pending.append(body)
        self._wake.set()

    async def _send_loop(self) -> None:
        assert self._client is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                batch = self.pending[:BATCH]
                try:
                    await self._client.publish(batch, timeout=self.attempt_timeout)
                except BrokerUnavailable:
                    if self._closing:
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.retry_interval):
                            await self._wake.wait()  # set by a new event or by close()
                    continue
                except BrokerRefused as exc:  # an event the broker will never take: say so, keep the rest going
                    log.error("broker refused an event of this run: %s", exc)
                del self.pending[:len(batch)]
            if self._closing:
                return

    async def close(self, final_timeout: float) -> int:
        """Wait up to `final_timeout` s for the backlog to go; return how many
        events stay in the spool for later."""
        self._closing = True
        self._wake.set()
        if self._sender is not None:
            self.attempt_timeout = max(0.1, final_timeout)
            try:
                async with asyncio.timeout(final_timeout):
                    await asyncio.shield(self._sender)
            except TimeoutError:
                pass
            except Exception as exc:  # the events are safe in the spool whatever went wrong here
                log.error("sending to the broker failed: %s", exc)
            if not self._sender.done():  # an answer lost now only means a duplicate later, which ingest drops
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
        left = len(self.pending)
        if self._spool is not None:
            await asyncio.to_thread(self._spool.close, left == 0)
        if self._client is not None:
            self._client.close()
            self._client.ctx.term()
        return left
