"""Runs one subscriber: catch up from its cursor, follow the live bus, deliver
with retries, dead-letter what cannot be delivered, and move the cursor only
past events whose side effect succeeded.

The live XPUB stream is a wake-up channel: every seq is seen on it, so a gap
(a drop at the high-water mark, a broker restart) shows at once and is filled
from the journal. Live events that arrive while the subscriber is behind (it is
reading the journal, or has no room) are kept, up to a bound, so that it reads
from the journal only what it missed and then goes on from what it kept:
without them, a subscriber that fell behind under steady load would read
everything after from the journal, one round trip per batch, and never get
back to the live stream while the load lasted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import zmq
import zmq.asyncio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from hookbus.subscribers import DeliveryError, Subscriber, SubscriberConfig
from hookbus.bus.delivery.subscriber import wants

from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerUnavailable, ControlClient, configure_client_socket
from hookbus.bus.settings import BusSettings
from hookbus.bus.secrets import scrub
from hookbus.bus.transport.broker import DELIVERY_FAILED
from hookbus.bus.events.event import Event, compile_globs, from_stored
from hookbus.bus.store.journal import runner_name

log = logging.getLogger("hookbus.subscriber")

MAX_INFLIGHT = 1000
MAX_BATCH = 500  # events per handle_many() call
DEADLINE_CHECK = 0.05  # seconds between looks at handler calls past their timeout
FETCH_LIMIT = 500
KEEP_EVENTS = 10_000  # live events kept while behind: at most this many ...
KEEP_BYTES = 8 << 20  # ... and this many bytes of them
COMMIT_INTERVAL = 0.2
MAX_RETRY_AFTER = 3600.0
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


def read_message(raw: zmq.Socket[bytes]) -> list[bytes]:
    """Every frame of the next message (it arrives whole), at most four kept.
    Raise zmq.Again when none is waiting."""
    frames = [raw.recv(_NOBLOCK)]
    while raw.get(_RCVMORE):
        frame = raw.recv(_NOBLOCK)
        if len(frames) < 4:
            frames.append(frame)
    return frames


def live_problem(frames: list[bytes], heartbeat: bool) -> str:
    """What is wrong with a live message, or "" for [type, seq, body] or [heartbeat topic, seq]."""
    if len(frames) != (2 if heartbeat else 3):
        return f"{len(frames)}{'+' if len(frames) == 4 else ''} frames"
    if len(frames[1]) != 8:
        return f"a seq frame of {len(frames[1])} bytes, not 8"
    if not heartbeat:
        try:
            frames[0].decode()
        except UnicodeDecodeError:
            return "a topic that is not UTF-8"
    return ""


class LiveFeed(Protocol):
    """The broker, to subscribers running in its own process: it calls every
    attached listener with what it publishes on XPUB, so they skip the socket."""

    def attach(self, listener: Callable[[str | None, int, bytes], None]) -> None: ...

    def detach(self, listener: Callable[[str | None, int, bytes], None]) -> None: ...


def is_retryable(exc: BaseException) -> bool:
    return not (isinstance(exc, DeliveryError) and exc.permanent)


class Backoff:
    """Exponential backoff with full jitter, continuing from attempts already
    made (before a restart), and never shorter than a target's Retry-After."""

    def __init__(self, initial: float, max_delay: float, attempts_before: int) -> None:
        self.initial, self.max_delay, self.before = initial, max_delay, attempts_before

    def __call__(self, state: RetryCallState) -> float:
        n = self.before + state.attempt_number
        delay = min(self.max_delay, self.initial * 2 ** (n - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DeliveryError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER))
        return delay


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return scrub(str(exc) or type(exc).__name__)


