"""Group commit: one writer thread that runs, in one transaction, every write
that queued up while the last commit was on its way to disk, so each commit is
shared by many callers. The SQLite journal and the PostgreSQL store both write
through it; each says how a batch runs on its connection (`_run_batch`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from hookbus.bus.store.base import JournalError

log = logging.getLogger("hookbus.journal")

T = TypeVar("T")
C = TypeVar("C")  # the writer's connection


class Waiter:
    """An async write's waiter: finish() settles its future on its event loop,
    after running `then(result)` there when the write succeeded."""

    __slots__ = ("future", "loop", "then")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any],
                 then: Callable[[Any], None] | None = None) -> None:
        self.loop, self.future, self.then = loop, future, then


# Whom to tell of an op's outcome: an async writer's Waiter, or a blocking writer's callback.
Done = Waiter | Callable[[Any, BaseException | None], None]


class GroupCommit(Generic[C]):
    """The writer thread and its queue. Writers hand it ops, functions of the
    writer's connection; `_run_batch` runs a batch of them and reports each
    outcome through `finish`."""

    def __init__(self, thread_name: str) -> None:
        # The writer takes lists of ops; None stops it.
        self._ops: queue.SimpleQueue[list[tuple[Callable[[C], Any], Done]] | None] = queue.SimpleQueue()
        # Ops written from an event loop wait here until the loop's next turn, then go
        # to the writer together: one wake-up of its thread per turn, not per write.
        self._pending: list[tuple[Callable[[C], Any], Done]] = []
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        self._writer_idle = True
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name=thread_name, daemon=True)

    def _run_batch(self, batch: list[tuple[Callable[[C], Any], Done]]) -> None:
        raise NotImplementedError

    def _writer_stopped(self) -> None:
        """Called on the writer thread as it ends (close its connection)."""

    def _writer(self) -> None:
        while True:
            self._writer_idle = True
            first = self._ops.get()
            self._writer_idle = False
            if first is None:
                break
            batch = list(first)
            stop = False
            while len(batch) < 4096:
                try:
                    ops = self._ops.get_nowait()
                except queue.Empty:
                    break
                if ops is None:
                    stop = True
                    break
                batch.extend(ops)
            try:
                self._run_batch(batch)
            except Exception as exc:  # the one writer must outlive any batch, or every write hangs
                log.exception("journal writer: batch failed")
                error = JournalError(f"journal write failed: {exc}")
                finish([(done, None, error) for _, done in batch])
            if stop:
                break
        self._writer_stopped()

    def write(self, fn: Callable[[C], T], then: Callable[[T], None] | None = None) -> asyncio.Future[T]:
        """Run fn(conn) inside the next group commit; the future has its result once on disk.

        `then(result)` runs on this event loop once the write is on disk, in commit
        order, even when nobody awaits the future any more (a caller cancelled).
        (A plain function returning the future, not a coroutine: one frame less
        to pass through on every resumption of every ingest.)"""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        op: tuple[Callable[[C], Any], Done] = (fn, Waiter(loop, future, then))
        if self._closed:
            future.set_exception(JournalError("journal is closed"))
        elif (not self._pending and not self._writer_idle) or self._pending_loop not in (None, loop):
            # The writer is busy and takes it with what else is queued; or it is
            # another event loop's (tests, tools), whose turns are not ours to wait for.
            self._ops.put([op])
        else:
            if not self._pending:
                self._pending_loop = loop
                loop.call_soon(self._hand_over)
            self._pending.append(op)
        return future

    def _hand_over(self) -> None:
        """Give the writer the ops written during the loop's last turn."""
        pending, self._pending, self._pending_loop = self._pending, [], None
        if pending:
            self._ops.put(pending)

    def write_sync(self, fn: Callable[[C], T]) -> T:
        """Blocking form of `write`, for threads and tools."""
        box: dict[str, Any] = {}
        ready = threading.Event()

        def done(result: Any, exc: BaseException | None) -> None:
            box["result"], box["exc"] = result, exc
            ready.set()

        if self._closed:
            raise JournalError("journal is closed")
        self._ops.put([(fn, done)])
        ready.wait()
        if box["exc"] is not None:
            raise box["exc"]
        return box["result"]  # type: ignore[no-any-return]

    def _stop_writer(self) -> None:
        """Let the writer finish what is queued, then stop it."""
        self._closed = True
        self._hand_over()
        self._ops.put(None)
        self._thread.join(timeout=30)


def finish(outcomes: list[tuple[Done, Any, BaseException | None]]) -> None:
    """Report a batch's outcomes: one wake-up per event loop for all its
    waiters (not one per write), and blocking writers directly."""
    per_loop: dict[asyncio.AbstractEventLoop, list[tuple[Waiter, Any, BaseException | None]]] = {}
    for done, result, exc in outcomes:
        if isinstance(done, Waiter):
            per_loop.setdefault(done.loop, []).append((done, result, exc))
        else:
            done(result, exc)
    for loop, items in per_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle_all(items: list[tuple[Waiter, Any, BaseException | None]]) -> None:
    for waiter, result, exc in items:
        if waiter.then is not None and exc is None:
            try:
                waiter.then(result)
            except Exception:  # the write is on disk whatever its follow-up did
                log.exception("journal: a follow-up of a committed write failed")
        settle_future(waiter.future, result, exc)


def settle_future(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """Give a future its result or exception, unless it is already done (cancelled)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
