"""The subscriber runtime against a real broker and journal in this process, on
loopback sockets: events handed over in memory (as under `hookbus serve`),
events taken several at a time, and what the broker tells subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import zmq.asyncio

from hookbus.bus.delivery.runner import SubscriberRunner
from hookbus.bus.events.event import Event, parse_event
from hookbus.bus.store.journal import Journal
from hookbus.bus.transport import protocol
from hookbus.bus.transport.broker import Broker
from hookbus.bus.transport.client import configure_client_socket
from hookbus.config import Config, build_config
from hookbus.subscribers import DeliveryError, Subscriber, SubscriberConfig
from hookbus.subscribers.jsonl import JsonlConfig, JsonlSubscriber

from .conftest import cloudevent, free_port, wait_for

TYPE = "backup.task.finished"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    config: Config = build_config({"bus": {
        "data_dir": str(tmp_path / "var"), "synchronous": "NORMAL", "heartbeat": 0.2,
        "control": f"tcp://127.0.0.1:{free_port()}", "publish": f"tcp://127.0.0.1:{free_port()}"}}, "test")
    journal = Journal(config.bus.data_dir / "journal.db", synchronous="NORMAL")
    ctx = zmq.asyncio.Context()
    broker = Broker(config, journal, ctx)
    await broker.start()
    yield broker
    await broker.stop()
    journal.close()
    ctx.term()


async def ingest(broker: Broker, *numbers: int, job: str = "job-1") -> None:
    await broker.ingest([parse_event(cloudevent(i, job, TYPE)) for i in numbers])


class Batches(Subscriber):
    """Takes many at once, but the first `refuse` handle_many() calls fail."""

    ordered = True
    takes_many = True
    refuse: ClassVar[int] = 0

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.calls: list[list[int]] = []
        self.singles: list[int] = []
        self.events: list[Event] = []

    async def handle_many(self, events: list[Event]) -> None:
        self.calls.append([e.seq or 0 for e in events])
        if len(self.calls) <= self.refuse:
            raise DeliveryError("not now")
        self.singles.extend(e.seq or 0 for e in events)
        self.events.extend(events)

    async def handle(self, event: Event) -> None:
        self.singles.append(event.seq or 0)
        self.events.append(event)


@contextlib.asynccontextmanager
async def following(broker: Broker, sub: Subscriber, in_memory: bool = True) -> AsyncIterator[None]:
    """Run `sub` until the block ends: fed in memory by the broker, as under
    `hookbus serve`, or (in_memory=False) over its XPUB socket, as in a process of its own."""
    runner = SubscriberRunner(sub.config, sub, broker.bus, broker.ctx, feed=broker if in_memory else None)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(runner.ready.wait(), 10)
        if not in_memory:  # the broker sends live only once it has heard of the subscription
            await wait_for(lambda: bool(broker._topics), 10, "the subscriber's subscription at the broker")
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_events_in_memory_from_the_broker_arrive_in_order_taken_together(broker: Broker) -> None:
    sub = Batches(SubscriberConfig(name="many", kind="many"))
    async with following(broker, sub):
        # One commit of 50 events: the lane holds them all when it runs, so they go in one call.
        await ingest(broker, *range(1, 51))
        await wait_for(lambda: len(sub.singles) >= 50, 10, "50 events delivered")
        assert sub.singles == list(range(1, 51))
        assert len(sub.calls) < 50 and max(len(c) for c in sub.calls) > 1
        await wait_for(lambda: broker.journal.cursors().get("many", (0, 0))[0] == 50, 10, "cursor at 50")


async def test_a_batch_that_fails_is_delivered_one_by_one(broker: Broker) -> None:
    Refusing = type("Refusing", (Batches,), {"refuse": 1})
    sub = Refusing(SubscriberConfig(name="fallback", kind="many"))
    async with following(broker, sub):
        await ingest(broker, *range(1, 11))
        await wait_for(lambda: len(sub.singles) >= 10, 10, "10 events delivered")
        assert sub.calls[0][:2] == [1, 2]  # the refused batch
        assert sub.singles == list(range(1, 11))  # then each once, in order


async def test_jsonl_writes_a_batch_once_and_skips_what_it_has(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sub = JsonlSubscriber(JsonlConfig(name="audit", kind="jsonl", path=path))
    await sub.start()
    events = []
    for i in range(1, 6):
        body = orjson.dumps(cloudevent(i, type_=TYPE))
        event = parse_event(orjson.loads(body))
        event.seq, event.stored = i, body
        events.append(event)
    await sub.handle_many(events[:3])
    await sub.handle_many(events)  # 1-3 again: only 4 and 5 are new
    await sub.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert lines[0] == {**cloudevent(1, type_=TYPE), "seq": 1}


async def test_a_cancelled_ingest_is_still_published_and_the_head_follows_publication(broker: Broker) -> None:
    heard: list[tuple[str | None, int]] = []
    broker.attach(lambda type_, seq, body: heard.append((type_, seq)))
    task = asyncio.create_task(ingest(broker, 1))
    await asyncio.sleep(0)  # the write is queued; the caller goes away (an HTTP client hung up)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await wait_for(lambda: (TYPE, 1) in heard, 5, "the committed event published anyway")
    assert broker.journal.last_seq == 1 and broker.head == 1
    await wait_for(lambda: (None, 1) in heard, 5, "a heartbeat with the published head")


class Hangs(Subscriber):
    """Never returns from the event of job `stuck`; a handler that swallows one
    cancellation and returns counts as done (as with asyncio.timeout)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.handled: list[int] = []
        self.attempts = 0

    async def handle(self, event: Event) -> None:
        if event.data["job_id"] == "stuck":
            self.attempts += 1
            await asyncio.Event().wait()
        if event.data["job_id"] == "stubborn":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # swallowed: the call returns normally
        self.handled.append(event.data["n"])