class SubscriberRunner:
    def __init__(self, config: SubscriberConfig, subscriber: Subscriber, bus: BusSettings,
                 ctx: zmq.asyncio.Context | None = None, feed: LiveFeed | None = None) -> None:
        self.config = config
        self.sub = subscriber
        self.bus = bus
        self.name = config.name
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.client = ControlClient(bus, self.ctx)
        subscriber.publish = self.publish
        subscriber.give_up = self._give_up
        self.events = config.events if config.events is not None else subscriber.default_events
        self.match_type = compile_globs(self.events).match
        self.greeted = False  # the broker has told the cursor: live events can be taken
        self.high = 0  # every seq <= high has been handed out or skipped
        self.target = 0  # the journal head as last heard of
        self.epoch = 0
        self.runner = runner_name()  # the broker's lease on this name (journal.take_lease)
        self.generation = 0
        self.committed = -1
        self.inflight: set[int] = set()
        self.kept: deque[tuple[int, str, bytes]] = deque()  # live events after `high`, consecutive seqs
        self.kept_bytes = 0
        self.kept_full = False  # the bound was reached: keep nothing more until they are taken
        self.lanes: dict[str, deque[Event]] = {}
        self.retry_state: dict[int, tuple[int, float]] = {}
        self.slots = asyncio.Semaphore(1 if subscriber.ordered else max(1, subscriber.concurrency))
        self.feed = feed
        self._wake = asyncio.Event()  # the target moved while following the feed
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # handler calls in progress → when they time out
        self._expired: set[asyncio.Task[Any]] = set()  # ... and those the watchdog has cancelled
        self.stats: dict[str, int] = {"delivered": 0, "failed_attempts": 0, "dead_lettered": 0, "skipped": 0}
        self.ready = asyncio.Event()  # set once caught up with the head seen at start
        self._tasks: set[asyncio.Task[Any]] = set()
        self._replaying = False

    # -- life cycle ----------------------------------------------------------

    async def run(self) -> None:
        await self.sub.start()
        try:
            if self.feed is not None:
                # Listen before saying hello: whatever is published meanwhile raises the target.
                self.feed.attach(self.on_live)
            await self._hello()
            background = [asyncio.create_task(self._commit_loop()), asyncio.create_task(self._ping_loop()),
                          asyncio.create_task(self._watch_deadlines())]
            try:
                if self.feed is not None:
                    await self._follow_feed()
                else:
                    await self._follow_socket()
            finally:
                for task in background:
                    task.cancel()
                if self.feed is not None:
                    self.feed.detach(self.on_live)
        finally:
            await self._drain()
            await self.sub.close()
            self.client.close()

    async def _hello(self) -> None:
        while True:
            try:
                info, _ = await self.client.request(protocol.HELLO, {"name": self.name, "runner": self.runner}, timeout=5.0)
                break
            except BrokerUnavailable:
                log.warning("subscriber %s: broker at %s not reachable yet; retrying", self.name, self.bus.control)
        self.high = int(info["cursor"])
        self.committed = self.high
        self.epoch = int(info["epoch"])
        self.target = max(self.target, int(info["head"]))
        self.retry_state = {int(s): (int(a), float(t)) for s, a, t in info["retries"]}
        self.greeted = True
        await self.sub.joined(int(info.get("journal", 0)), self.target)
        log.info("subscriber %s (%s): starting after seq %d, head %d", self.name, self.config.kind, self.high, self.target)

    async def _drain(self, grace: float = 5.0) -> None:
        """On shutdown, let deliveries in progress finish briefly, then save the cursor."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
            for task in pending:
                task.cancel()
        try:
            await self._commit(timeout=2.0)
        except (BrokerUnavailable, asyncio.CancelledError):
            pass

    # -- following the bus ---------------------------------------------------

    def has_room(self) -> bool:
        return len(self.inflight) < MAX_INFLIGHT

    async def _catch_up(self) -> None:
        """While behind the head and there is room, go on from the live events
        kept, else read from the journal."""
        while self.high < self.target and self.has_room():
            if self.kept and self.kept[0][0] <= self.high + 1:
                self._take_kept()
            else:
                await self._fetch()
        if self.high >= self.target:
            self.ready.set()

    def _keep(self, seq: int, type_: str, body: bytes) -> None:
        """Keep a live event that cannot be taken yet, if it follows those kept."""
        if self.kept and seq != self.kept[-1][0] + 1:
            if self.kept_full:
                return  # what follows the kept events will be read from the journal
            self._drop_kept()  # a gap in the live stream: what comes after it is what will be needed
        if len(self.kept) < KEEP_EVENTS and self.kept_bytes + len(body) <= KEEP_BYTES:
            self.kept.append((seq, type_, body))
            self.kept_bytes += len(body)
        else:
            self.kept_full = True

    def _take_kept(self) -> None:
        while self.kept and self.has_room() and self.kept[0][0] <= self.high + 1:
            seq, type_, body = self.kept.popleft()
            self.kept_bytes -= len(body)
            if seq == self.high + 1:
                self.high = seq
                self._accept(seq, type_, body)
        if not self.kept:
            self.kept_full = False

    def _drop_kept(self) -> None:
        self.kept.clear()
        self.kept_bytes = 0
        self.kept_full = False

    def on_live(self, type_: str | None, seq: int, body: bytes) -> None:
        """One message of the live stream: an event (`type_`, `seq`, `body`) or a
        heartbeat (`type_` None, `seq` the journal head)."""
        if type_ is None or not self.greeted:  # before the cursor is known, an event only says how far to read
            self._heard_of(seq)
        elif seq <= self.high:
            return
        elif seq == self.high + 1 and self.high >= self.target and self.has_room():
            self.high = self.target = seq
            self._accept(seq, type_, body)
        else:  # behind, a gap, or no room: keep it for when there is, and read what is missing from the journal
            self._keep(seq, type_, body)
            self._heard_of(seq)

    def _heard_of(self, seq: int) -> None:
        """The journal has got at least to `seq`: read up to there."""
        if seq > self.target:
            self.target = seq
            self._wake.set()

    async def _follow_feed(self) -> None:
        """In the broker's process, live events are handed over in memory (on_live)."""
        while True:
            await self._catch_up()
            self._wake.clear()
            try:
                async with asyncio.timeout(0.05 if self.high < self.target else None):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _follow_socket(self) -> None:
        """In a process of its own, live events come over the broker's XPUB socket."""
        sock, raw = self._live_socket()
        silent_ms = int(3000 * self.bus.heartbeat)
        try:
            while True:
                await self._catch_up()
                behind = self.high < self.target
                if not await sock.poll(50 if behind else silent_ms):  # POLLIN
                    if not behind:
                        # libzmq does not reconnect after a refused handshake (e.g. a process held the
                        # port while the broker restarted): connect afresh. PINGs keep the target meanwhile.
                        log.debug("subscriber %s: no heartbeat from broker for %.0fs; reconnecting", self.name, silent_ms / 1000)
                        sock.close(linger=0)
                        sock, raw = self._live_socket()
                    continue
                for _ in range(MAX_INFLIGHT):
                    try:
                        frames = read_message(raw)
                    except zmq.Again:
                        break
                    self._on_frames(frames)
        finally:
            sock.close(linger=0)

    def _live_socket(self) -> tuple[zmq.asyncio.Socket, zmq.Socket[bytes]]:
        """A SUB socket on the broker's publish socket, and a plain shadow of it that
        takes everything already queued without a future per message."""
        sock = self.ctx.socket(zmq.SUB)
        configure_client_socket(sock, self.bus)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.subscribe(b"")  # every seq, so that gaps are visible
        sock.connect(self.bus.publish)
        return sock, zmq.Socket.shadow(sock.underlying)

    def _on_frames(self, frames: list[bytes]) -> None:
        """One live message, checked: a malformed one is logged and skipped, never
        fatal (the journal has the event; a gap in seqs makes the subscriber read it)."""
        topic = frames[0]
        heartbeat = topic == protocol.HEARTBEAT_TOPIC
        problem = live_problem(frames, heartbeat)
        if problem:
            self.stats["malformed"] = self.stats.get("malformed", 0) + 1
            log.warning("subscriber %s: skipped a malformed live message: %s", self.name, problem)
            return
        self.on_live(None if heartbeat else topic.decode(), protocol.seq_from(frames[1]), b"" if heartbeat else frames[2])

    def _heard_of_head(self, head: int) -> None:
        """The broker's own word on its head, after a FETCH: a live message that
        claimed more (no broker sends one) is forgotten, or every pass would FETCH again."""
        if self.high >= head and self.target > head:
            (log.warning if self.target > head + 10_000 else log.debug)(
                "subscriber %s: the live stream announced seq %d but the broker's head is %d; going on from there",
                self.name, self.target, head)
            self.target = head
        else:
            self.target = max(self.target, head)

    async def _fetch(self) -> None:
        try:
            info, bodies = await self.client.request(
                protocol.FETCH, {"after": self.high, "limit": FETCH_LIMIT, "events": self.events},
                timeout=10.0,
            )
        except BrokerUnavailable as exc:
            log.warning("subscriber %s: %s", self.name, exc)
            return
        for seq, body in zip(info["seqs"], bodies):
            if seq > self.high:
                self._accept(seq, None, body)
        self.high = max(self.high, int(info["scanned_to"]))
        self._heard_of_head(int(info["head"]))

    def _accept(self, seq: int, type_: str | None, body: bytes) -> None:
        if type_ is not None and not self.match_type(type_):
            return
        try:
            event = from_stored(body)
        except (ValueError, KeyError, AttributeError) as exc:
            if type_ is not None and self.high == seq:  # a live copy: read the journal's instead
                log.warning("subscriber %s: live seq %d is not a valid event (%s); reading it from the journal", self.name, seq, exc)
                self.high = seq - 1
                return
            log.error("subscriber %s: seq %d is not a valid event (%s); skipped", self.name, seq, exc)  # stored events are valid
            return
        event.seq = seq
        if not wants(self.config, event) or self._is_own_failure(event):
            self.stats["skipped"] += 1
            return
        self.inflight.add(seq)
        key = "" if self.sub.ordered else event.job_key
        lane = self.lanes.get(key)
        if lane is not None:
            lane.append(event)
            return
        self.lanes[key] = deque([event])
        self._spawn(self._run_lane(key, self.generation))

    def _is_own_failure(self, event: Event) -> bool:
        """A target that just failed would fail its own alert too: that goes elsewhere."""
        return event.type == DELIVERY_FAILED and event.fields.get("subscriber") == self.name

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, key: str, generation: int) -> None:
        lane = self.lanes[key]
        while lane:
            if len(lane) > 1 and self.sub.takes_many and not self.retry_state:
                batch = [lane[i] for i in range(min(len(lane), MAX_BATCH))]
                async with self.slots:
                    handled = await self._deliver_many(batch)
                if handled:
                    if generation != self.generation:  # _reset left only the head in the lane
                        lane.popleft()
                        continue
                    for event in batch:
                        lane.popleft()
                        self.inflight.discard(event.seq or 0)
                    continue
                # Otherwise each event again on its own, with retries (at-least-once).
            event = lane[0]
            async with self.slots:
                await self._deliver(event)
            lane.popleft()
            if generation == self.generation:
                self.inflight.discard(event.seq or 0)
        if self.lanes.get(key) is lane:
            del self.lanes[key]

    # -- delivery ------------------------------------------------------------

    async def _timed(self, call: Awaitable[None]) -> None:
        """Await a handler call; past the subscriber's timeout it is cancelled and
        TimeoutError raised. One watchdog looks over a table of the calls in
        progress: an asyncio.timeout (or a timer) per call was a quarter of a busy
        subscriber's time. As in asyncio.timeout, Task.uncancel tells the
        watchdog's cancellation from anyone else's (a shutdown is not a timeout)."""
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = time.monotonic() + self.sub.handler_timeout()
        try:
            await call
        except asyncio.CancelledError:
            if self._take_back(task) and task.cancelling() == 0:
                raise TimeoutError from None
            raise  # (also) cancelled by someone else: a shutdown is not a timeout
        finally:
            del self._deadlines[task]
            self._take_back(task)  # the call returned, or raised something else, after the watchdog cancelled it

    def _take_back(self, task: asyncio.Task[Any]) -> bool:
        """Undo the watchdog's cancellation of `task`, if it made one; say whether it did."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    async def _watch_deadlines(self) -> None:
        while True:
            await asyncio.sleep(DEADLINE_CHECK)
            now = time.monotonic()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    async def _deliver_many(self, events: list[Event]) -> bool:
        """One try at handing several queued events to a kind that takes them
        together (one write for many lines). Return success; on failure the
        caller delivers them one by one, with retries."""
        try:
            await self._timed(self.sub.handle_many(events))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - judged again, event by event
            log.debug("subscriber %s: %d events together failed (%s); one by one now", self.name, len(events), describe(exc))
            return False
        self.stats["delivered"] += len(events)
        return True

    async def publish(self, events: list[Event]) -> list[dict[str, Any]]:
        """Publish events on behalf of the subscriber; return once they are durable.
        Raise BrokerUnavailable if the broker does not answer in time."""
        return await self.client.publish([event.to_json() for event in events])

    async def _deliver(self, event: Event) -> bool:
        """Handle one event with retries; dead-letter it when that fails. Return success."""
        state = self.retry_state.pop(event.seq or 0, None)
        if state is None:  # most events succeed at once: spare them the retry machinery
            try:
                await self._timed(self.sub.handle(event))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handed to the retry loop as its first attempt
                return await self._retry(event, 0, exc)
            self.stats["delivered"] += 1
            return True
        before, next_at = state
        if next_at > time.time():  # capped: a clock set back must not put a retry off for a day
            await asyncio.sleep(min(next_at - time.time(), self.config.retry.max_delay))
        return await self._retry(event, before, None)

    async def _retry(self, event: Event, before: int, first_error: Exception | None) -> bool:
        """Deliver with retries, counting on from `before` attempts made before a
        restart; `first_error` is an attempt that has just failed."""
        seq = event.seq or 0
        retry_cfg = self.config.retry
        persisted = False
        last_error = ""

        async def save(attempts: int, next_at: float) -> None:
            nonlocal persisted
            persisted = True
            await self._tell(protocol.RETRY, {"name": self.name, "seq": seq, "attempts": attempts,
                                               "next_at": next_at, "error": last_error})

        async def starting(state: RetryCallState) -> None:
            # Write-ahead for retries: a crash during this attempt still counts it.
            if before or state.attempt_number > 1:
                await save(before + state.attempt_number, time.time())

        async def failed(state: RetryCallState) -> None:
            nonlocal last_error
            self.stats["failed_attempts"] += 1
            exc = state.outcome.exception() if state.outcome else None
            last_error = describe(exc) if exc else ""
            wait = state.next_action.sleep if state.next_action else 0.0
            log.info("subscriber %s: seq %d attempt %d failed (%s); retrying in %.1fs",
                     self.name, seq, before + state.attempt_number, last_error, wait)
            await save(before + state.attempt_number, time.time() + wait)

        attempts = before
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(max(1, retry_cfg.attempts - before)),
                wait=Backoff(retry_cfg.initial_delay, retry_cfg.max_delay, before),
                retry=retry_if_exception(is_retryable),
                before=starting,
                before_sleep=failed,
                reraise=True,
            ):
                with attempt:
                    attempts = before + attempt.retry_state.attempt_number
                    if first_error is not None:  # the fast path's failed attempt: let tenacity judge it
                        error, first_error = first_error, None
                        raise error
                    await self._timed(self.sub.handle(event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a handler ends here, never in the loop
            self.stats["dead_lettered"] += 1
            await self._tell(protocol.DEAD, {"name": self.name, "seq": seq, "attempts": attempts, "error": describe(exc)},
                             timeout=None)
            return False
        self.stats["delivered"] += 1
        if persisted or before:
            await self._tell(protocol.RETRY, {"name": self.name, "seq": seq, "attempts": 0})
        return True

    async def _give_up(self, event: Event, attempts: int, error: str) -> None:
        """Dead-letter an event the subscriber held and could not deliver (see Subscriber.held)."""
        self.stats["dead_lettered"] += 1
        await self._tell(protocol.DEAD, {"name": self.name, "seq": event.seq or 0, "attempts": attempts,
                                         "error": scrub(error)}, timeout=None)

    async def _tell(self, command: bytes, payload: dict[str, Any], timeout: float | None = 5.0) -> dict[str, Any] | None:
        """Send a command; with timeout=None keep trying until the broker has it."""
        while True:
            try:
                info, _ = await self.client.request(command, payload, timeout=timeout or 30.0)
                return info
            except BrokerUnavailable as exc:
                if timeout is not None:
                    log.debug("subscriber %s: %s", self.name, exc)
                    return None
                log.warning("subscriber %s: %s; will keep trying", self.name, exc)

    # -- cursor, heartbeat, replays -------------------------------------------

    def cursor(self) -> int:
        # Events the subscriber holds (a digest not yet sent) keep the cursor below them too.
        held = self.sub.held()
        low = min(min(self.inflight, default=self.high + 1), min(held, default=self.high + 1))
        return low - 1

    async def _commit(self, timeout: float = 5.0) -> None:
        cursor = self.cursor()
        if cursor <= self.committed:
            return
        info, _ = await self.client.request(protocol.ACK, {"name": self.name, "cursor": cursor, "epoch": self.epoch}, timeout=timeout)
        if info.get("ok"):
            self.committed = cursor

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            try:
                await self._commit()
            except BrokerUnavailable as exc:
                log.debug("subscriber %s: cursor not saved: %s", self.name, exc)

    async def _ping_loop(self) -> None:
        while True:
            try:
                info, _ = await self.client.request(
                    protocol.PING, {"name": self.name, "runner": self.runner, "stats": {**self.stats, "inflight": len(self.inflight)}}, timeout=self.bus.heartbeat * 3)
            except BrokerUnavailable:
                log.warning("subscriber %s: broker at %s not answering heartbeats", self.name, self.bus.control)
                continue
            self.target = max(self.target, int(info["head"]))
            if int(info["epoch"]) != self.epoch:
                self._reset(int(info["epoch"]), int(info["cursor"]))
            if info["replays"] and not self._replaying:
                self._replaying = True
                self._spawn(self._replay())
            await asyncio.sleep(self.bus.heartbeat)

    def _reset(self, epoch: int, cursor: int) -> None:
        """The cursor was moved by `hookbus replay --from`: start over from there."""
        log.info("subscriber %s: replaying from seq %d", self.name, cursor + 1)
        self.generation += 1
        self.epoch = epoch
        for lane in self.lanes.values():
            while len(lane) > 1:  # the head of each lane is being delivered; let it finish
                lane.pop()
        self.inflight.clear()
        self._drop_kept()
        self.high = self.committed = cursor
        self._wake.set()

    async def _replay(self) -> None:
        try:
            info, bodies = await self.client.request(protocol.REPLAYS, {"name": self.name})
            for item, body in zip(info["items"], bodies):
                event = from_stored(body)
                event.seq = int(item["seq"])
                try:
                    await self._timed(self.sub.handle(event))
                    ok, error = True, ""
                except Exception as exc:  # a replay that fails goes back to the dead letters
                    ok, error = False, describe(exc)
                log.info("subscriber %s: replay of dead letter %s (seq %s): %s", self.name, item["id"], item["seq"], "delivered" if ok else error)
                await self._tell(protocol.REPLAYED, {"id": item["id"], "ok": ok, "error": error}, timeout=None)
        except BrokerUnavailable as exc:
            log.warning("subscriber %s: replay postponed: %s", self.name, exc)
        finally:
            self._replaying = False
