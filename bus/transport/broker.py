"""The broker: owns the journal, acks publishers after commit, fans out on XPUB.

Control (ROUTER): publish with ack, catch-up reads, cursors, retry state, dead
letters, status, replay. Live (XPUB): `[type, seq, body]` for every accepted
event, plus a heartbeat carrying the journal head so a subscriber notices a
gap (or a silent broker) within a heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

import orjson
import zmq
import zmq.asyncio

from hookbus.bus.events.event import Event, EventError, as_stored, clean_event, compile_globs, fit_to_size, new_event, parse_event
from hookbus.bus.events.host import host_name
from hookbus.bus.settings import BusSettings, is_local_endpoint
from hookbus.bus.store.base import (
    Accepted,
    DeadLetter,
    DeliveredRun,
    Delivery,
    JobAppend,
    JournalError,
    LeaseHeld,
    OpenJob,
    Store,
    StoredEvent,
)
from hookbus.bus.transport import commands, protocol
from hookbus.bus.transport.commands import BadRequest
from hookbus.bus.transport.credentials import authorized, ensure_keys, key_folders
from hookbus.bus.transport.curve import apply_server
from hookbus.bus.transport.zap import CONTROL_DOMAIN, LIVE_DOMAIN, ZapHandler

log = logging.getLogger("hookbus.broker")

DELIVERY_FAILED = "hookbus.delivery.failed"
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_LAST = int(zmq.NOBLOCK)

# Memory stays bounded whatever clients send or fail to read (DESIGN §13):
MAX_REQUESTS = 128  # control requests in progress; beyond, the ROUTER queues, then its peers' sends block
MAX_READS = 16  # of them, requests with large answers (FETCH, REPLAYS, STATUS): ≤ 16 × 512 KiB held
READS = frozenset({protocol.FETCH, protocol.REPLAYS, protocol.STATUS})
CONTROL_RCVHWM = 100  # requests queued per connection before its sender is slowed (TCP backpressure)
CONTROL_SNDHWM = 32  # replies queued per connection; beyond, a reply waits for room (a publisher's window
REPLY_PATIENCE = 1.0  # of acks settles at once) at most this long, then is dropped (the client resends)
FETCH_REPLY_BYTES = 512 << 10  # event bytes in one FETCH answer (at least one event): ≤ 16 MiB queued per connection
LIVE_BODY_MAX = 4 << 10  # larger events go live as a bare "head is seq" notice: subscribers read them from the journal
XPUB_QUEUE_BYTES = 32 << 20  # per subscriber connection that does not read: SNDHWM = this / LIVE_BODY_MAX
SUBSCRIPTION_MAX = 4096  # an XPUB subscription message is a topic prefix


class Named(Protocol):
    @property
    def name(self) -> str: ...


class BrokerConfig(Protocol):
    """What the broker reads of the configuration: the bus's settings, and which
    subscribers are configured (status lists them before they first connect)."""

    @property
    def bus(self) -> BusSettings: ...

    @property
    def subscribers(self) -> Sequence[Named]: ...


class Broker:
    def __init__(self, config: BrokerConfig, journal: Store, ctx: zmq.asyncio.Context | None = None) -> None:
        self.config = config
        self.bus = config.bus
        self.journal = journal
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[None]] = set()
        self._router: zmq.asyncio.Socket | None = None
        # XPUB is used through a plain (not asyncio) shadow of the socket, never
        # blocking: an asyncio socket's send costs a Future and an events check per
        # message, a large share of the broker's time per event.
        self._xpub: zmq.Socket[bytes] | None = None
        self._xpub_async: zmq.asyncio.Socket | None = None  # the socket itself: awaits subscriptions
        # Topics some socket subscriber listens to (XPUB tells the first subscription
        # to a topic and the last unsubscription). With none, nothing is sent live:
        # in-process subscribers are handed events directly, and a subscriber that
        # connects later starts from its cursor in the journal anyway.
        self._topics: set[bytes] = set()
        self._zap: ZapHandler | None = None
        self._slots = asyncio.Semaphore(MAX_REQUESTS)
        self._reads = asyncio.Semaphore(MAX_READS)
        self._replying = True  # until stop(): replies settled later are not sent on a closed socket
        # Subscribers running in this process: handed every event fanned out (see runtime.LiveFeed).
        self._listeners: list[Callable[[str | None, int, bytes], None]] = []
        # The silences runners hold notifications for (bus/checks keeps them; told with HELLO and PING).
        self.silences: Callable[[], list[dict[str, Any]]] = list
        self.seen: dict[str, tuple[float, dict[str, Any]]] = {}  # subscriber → (last ping, stats)
        self.runners: dict[str, str] = {}  # subscriber → the runner that holds its lease, as last confirmed
        # The last seq sent on XPUB: what subscribers are told is the head. The journal's
        # own last_seq runs ahead of it between a commit and its publication, and a
        # subscriber told of that would read from the journal what is about to come live.
        self.head = journal.last_seq
        # Several nodes on one store (DESIGN §12): events other nodes commit are read from the store
        # when they say so (Store.watch, LISTEN/NOTIFY), and on every heartbeat, and fanned out here
        # like this node's own. Up to `_relayed` every seq went out; above it, `_local` holds the
        # seqs this node published itself (not to be sent twice).
        self.shared = config.bus.on_postgres
        self._relayed = journal.last_seq
        self._local: set[int] = set()
        self._relay_wake = asyncio.Event()
        self.retention_here = True  # prune from start(); with several nodes, one prunes under a lease (prune_loop)
        self.counters: dict[str, int] = {"accepted": 0, "duplicates": 0, "rejected": 0, "published": 0,
                                       "relayed": 0}
        self._handlers: dict[bytes, Callable[[Any, list[bytes]], Awaitable[tuple[Any, list[bytes]]]]] = {
            protocol.PUB: self._on_pub,
            protocol.FETCH: self._on_fetch,
            protocol.HELLO: self._on_hello,
            protocol.ACK: self._on_ack,
            protocol.RETRY: self._on_retry,
            protocol.DEAD: self._on_dead,
            protocol.PING: self._on_ping,
            protocol.REPLAYS: self._on_replays,
            protocol.REPLAYED: self._on_replayed,
            protocol.STATUS: self._on_status,
            protocol.REPLAY: self._on_replay,
            protocol.TRAIL: self._on_trail,
        }

    # -- life cycle --------------------------------------------------------

    async def start(self) -> None:
        for key, endpoint in (("control", self.bus.own_control), ("publish", self.bus.publish)):
            if not is_local_endpoint(endpoint) and not self.bus.curve_secret_key:
                raise OSError(f"bus.{key}: {endpoint} is not a loopback address; the broker serves "
                              "beyond loopback only with keys of its own: set bus.curve_secret_key and bus.curve_authorized_keys")
        if self.bus.curve_authorized_keys is not None and not self.bus.curve_authorized_keys.is_dir():
            raise OSError("bus.curve_authorized_keys: must name a folder of client public certificates")
        keys = await asyncio.to_thread(ensure_keys, self.bus)
        router = self.ctx.socket(zmq.ROUTER)
        xpub = self.ctx.socket(zmq.XPUB)
        self._configure(router, xpub)
        for sock in (router, xpub):
            apply_server(sock, keys)
        self._zap = ZapHandler(self.ctx, lambda: authorized(self.bus), [f for f, _ in key_folders(self.bus)])
        try:
            self._zap.start()
            router.bind(self.bus.own_control)
            xpub.bind(self.bus.publish)
        except zmq.ZMQError as exc:
            router.close()
            xpub.close()
            await self._zap.stop()
            raise OSError(f"cannot bind bus.control {self.bus.own_control} / bus.publish {self.bus.publish}: {exc}") from None
        self._router, self._xpub_async, self._xpub = router, xpub, zmq.Socket.shadow(xpub.underlying)
        self._tasks = [
            asyncio.create_task(self._serve_control(), name="broker-control"),
            asyncio.create_task(self._heartbeat(), name="broker-heartbeat"),
            asyncio.create_task(self._drain_subscriptions(), name="broker-xpub"),
        ]
        if self.shared:
            loop = asyncio.get_running_loop()
            self.journal.watch(lambda: self._wake_relay(loop))
            self._tasks.append(asyncio.create_task(self._relay(), name="broker-relay"))
        if self.retention_here:
            self._tasks.append(asyncio.create_task(self.prune_loop(), name="broker-prune"))
        log.info("broker: control %s, publish %s, journal %s (head %d)",
                 self.bus.own_control, self.bus.publish, self.journal.location, self.journal.last_seq)

    def _configure(self, router: zmq.asyncio.Socket, xpub: zmq.asyncio.Socket) -> None:
        """Bounds on every queue and message (DESIGN §13); ZAP domains for the roles."""
        for sock in (router, xpub):
            sock.linger = 0
        router.setsockopt(zmq.MAXMSGSIZE, protocol.max_frame_bytes(self.bus.max_event_bytes))
        router.setsockopt(zmq.RCVHWM, CONTROL_RCVHWM)
        router.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full queue says so (EAGAIN) instead of dropping silently
        router.zap_domain = CONTROL_DOMAIN
        xpub.setsockopt(zmq.MAXMSGSIZE, SUBSCRIPTION_MAX)
        xpub.setsockopt(zmq.SNDHWM, XPUB_QUEUE_BYTES // LIVE_BODY_MAX)
        xpub.setsockopt(zmq.RCVHWM, 1000)
        xpub.zap_domain = LIVE_DOMAIN

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A commit settled after this point must not send through the shadow of a closed socket.
        self._topics.clear()
        self._xpub = None
        self._replying = False
        for sock in (self._router, self._xpub_async):
            if sock is not None:
                sock.close(linger=0)
        if self._zap is not None:
            await self._zap.stop()

    # -- ingest --------------------------------------------------------------

    def encode(self, event: Event) -> bytes:
        """Return the event's stored form, within [bus] max_event_bytes: the JSON
        it arrived as when that fits, else its own encoding with long strings cut."""
        clean_event(event)  # §13: no credential from any way in reaches the journal
        if event.stored is not None and len(event.stored) <= self.bus.max_event_bytes:
            return event.stored
        event.stored = None
        return fit_to_size(event, self.bus.max_event_bytes)

    def ingest(self, events: list[Event]) -> asyncio.Future[list[Accepted]]:
        """Commit events to the journal, then publish the new ones; await the
        result. Raise EventError for an event over the size limit; the future
        raises JournalError if the journal cannot commit. (A function returning
        the journal's future, not a coroutine: one frame less on every ingest.)"""
        encoded = [(event, self.encode(event)) for event in events]
        return self.journal.append(encoded, lambda accepted: self._fan_out(encoded, accepted))

    def ingest_with_job(self, key: str, make: Callable[[OpenJob | None], list[Event]], *,
                        start: OpenJob | None = None, finish: tuple[str, str] | None = None) -> asyncio.Future[JobAppend]:
        """Commit the events `make(job)` builds for the open job under key, and keep or
        close that job, in one write of the journal (`Store.append_with_job`); then
        publish them as `ingest` does. The events are made and encoded on the
        journal's writer; an EventError from them (an event over the size limit)
        is the future's exception."""
        return self.journal.append_with_job(
            key, lambda job: [(event, self.encode(event)) for event in make(job)], start=start, finish=finish,
            then=lambda done: self._fan_out(done.events, done.accepted))

    def _fan_out(self, encoded: list[tuple[Event, bytes]], accepted: list[Accepted]) -> None:
        """Publish what was just committed (not repeats), in commit order."""
        for (event, body), acc in zip(encoded, accepted, strict=True):
            if acc.duplicate:
                self.counters["duplicates"] += 1
                continue
            self.counters["accepted"] += 1
            self._publish(event.type, acc.seq, body)

    def attach(self, listener: Callable[[str | None, int, bytes], None]) -> None:
        self._listeners.append(listener)

    def detach(self, listener: Callable[[str | None, int, bytes], None]) -> None:
        self._listeners.remove(listener)

    def _publish(self, type_: str, seq: int, body: bytes, relayed: bool = False) -> None:
        self.head = max(self.head, seq)
        if self.shared and not relayed and seq > self._relayed:
            self._local.add(seq)
        if self._topics and self._xpub is not None:
            # Three sends with plain int flags: send_multipart combines enum flags per frame, in Python.
            # (At the high-water mark XPUB drops without a word; subscribers read the gap from the journal.)
            if len(body) > LIVE_BODY_MAX:  # not queued per subscriber: "the head is seq", read from the journal
                self._xpub.send(protocol.HEARTBEAT_TOPIC, _MORE)
                self._xpub.send(protocol.seq_bytes(seq), _LAST)
            else:
                self._xpub.send(type_.encode(), _MORE)
                self._xpub.send(protocol.seq_bytes(seq), _MORE)
                self._xpub.send(body, _LAST)
            self.counters["published"] += 1
        self._tell_listeners(type_, seq, body)

    def _tell_listeners(self, type_: str | None, seq: int, body: bytes) -> None:
        for listener in self._listeners:
            try:
                listener(type_, seq, body)
            except Exception:  # the event is committed: a subscriber's fault must not fail its ingest
                log.exception("an in-process subscriber failed to take seq %d", seq)

    # -- control socket -----------------------------------------------------

    async def _serve_control(self) -> None:
        """Take requests while fewer than MAX_REQUESTS are in progress: a flood
        waits in the ROUTER's bounded queue, then in its sender's."""
        assert self._router is not None
        while True:
            await self._slots.acquire()
            try:
                parts = await self._router.recv_multipart(copy=False)
            except BaseException:
                self._slots.release()
                raise
            try:
                role: str | None = str(parts[0].get("User-Id"))  # set by the ZAP handler: the connection's role
            except zmq.ZMQError:  # no ZAP verdict on this connection: it may do nothing
                role = None
            if len(parts) < 4:
                self._slots.release()
                continue
            task = asyncio.create_task(self._answer([p.bytes for p in parts], role))
            self._answering.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._answering.discard)

    async def _answer(self, frames: list[bytes], role: str | None) -> None:
        try:
            if frames[1] in READS:  # large answers: few at a time, from the read to the send
                async with self._reads:
                    await self._reply(frames, role)
            else:
                await self._reply(frames, role)
        finally:
            self._slots.release()

    async def _reply(self, frames: list[bytes], role: str | None) -> None:
        ident, command, req, payload, bodies = frames[0], frames[1], frames[2], frames[3], frames[4:]
        try:
            if not commands.may(role, command):
                raise BadRequest(f"not allowed: {command[:32]!r} needs the operate right; this key may only publish"
                                 if role else "not allowed: no role", "command")
            request = commands.parse(command, orjson.loads(payload) if payload else {})
            info, out = await self._handlers[command](request, bodies)
            reply = [ident, protocol.OK, req, orjson.dumps(info), *out]
        except LeaseHeld as exc:
            reply = [ident, protocol.ERR, req, orjson.dumps({"error": str(exc)})]
        except BadRequest as exc:
            reply = [ident, protocol.ERR, req, orjson.dumps({"error": f"bad request: {exc}", "field": exc.field})]
        except EventError as exc:
            self.counters["rejected"] += 1
            reply = [ident, protocol.ERR, req, orjson.dumps({"error": str(exc), "field": exc.field, **getattr(exc, "extra", {})})]
        except (JournalError, sqlite3.Error) as exc:  # the journal's trouble, not the request's: try again
            reply = [ident, protocol.ERR, req, orjson.dumps({"error": f"journal: {exc}", "retry": True})]
        except (ValueError, KeyError, TypeError, ArithmeticError, orjson.JSONDecodeError) as exc:
            reply = [ident, protocol.ERR, req, orjson.dumps({"error": f"bad request: {exc}"})]
        except Exception as exc:  # answer anyway: a client waiting on a reply must not hang
            log.exception("control command %r failed", command)
            reply = [ident, protocol.ERR, req, orjson.dumps({"error": f"internal error: {type(exc).__name__}"})]
        await self._send_reply(reply)

    async def _send_reply(self, reply: list[bytes]) -> None:
        """Send a reply when its connection's queue has room: a burst waits a moment;
        a client that does not read gets its replies dropped after REPLY_PATIENCE,
        so its queue (and the broker's memory) stays bounded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLY_PATIENCE
        pause = 0.001
        while self._replying and self._router is not None:
            try:
                # Through the asyncio socket (never its plain shadow): it must see what a send
                # does to the socket's edge-triggered wake-ups, or a waiting recv could sleep on.
                await self._router.send_multipart(reply, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                if loop.time() >= deadline:
                    log.debug("control reply dropped: the client is not reading")
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
            except zmq.ZMQError as exc:  # EHOSTUNREACH: the client is gone
                log.debug("control reply not sent: %s", exc)
                return

    async def _on_pub(self, _: commands.Empty, bodies: list[bytes]) -> tuple[Any, list[bytes]]:
        events = []
        for index, body in enumerate(bodies):
            try:
                event = parse_event(orjson.loads(body))
                event.stored = as_stored(body)
                events.append(event)
            except orjson.JSONDecodeError:
                exc = EventError("event", "not valid JSON")
                exc.extra = {"index": index}  # type: ignore[attr-defined]
                raise exc from None
            except EventError as exc:
                exc.extra = {"index": index}  # type: ignore[attr-defined]
                raise
        accepted = await self.ingest(events)
        return {"accepted": [{"id": a.id, "seq": a.seq, "duplicate": a.duplicate} for a in accepted]}, []

    async def _on_fetch(self, req: commands.Fetch, _: list[bytes]) -> tuple[Any, list[bytes]]:
        matcher = compile_globs(req.events).match if req.events is not None else None
        stored, scanned = await asyncio.to_thread(self.journal.read, req.after, req.limit, matcher,
                                                  max_bytes=FETCH_REPLY_BYTES)  # the rest next time
        meta = {"seqs": [e.seq for e in stored], "scanned_to": scanned, "head": self.head}
        return meta, [e.body for e in stored]

    async def _on_hello(self, req: commands.Hello, _: list[bytes]) -> tuple[Any, list[bytes]]:
        name = req.name
        if req.runner:  # one live runner per name: a second would deliver everything twice
            await self.journal.take_lease(name, req.runner, self._lease_ttl())
            self.runners[name] = req.runner
        cursor, epoch = (await asyncio.to_thread(self.journal.cursors)).get(name, (None, 0))
        if cursor is None:
            cursor = self.journal.last_seq if req.start == "now" else 0
            await self.journal.set_cursor(name, cursor, epoch)  # before reading retries: it drops those up to cursor
        in_flight = await asyncio.to_thread(self.journal.retries, name)
        retries = [[seq, attempts, next_at] for _, seq, attempts, next_at, _ in in_flight]
        self.seen[name] = (time.time(), {})
        return {"cursor": cursor, "epoch": epoch, "head": self.head, "retries": retries,
                "journal": self.journal.identity, "silences": self.silences()}, []

    async def _on_ack(self, req: commands.Ack, _: list[bytes]) -> tuple[Any, list[bytes]]:
        if req.cursor > self.journal.last_seq:  # a cursor past the head would skip events not yet written
            raise BadRequest(f"cursor: {req.cursor} is beyond the journal head {self.journal.last_seq}", "cursor")
        ok = await self.journal.set_cursor(req.name, req.cursor, req.epoch)
        return {"ok": ok}, []

    async def _on_retry(self, req: commands.Retry, _: list[bytes]) -> tuple[Any, list[bytes]]:
        if req.attempts == 0:
            await self.journal.clear_retry(req.name, req.seq)
        else:
            self._check_seq(req.seq)
            await self.journal.set_retry(req.name, req.seq, req.attempts, req.next_at, req.error)
        return {}, []

    def _check_seq(self, seq: int) -> None:
        if not 1 <= seq <= self.journal.last_seq:
            raise BadRequest(f"seq: {seq} is not in the journal (head {self.journal.last_seq})", "seq")

    async def _on_dead(self, req: commands.Dead, _: list[bytes]) -> tuple[Any, list[bytes]]:
        self._check_seq(req.seq)
        name, seq, attempts, error = req.name, req.seq, req.attempts, req.error
        stored = await asyncio.to_thread(self.journal.get, seq)
        failure = None
        if stored is not None and stored.type != DELIVERY_FAILED:  # never alert on a failed alert: no loops
            original = orjson.loads(stored.body)
            event = new_event(
                DELIVERY_FAILED,
                {"subscriber": name, "event_id": original.get("id"), "event_type": stored.type, "event_seq": seq,
                 "event_source": original.get("source"), "attempts": attempts, "error": error,
                 "job_id": (original.get("data") or {}).get("job_id") if isinstance(original.get("data"), dict) else None},
                source=f"hookbus://{host_name()}/subscribers/{name}",
                subject=original.get("subject"),
                id_=f"dead-letter:{seq}",
            )
            failure = (event, self.encode(event))
        dead_id, accepted = await self.journal.add_dead_letter(name, seq, attempts, error, failure)
        log.warning("subscriber %s: event seq %d dead-lettered after %d attempt(s): %s", name, seq, attempts, error)
        for acc in accepted:
            if not acc.duplicate and failure is not None:
                self.counters["accepted"] += 1
                self._publish(DELIVERY_FAILED, acc.seq, failure[1])
        return {"dead_letter": dead_id}, []

    async def _on_ping(self, req: commands.Ping, _: list[bytes]) -> tuple[Any, list[bytes]]:
        name = req.name
        self.seen[name] = (time.time(), dict(req.stats))
        if req.runner:
            await self.journal.renew_lease(name, req.runner, self._lease_ttl())
        cursor, epoch, replays = await asyncio.to_thread(self._ping_state, name)
        return {"head": self.head, "epoch": epoch, "cursor": cursor, "replays": replays, "silences": self.silences()}, []

    def _ping_state(self, name: str) -> tuple[int, int, int]:
        """A subscriber's cursor, epoch and dead letters queued for replay (blocking: run in a thread)."""
        cursor, epoch = self.journal.cursors().get(name, (0, 0))
        return cursor, epoch, self.journal.count_dead("replaying").get(name, 0)

    def _lease_ttl(self) -> float:
        return 3 * self.bus.heartbeat + 1  # as long as status counts a runner connected

    async def _on_replays(self, req: commands.Replays, _: list[bytes]) -> tuple[Any, list[bytes]]:
        items, bodies = [], []
        for dead, stored in await asyncio.to_thread(self._replaying, req.name, req.limit):
            if stored is None:
                await self.journal.finish_replay(dead.id, False, "event no longer in the journal")
                continue
            items.append({"id": dead.id, "seq": dead.seq, "attempts": dead.attempts})
            bodies.append(stored.body)
        return {"items": items}, bodies

    def _replaying(self, name: str, limit: int) -> list[tuple[DeadLetter, StoredEvent | None]]:
        """Dead letters queued for replay to `name`, each with its event (blocking: run in a thread)."""
        return [(dead, self.journal.get(dead.seq)) for dead in self.journal.dead_letters(name, "replaying", limit=limit)]

    async def _on_replayed(self, req: commands.Replayed, _: list[bytes]) -> tuple[Any, list[bytes]]:
        await self.journal.finish_replay(req.id, req.ok, req.error)
        return {}, []

    async def _on_replay(self, req: commands.Replay, _: list[bytes]) -> tuple[Any, list[bytes]]:
        subscriber = req.subscriber
        if req.from_seq is not None:
            if not subscriber:
                raise BadRequest("subscriber: replay from a sequence number needs a subscriber", "subscriber")
            epoch = await self.journal.reset_cursor(subscriber, min(req.from_seq - 1, self.journal.last_seq))
            return {"subscriber": subscriber, "from_seq": req.from_seq, "epoch": epoch}, []
        queued = await self.journal.mark_replay(list(req.ids) if req.ids else None, subscriber)
        return {"queued": queued}, []

    async def _on_trail(self, req: commands.Trail, _: list[bytes]) -> tuple[Any, list[bytes]]:
        """Records of the delivery trail, from the runner that holds the subscriber's name: one store write."""
        name = req.name
        if self.runners.get(name) != req.runner:  # not the one that said HELLO here (or this broker restarted since)
            if await asyncio.to_thread(self.journal.lease_holder, name) != req.runner:
                raise BadRequest(f"runner: {name} is not held by this runner", "runner")
            self.runners[name] = req.runner
        head = self.journal.last_seq
        node = self.bus.node_name  # the runner reports to its own node's broker
        records = [Delivery(seq, name, attempt, float(at), outcome, status, reason, node)
                   for seq, attempt, at, outcome, status, reason in req.records if seq <= head]
        runs = [DeliveredRun(name, first, last, float(at), status, node)
                for first, last, at, status in req.delivered if last <= head]
        await self.journal.record_deliveries(records, runs)
        return {"recorded": len(records) + sum(r.last_seq - r.first_seq + 1 for r in runs)}, []

    async def _on_status(self, _: commands.Empty, __: list[bytes]) -> tuple[Any, list[bytes]]:
        return await asyncio.to_thread(self.status), []

    def nodes(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The nodes of the bus (DESIGN §12): name, seconds since its last heartbeat, alive (within
        [bus] lease); and what runs where: claim (`subscriber:NAME`, `checks`, `retention`) → node,
        for the claims held now."""
        lease = self.bus.lease
        nodes = [{"name": n.node, "last_heartbeat_s": round(n.age_s, 1), "alive": n.age_s < lease,
                  "started_at": n.started_at, "this": n.node == self.bus.node_name} for n in self.journal.nodes()]
        work = {c.name: c.node for c in self.journal.claims() if c.left_s > 0}
        return nodes, work

    def status(self) -> dict[str, Any]:
        """Subscribers, cursors, lag, retries in flight, dead letters; the nodes and what each runs."""
        nodes, work = self.nodes()
        head = self.journal.last_seq
        cursors = self.journal.cursors()
        dead = self.journal.count_dead()
        retries: dict[str, int] = {}
        for name, *_ in self.journal.retries():
            retries[name] = retries.get(name, 0) + 1
        names = [s.name for s in self.config.subscribers] + sorted(set(cursors) - {s.name for s in self.config.subscribers})
        now = time.time()
        subs = []
        for name in names:
            cursor = cursors.get(name, (0, 0))[0]
            last, stats = self.seen.get(name, (None, {}))
            node = work.get(f"subscriber:{name}")
            subs.append({
                "name": name,
                "cursor": cursor,
                "lag": head - cursor,
                # pinged here, or running on another node of the bus (which the pings go to)
                "connected": (last is not None and now - last < self._lease_ttl())
                             or (node is not None and node != self.bus.node_name),
                "node": node,
                "last_seen_s": round(now - last, 1) if last else None,
                "retries_in_flight": retries.get(name, 0),
                "dead_letters": dead.get(name, 0),
                "stats": stats,
            })
        letters = [
            {"id": d.id, "subscriber": d.subscriber, "seq": d.seq, "attempts": d.attempts, "error": d.error,
             "created_at": d.created_at, "state": d.state}
            for d in self.journal.dead_letters(state="dead", limit=100)
        ]
        return {"head": head, "events_retained": self.journal.event_count(), "counters": dict(self.counters),
                "node": self.bus.node_name, "nodes": nodes, "work": work, "subscribers": subs, "dead_letters": letters}

    # -- background ---------------------------------------------------------

    async def _heartbeat(self) -> None:
        assert self._xpub is not None
        while True:
            head = self.head
            try:
                self._xpub.send_multipart([protocol.HEARTBEAT_TOPIC, protocol.seq_bytes(head)], flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
            self._tell_listeners(None, head, b"")
            self._read_subscriptions()
            if self.shared:
                self._relay_wake.set()  # a notice lost (the listener reconnecting) waits a heartbeat at most
            await asyncio.sleep(self.bus.heartbeat)

    def _wake_relay(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self._relay_wake.set)  # from the store's listener thread

    async def _relay(self) -> None:
        """Fan out what other nodes committed, in seq order, as it is woken (and every heartbeat)."""
        while True:
            await self._relay_wake.wait()
            self._relay_wake.clear()
            try:
                while await self._relay_some():
                    pass
            except JournalError as exc:  # the store down: the next wake-up or heartbeat tries again
                log.debug("relay: %s", exc)

    async def _relay_some(self) -> bool:
        """Relay one batch past `_relayed`; False once there was nothing more."""
        stored, scanned = await asyncio.to_thread(self.journal.read, self._relayed, 1000, None,
                                                  max_bytes=FETCH_REPLY_BYTES)
        for item in stored:
            if item.seq not in self._local and item.seq > self._relayed:
                self.counters["relayed"] += 1
                self._publish(item.type, item.seq, item.body, relayed=True)
        if scanned > self._relayed:
            self._relayed = scanned
            self._local = {seq for seq in self._local if seq > scanned}
        return bool(stored)

    async def _drain_subscriptions(self) -> None:
        """Keep `_topics` as socket subscribers subscribe and unsubscribe."""
        assert self._xpub_async is not None
        while True:
            self._note_subscription(await self._xpub_async.recv())

    def _read_subscriptions(self) -> None:
        """Read what subscriptions are waiting, through the plain shadow. The awaited
        recv alone can miss one: a send through the shadow may take in the message
        and leave no wake-up on the socket's file descriptor for the event loop."""
        assert self._xpub is not None
        while cast(int, self._xpub.get(zmq.EVENTS)) & zmq.POLLIN:
            self._note_subscription(self._xpub.recv(zmq.NOBLOCK))

    def _note_subscription(self, frame: bytes) -> None:
        if frame[:1] == b"\x01":
            self._topics.add(frame[1:])
        elif frame[:1] == b"\x00":
            self._topics.discard(frame[1:])
        log.debug("xpub %r; topics listened to: %d", frame, len(self._topics))

    async def prune_loop(self) -> None:
        retention_s = self.bus.retention_days * 86400
        while True:
            # Often enough that the journal stays near its retention, never more than hourly.
            await asyncio.sleep(min(3600.0, max(1.0, retention_s / 10)))
            try:
                removed = await self.journal.prune(retention_s)
                if removed:
                    log.info("journal: pruned %d delivered event(s) older than %g days", removed, self.bus.retention_days)
            except JournalError as exc:
                log.error("journal prune failed: %s", exc)