async def test_a_handler_past_its_timeout_is_cancelled_retried_and_dead_lettered(broker: Broker) -> None:
    config = SubscriberConfig(name="slow", kind="hangs", timeout=0.3, retry={"attempts": 2, "initial_delay": 0.05, "max_delay": 0.1})
    sub = Hangs(config)
    async with following(broker, sub):
        await ingest(broker, 1, job="stuck")
        await ingest(broker, 2, job="free")
        await ingest(broker, 3, job="stubborn")
        await wait_for(lambda: 2 in sub.handled, 5, "the other job's event, not held up")  # numbers are data.n
        await wait_for(lambda: broker.journal.dead_letters("slow"), 10, "the hanging event dead-lettered")
        [dead] = broker.journal.dead_letters("slow")
        assert (dead.seq, dead.attempts, dead.error) == (1, 2, "timed out") and sub.attempts == 2
        await wait_for(lambda: 3 in sub.handled, 5, "the event whose handler swallowed the cancellation")
        failed = [e for e in broker.journal.read(0, 100)[0] if e.type == "hookbus.delivery.failed"]
        assert len(failed) == 1 and orjson.loads(failed[0].body)["data"]["error"] == "timed out"
        await ingest(broker, 4, job="free")
        await wait_for(lambda: 4 in sub.handled, 5, "the subscriber goes on")


async def test_events_published_while_the_subscriber_says_hello_arrive_once(broker: Broker) -> None:
    """Under serve a subscriber listens before its hello is answered: what is
    published in between must come once, not live and again from the cursor."""
    sub = Batches(SubscriberConfig(name="late", kind="many"))
    runner = SubscriberRunner(sub.config, sub, broker.bus, broker.ctx, feed=broker)
    hello = runner._hello

    async def hello_after_events() -> None:
        await ingest(broker, 1, 2, 3)  # published in memory while this subscriber is attached, before its hello
        await hello()

    runner._hello = hello_after_events  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    try:
        await wait_for(lambda: len(sub.singles) >= 3, 10, "the three events")
        await ingest(broker, 4)
        await wait_for(lambda: 4 in sub.singles, 10, "the next event")
        await wait_for(lambda: broker.journal.cursors().get("late", (0, 0))[0] == 4, 10, "cursor at 4")
        assert sub.singles == [1, 2, 3, 4]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Gate(Subscriber):
    """Holds every event until the gate opens."""

    ordered = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.open = asyncio.Event()
        self.handled: list[int] = []

    async def handle(self, event: Event) -> None:
        await self.open.wait()
        self.handled.append(event.seq or 0)


