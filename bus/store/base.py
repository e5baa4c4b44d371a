"""What the rest of hookbus asks of its event store, and the values it answers with.

`Store` is the one interface: the SQLite journal (`journal.py`) implements it
today; a PostgreSQL store (DESIGN §12) is to implement the same. Nothing
outside `bus/store` runs SQL or knows a table.

Writes are awaited and settled only once durable. Reads block (a query on
disk): call them from a thread (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from hookbus.bus.events.event import Event
from hookbus.bus.events.silences import Silence

# A start whose finish never came is forgotten after this long, so rows of
# one-off run ids (`?rid=`) do not pile up.
FORGET_AFTER_S = 30 * 86400


class JournalError(RuntimeError):
    """The journal could not commit (disk full, I/O error, closed)."""


class StoreUnavailable(JournalError):
    """The store cannot be reached now (PostgreSQL down or failing over): worth trying again."""


class LeaseHeld(ValueError):
    """Another live runner holds this subscriber name."""


class Accepted(NamedTuple):  # made once per event by the writer: a tuple is made in half the time
    id: str
    seq: int
    duplicate: bool


@dataclass(slots=True, frozen=True)
class StoredEvent:
    seq: int
    type: str
    body: bytes
    at: float = 0.0  # when it was accepted (epoch seconds)


@dataclass(slots=True, frozen=True)
class DeadLetter:
    id: int
    subscriber: str
    seq: int
    attempts: int
    error: str
    created_at: float
    state: str


# What became of one attempt at handing an event to a subscriber (the delivery trail, trail.py).
DELIVERED, FAILED, DEAD, SILENCED = "delivered", "failed", "dead", "silenced"
OUTCOMES = (DELIVERED, FAILED, DEAD, SILENCED)


@dataclass(slots=True, frozen=True)
class Delivery:
    """One attempt of the delivery trail: `attempt` counts from 1 (0: not sent, silenced);
    `status` is what the receiver answered (an HTTP status, an exit status), when known;
    `reason` a short, scrubbed text (a failure's error, the silence)."""

    seq: int
    subscriber: str
    attempt: int
    at: float
    outcome: str
    status: int | None = None
    reason: str = ""
    node: str = ""  # the node whose runner made the attempt (DESIGN §12)


@dataclass(slots=True, frozen=True)
class DeliveredRun:
    """The trail's bulk, compactly: every seq from first_seq to last_seq was delivered to
    subscriber at its first attempt, the receiver answering `status`, the last at `at`."""

    subscriber: str
    first_seq: int
    last_seq: int
    at: float
    status: int | None = None
    node: str = ""


@dataclass(frozen=True, slots=True)
class OpenJob:
    """A job a tool reported as started, kept until its finish (adapters/common.py)."""

    job_id: str
    started_at: str


@dataclass(frozen=True, slots=True)
class CheckSnapshot:
    """The checks' saved evaluation (bus/checks): up to which seq, each check's state and each job's runs."""

    seq: int
    states: dict[str, bytes]
    runs: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class NodeBeat:
    """A node of the bus (DESIGN §12) as its last heartbeat left it; `age_s` by the store's clock."""

    node: str
    holder: str
    started_at: float
    age_s: float


@dataclass(frozen=True, slots=True)
class Claim:
    """A named lease (a subscriber's delivery, singleton work): who holds it and for how much longer."""

    name: str
    holder: str
    node: str
    left_s: float  # negative once expired


class JobAppend(NamedTuple):
    """What `Store.append_with_job` committed: the open job the events were made
    for (None when there was none), the events with their JSON bodies, their seqs."""

    job: OpenJob | None
    events: list[tuple[Event, bytes]]
    accepted: list[Accepted]


class Store(Protocol):
    """The durable event log with subscriber cursors, retries, dead letters, the
    delivery trail, runner leases and the adapters' open jobs."""

    @property
    def last_seq(self) -> int:
        """The highest seq committed."""

    @property
    def identity(self) -> int:
        """A random number chosen when the store was created (see subscribers/jsonl.py)."""

    @property
    def location(self) -> str:
        """Where the data is, for logs."""

    # -- writes: settled once on disk ------------------------------------------

    def append(self, events: list[tuple[Event, bytes]],
               then: Callable[[list[Accepted]], None] | None = None) -> asyncio.Future[list[Accepted]]:
        """Commit events (with their JSON bodies); a repeated (source, id) answers its first seq,
        duplicate=True. `then(accepted)` runs on the event loop once durable, in commit order."""

    async def set_cursor(self, subscriber: str, seq: int, epoch: int) -> bool:
        """Move a cursor forward and drop its retries up to seq; False for a stale epoch."""

    async def reset_cursor(self, subscriber: str, seq: int) -> int:
        """Put a cursor at seq (replay from seq+1), drop its retries; return the new epoch."""

    async def set_retry(self, subscriber: str, seq: int, attempts: int, next_at: float, error: str) -> None: ...

    async def clear_retry(self, subscriber: str, seq: int) -> None: ...

    async def add_dead_letter(self, subscriber: str, seq: int, attempts: int, error: str,
                              failure: tuple[Event, bytes] | None) -> tuple[int, list[Accepted]]:
        """Record a dead letter and, in the same commit, the `failure` event; return its id and the event's seqs."""

    async def mark_replay(self, ids: Iterable[int] | None, subscriber: str | None) -> int:
        """Queue dead letters for redelivery (by id, by subscriber, or all); return how many."""

    async def finish_replay(self, dead_id: int, ok: bool, error: str = "") -> None: ...

    async def take_lease(self, subscriber: str, holder: str, ttl: float) -> None:
        """Hold a subscriber name for ttl seconds; raise LeaseHeld when a live runner holds it."""

    async def renew_lease(self, subscriber: str, holder: str, ttl: float) -> None: ...

    async def claim(self, name: str, holder: str, node: str, ttl: float) -> bool:
        """Take or renew the lease `name` for `holder` (of `node`) for ttl seconds by the store's clock;
        True when held, False while another holder's has not expired."""

    async def release(self, name: str, holder: str) -> None:
        """Give up `name`, if holder holds it (a clean stop hands over at once)."""

    async def beat(self, node: str, holder: str, started_at: float) -> None:
        """Record that `node` (this process: `holder`) is alive now."""

    async def prune(self, older_than_s: float) -> int:
        """Delete events older than that which every subscriber has passed; return how many."""

    async def record_deliveries(self, records: list[Delivery], runs: list[DeliveredRun] | None = None) -> None:
        """Add to the delivery trail, in one commit: attempts one by one, and first-attempt
        deliveries as runs of seqs; each (seq, subscriber) keeps its first attempt and its
        last ten. Pruned with the events. `deliveries()` answers both as Delivery records."""

    async def open_job(self, key: str, job: OpenJob) -> None:
        """Keep `job` under `key` (a credential: stored hashed); forget those older than FORGET_AFTER_S."""

    async def find_open_job(self, key: str, finished: tuple[str, str] | None = None) -> OpenJob | None:
        """The open job under key. With `finished` = (source, event id template with `{job_id}`),
        a job whose finished event is already stored counts as closed (and is forgotten)."""

    async def save_checks(self, seq: int, states: dict[str, bytes], runs: dict[str, bytes]) -> None:
        """Save the checks' evaluation up to seq, in one commit."""

    async def add_silence(self, silence: Silence) -> Silence:
        """Keep a silence; return it with its id."""

    async def end_silence(self, silence_id: int, now: float) -> bool:
        """End a running silence now; False when there is none with that id."""

    async def close_job(self, key: str, job_id: str) -> None:
        """Forget the job under key, if it is still `job_id`."""

    def append_with_job(self, key: str, make: Callable[[OpenJob | None], list[tuple[Event, bytes]]], *,
                        start: OpenJob | None = None, finish: tuple[str, str] | None = None,
                        then: Callable[[JobAppend], None] | None = None) -> asyncio.Future[JobAppend]:
        """In one write, atomic with every other: look up the open job under `key`,
        commit the events `make(job)` returns (as `append`), and update the job.

        With `start`, `start` is kept under key (replacing any job there) and
        `make(start)` is called. With `finish` = (source, event id template with
        `{job_id}`), the job found is forgotten in the same commit, and a job whose
        finished event is already stored counts as closed (`find_open_job`). With
        neither, the job is only looked up. `make` runs on the store's writer,
        maybe more than once (a refused neighbour reruns the batch): it must only
        build the events; an exception from it refuses this write alone.
        `then` as for `append`."""

    # -- reads: blocking, call from a thread ------------------------------------

    def read(self, after: int, limit: int, types: Callable[[str], Any] | None = None, scan: int = 5000,
             max_bytes: int | None = None) -> tuple[list[StoredEvent], int]:
        """Up to `limit` events after seq `after` whose type passes `types`, and the seq scanned to."""

    def get(self, seq: int) -> StoredEvent | None: ...

    def load_checks(self) -> CheckSnapshot: ...

    def silences(self, since: float) -> list[Silence]:
        """The silences that end after `since`, oldest first."""

    def deliveries(self, seqs: list[int], subscriber: str | None = None) -> list[Delivery]:
        """The delivery trail of those events (of one subscriber, if given), by seq,
        subscriber, then in the order the attempts were made."""

    def recent_deliveries(self, subscriber: str | None = None, limit: int = 100) -> list[Delivery]:
        """The newest records of the trail (of one subscriber, if given), newest first."""

    def lease_holder(self, subscriber: str) -> str | None:
        """Who holds the subscriber's name (take_lease), if anyone."""

    def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake()` (from any thread) whenever another node commits events: on PostgreSQL by
        LISTEN/NOTIFY; SQLite has one node and never calls it."""

    def nodes(self) -> list[NodeBeat]:
        """Every node that ever beat, by name."""

    def claims(self) -> list[Claim]:
        """Every lease taken with `claim`, by name."""

    def cursors(self) -> dict[str, tuple[int, int]]:
        """Subscriber → (cursor, epoch)."""

    def retries(self, subscriber: str | None = None) -> list[tuple[str, int, int, float, str]]:
        """(subscriber, seq, attempts, next_at, error) of the retries in flight."""

    def dead_letters(self, subscriber: str | None = None, state: str | None = None, limit: int = 1000) -> list[DeadLetter]: ...

    def count_dead(self, state: str = "dead") -> dict[str, int]:
        """Dead letters in `state`, per subscriber."""

    def event_count(self) -> int: ...

    def close(self) -> None: ...