async def test_a_subscriber_behind_goes_on_from_the_live_events_it_kept(broker: Broker,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Events published while a subscriber has no room are kept (up to a bound)
    and taken from there, not read back from the journal; past the bound, the
    rest is read from the journal. Each is delivered once, in order."""
    from hookbus.bus.delivery import gaps, lanes

    monkeypatch.setattr(lanes, "MAX_INFLIGHT", 5)
    monkeypatch.setattr(gaps, "KEEP_EVENTS", 30)
    fetches: list[int] = []
    fetch = broker._handlers[b"FETCH"]

    async def counted(info: Any, bodies: list[bytes]) -> Any:
        fetches.append(info.after)
        return await fetch(info, bodies)

    broker._handlers[b"FETCH"] = counted
    sub = Gate(SubscriberConfig(name="gate", kind="gate"))
    async with following(broker, sub):
        before = len(fetches)
        await ingest(broker, *range(1, 31))  # 5 taken, 25 kept while the subscriber has no room
        sub.open.set()
        await wait_for(lambda: len(sub.handled) >= 30, 10, "30 events")
        assert sub.handled == list(range(1, 31)) and fetches[before:] == []  # none read back from the journal

        sub.open.clear()
        await ingest(broker, *range(31, 91))  # 5 taken, 30 kept, 25 past the bound
        sub.open.set()
        await wait_for(lambda: len(sub.handled) >= 90, 10, "90 events")
        assert sub.handled == list(range(1, 91))
        assert fetches[before:] == [65]  # only what was past the bound, from the journal


async def test_a_live_message_of_another_shape_is_skipped_by_a_subscriber_on_the_socket(broker: Broker) -> None:
    """A subscriber in its own process reads live messages frame by frame; one
    with more frames than the protocol's must not shift the ones after it."""
    sub = Batches(SubscriberConfig(name="socket", kind="many"))
    async with following(broker, sub, in_memory=False):
        await ingest(broker, 1)
        await wait_for(lambda: sub.singles == [1], 10, "the first event, live")
        assert broker._xpub is not None
        broker._xpub.send_multipart([TYPE.encode(), protocol.seq_bytes(2), b"{}", b"a fourth frame"])
        await ingest(broker, 2, 3)  # seqs 2 and 3: the odd message claimed seq 2 and is ignored
        await wait_for(lambda: len(sub.singles) >= 3, 10, "the next events")
        assert sub.singles == [1, 2, 3]
        assert all(e.data["n"] == n for e, n in zip(sub.events, (1, 2, 3), strict=True))


async def test_events_go_out_on_the_socket_only_while_a_socket_subscriber_listens(broker: Broker) -> None:
    """In-process subscribers are handed every event; the XPUB socket carries them
    from the moment a SUB socket subscribes until its last topic is dropped."""
    heard: list[int] = []
    broker.attach(lambda type_, seq, body: heard.append(seq) if type_ else None)
    await ingest(broker, 1)
    assert heard == [1] and broker.counters["published"] == 0  # nothing sent on the socket

    sub = broker.ctx.socket(zmq.SUB)
    configure_client_socket(sub, broker.bus)  # the credential data_dir set up for this user
    sub.subscribe(b"backup.task.")
    sub.connect(broker.bus.publish)
    try:
        await wait_for(lambda: broker._topics == {b"backup.task."}, 10, "the subscription")
        await ingest(broker, 2)
        topic, seq, body = await asyncio.wait_for(sub.recv_multipart(), 10)
        assert (topic, protocol.seq_from(seq), orjson.loads(body)["data"]["n"]) == (TYPE.encode(), 2, 2)
        assert heard == [1, 2] and broker.counters["published"] == 1
    finally:
        sub.close(linger=0)
    await wait_for(lambda: not broker._topics, 10, "the unsubscription when the socket closed")
    await ingest(broker, 3)
    assert heard == [1, 2, 3] and broker.counters["published"] == 1


async def test_a_commit_settled_after_stop_sends_nothing_on_the_closed_socket(broker: Broker) -> None:
    """The journal can settle a commit after the broker stopped (serve's shutdown);
    its fan-out must not touch the shadow of the closed XPUB socket."""
    sub = broker.ctx.socket(zmq.SUB)
    configure_client_socket(sub, broker.bus)
    sub.subscribe(b"")
    sub.connect(broker.bus.publish)
    try:
        await wait_for(lambda: bool(broker._topics), 10, "the subscription")
        await broker.stop()
        broker._publish(TYPE, 99, b"{}")  # what _fan_out does when a late commit settles
        assert broker.head == 99 and broker.counters["published"] == 0
    finally:
        sub.close(linger=0)


READS = frozenset({"read", "get", "cursors", "retries", "dead_letters", "count_dead", "event_count"})


class Watched:
    """The broker's journal, noting which of its blocking reads were called on the event loop's thread."""

    def __init__(self, journal: Journal) -> None:
        self.journal, self.loop_thread = journal, threading.current_thread()
        self.called: set[str] = set()
        self.on_loop: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.journal, name)
        if name not in READS:
            return value

        def read(*args: Any, **kwargs: Any) -> Any:
            self.called.add(name)
            if threading.current_thread() is self.loop_thread:
                self.on_loop.append(name)
            return value(*args, **kwargs)

        return read


class RefusesFirst(Subscriber):
    """Refuses each event the first time (permanently: dead-lettered at once), takes it the second."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.seen: list[int] = []

    async def handle(self, event: Event) -> None:
        self.seen.append(event.data["n"])
        if self.seen.count(event.data["n"]) == 1:
            raise DeliveryError("not this time", permanent=True)


async def test_the_broker_reads_the_journal_off_the_event_loop(broker: Broker) -> None:
    """HELLO, PING, DEAD and REPLAYS read the journal in a thread, as FETCH and STATUS do."""
    watched = Watched(broker.journal)  # type: ignore[arg-type]
    broker.journal = watched  # type: ignore[assignment]
    sub = RefusesFirst(SubscriberConfig(name="twice", kind="twice"))
    async with following(broker, sub):
        await ingest(broker, 1)
        await wait_for(lambda: watched.journal.dead_letters("twice"), 10, "the event dead-lettered")
        assert await watched.journal.mark_replay(None, "twice") == 1
        await wait_for(lambda: sub.seen == [1, 1], 10, "the event replayed")
    assert {"cursors", "retries", "get", "dead_letters", "count_dead"} <= watched.called
    assert watched.on_loop == []
