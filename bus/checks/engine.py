"""The checks, evaluated (DESIGN §10): one task in the broker's process reads the
journal after its saved seq, feeds every check the runs its job reports, keeps
one schedule of due times for all of them (no timer per check), and publishes
`backup.check.down`, `backup.check.up` and `backup.job.anomaly`.

Exactly once: the state is a function of the journal. Each evaluation step
publishes its announcements, then saves the states with the seq it reached, in
one commit. After a crash between the two, the same history is evaluated again
from the saved seq and yields the same announcements with the same ids, which
the journal keeps once per (source, id): nothing is lost, nothing doubled. A
change that fell due while hookbus was stopped is found at start.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from hookbus.bus.checks import anomaly, schedule
from hookbus.bus.checks.silences import Silences
from hookbus.bus.checks.state import GOOD, Alert, Run, State, Status, advance, next_change, on_run, pause, resume
from hookbus.bus.events.event import Event
from hookbus.bus.events.silences import Silence
from hookbus.bus.events.times import rfc3339
from hookbus.bus.settings import Check
from hookbus.bus.store.base import Accepted, Store, StoredEvent

log = logging.getLogger("hookbus.checks")

SOURCE = "hookbus://checks"
RUN_TYPES = ("backup.job.started", "backup.job.finished", "backup.report")
NETCFGBU = "netcfgbu"  # the job a netcfgbu run's backup.report feeds, unless it names one
BATCH = 1000  # events read, and due checks evaluated, per step: a step runs on the event loop
IDLE_WAKE_S = 60.0  # with nothing due, look again this often (silences ending, clock changes)

Publish = Callable[[list[Event]], Awaitable[list[Accepted]]]


def when(at: float | None) -> str | None:
    return rfc3339(datetime.fromtimestamp(at, UTC)) if at is not None else None


class CheckEngine:
    def __init__(self, checks: Sequence[Check], store: Store, publish: Publish,
                 clock: Callable[[], float] = time.time) -> None:
        self.checks = {c.name: c for c in checks}
        self.store = store
        self.publish = publish
        self.clock = clock
        self.states: dict[str, State] = {name: State() for name in self.checks}
        self.histories: dict[str, anomaly.History] = {}
        self.silences = Silences()
        self.seq = 0
        self._by_job: dict[str, list[Check]] = {}
        for check in checks:
            self._by_job.setdefault(check.job, []).append(check)
        self._due: list[tuple[float, str]] = []  # (when, check name); stale entries are skipped
        self._scheduled: dict[str, float] = {}
        self._dirty_states: set[str] = set()
        self._dirty_jobs: set[str] = set()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one evaluation step at a time (the loop, pause/resume)
        self.ready = asyncio.Event()

    # -- the broker tells us of new events (on the event loop, per event: keep it cheap) --

    def on_published(self, type_: str | None, seq: int, body: bytes) -> None:
        if type_ is None or type_ in RUN_TYPES:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- running ------------------------------------------------------------------------------

    async def load(self) -> None:
        """Start from what was saved (also after an error: nothing in memory is trusted)."""
        async with self._lock:
            snap = await asyncio.to_thread(self.store.load_checks)
            self.seq = snap.seq
            self.states = {name: State() for name in self.checks}
            for name, body in snap.states.items():
                if name in self.states:
                    self.states[name] = State.from_json(orjson.loads(body))
            self.histories = {job: anomaly.History.from_json(orjson.loads(body)) for job, body in snap.runs.items()}
            self.silences = Silences()
            self.silences.replace(await asyncio.to_thread(self.store.silences, self.clock()))
            self._due, self._scheduled = [], {}
            self._dirty_states, self._dirty_jobs = set(), set()
            for name in self.checks:
                self._schedule(name)
        self.ready.set()  # pausing, resuming and silences may go on from here

    async def run(self) -> None:
        await self.load()
        log.info("checks: %d, evaluated up to seq %d", len(self.checks), self.seq)
        while True:
            self._wake.clear()
            async with self._lock:
                caught_up = await self.step()
            if not caught_up:
                continue
            try:
                async with asyncio.timeout(self._sleep()):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _sleep(self) -> float:
        now = self.clock()
        soonest = min([t for t, _ in self._due[:1]] + [self.silences.next_end(now) or now + IDLE_WAKE_S])
        return max(0.0, min(soonest - now, IDLE_WAKE_S)) + 0.001

    async def step(self) -> bool:
        """Evaluate the journal's next events and what fell due; publish, then save.
        Return whether the journal is read to its head."""
        stored, scanned = await asyncio.to_thread(self.store.read, self.seq, BATCH, _is_run)
        events: list[Event] = []
        for item in stored:
            events += self._take(item)
        events += self._advance(self.clock())
        ended = self.silences.ended(self.clock())
        events += self._silences_ended(ended)
        if events:
            await self.publish(events)
        self.silences.announced(ended)
        if scanned > self.seq or self._dirty_states or self._dirty_jobs:
            self.seq = max(self.seq, scanned)
            await self._save()
        return len(stored) < BATCH and not (self._due and self._due[0][0] <= self.clock())

    async def _save(self) -> None:
        states = {n: orjson.dumps(self.states[n].to_json()) for n in self._dirty_states}
        runs = {j: orjson.dumps(self.histories[j].to_json()) for j in self._dirty_jobs}
        self._dirty_states.clear()
        self._dirty_jobs.clear()
        await self.store.save_checks(self.seq, states, runs)

    # -- one run's report -----------------------------------------------------------------------

    def _take(self, item: StoredEvent) -> list[Event]:
        try:
            raw = orjson.loads(item.body)
        except orjson.JSONDecodeError:
            return []
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, dict) or raw.get("source") == SOURCE:
            return []
        if item.type == "backup.report":
            data = report_as_run(data)
        if not isinstance(data.get("job"), str):
            return []
        started = item.type == "backup.job.started"
        outcome = data.get("outcome") if isinstance(data.get("outcome"), str) else None
        error = data.get("error") if isinstance(data.get("error"), str) else None
        job_id = data.get("job_id") if isinstance(data.get("job_id"), str) else None
        run = Run(item.seq, item.at or self.clock(), started, job_id, outcome, error)
        out: list[Event] = []
        for check in self._by_job.get(data["job"], []):
            if check.repository is not None and data.get("repository") != check.repository:
                continue
            state = self.states[check.name]
            alerts = advance(check, state, run.at) + on_run(check, state, run, self._due_after(check))
            out += [self._announce(check, state, a) for a in alerts]
            self._changed(check.name)
        if not started and outcome in GOOD:
            out += self._judge(data, item.seq, raw.get("subject"))
        return out

    def _judge(self, data: dict[str, Any], seq: int, subject: Any) -> list[Event]:
        job = data["job"]
        history = self.histories.setdefault(job, anomaly.History())
        found = anomaly.judge(history, seq, anomaly.measures(data))
        self._dirty_jobs.add(job)
        job_id = data.get("job_id") if isinstance(data.get("job_id"), str) else f"seq-{seq}"
        return [Event(id=f"{job_id}/anomaly/{a.metric}", source=SOURCE, type="backup.job.anomaly", time=when(self.clock()) or "",
                      subject=subject if isinstance(subject, str) else None,
                      data={"job_id": job_id, "job": job, "repository": data.get("repository"), "metric": a.metric,
                            "value": a.value, "median": a.median, "runs": a.runs})
                for a in found]

    # -- time ------------------------------------------------------------------------------------

    def _due_after(self, check: Check) -> Callable[[float], float | None]:
        def due(after: float) -> float | None:
            nxt = schedule.next_due(check, datetime.fromtimestamp(after, UTC))
            return nxt.timestamp() if nxt is not None else None
        return due

    def _changed(self, name: str) -> None:
        self._dirty_states.add(name)
        self._schedule(name)

    def _schedule(self, name: str) -> None:
        change = next_change(self.checks[name], self.states[name])
        if change is None:
            self._scheduled.pop(name, None)
        elif self._scheduled.get(name) != change[0]:
            self._scheduled[name] = change[0]
            heapq.heappush(self._due, (change[0], name))

    def _advance(self, now: float) -> list[Event]:
        out: list[Event] = []
        for _ in range(BATCH):
            if not (self._due and self._due[0][0] <= now):
                break
            at, name = heapq.heappop(self._due)
            if self._scheduled.get(name) != at:
                continue  # stale: the check changed since
            del self._scheduled[name]
            check, state = self.checks[name], self.states[name]
            out += [self._announce(check, state, a) for a in advance(check, state, now)]
            self._changed(name)
        return out

    def _silences_ended(self, ended: list[Silence]) -> list[Event]:
        """A check still down when a silence over it ends is announced once more."""
        out = []
        for silence in ended:
            for name, check in self.checks.items():
                state = self.states[name]
                if state.status is Status.DOWN and silence.matches("backup.check.down", {"check": name, "job": check.job}):
                    alert = Alert(f"{state.down_key}/after-silence/{silence.id}", False, silence.ends_at,
                                  {"after_silence": True, "reminder": state.reminders})
                    out.append(self._announce(check, state, alert))
        return out

    # -- announcements ----------------------------------------------------------------------------

    def _announce(self, check: Check, state: State, alert: Alert) -> Event:
        base = {"check": check.name, "job": check.job, "repository": check.repository}
        if alert.up:
            down_since = alert.fields["down_since"]
            data = {**base, "down_since": when(down_since), "down_for_s": round(max(0.0, alert.at - down_since), 3),
                    "at": when(alert.at), "outcome": alert.fields.get("outcome"), "job_id": alert.fields.get("job_id")}
            log.info("check %s: up after %.0f s down", check.name, alert.at - down_since)
        else:
            expected = state.expected_at
            data = {**base, "reason": state.reason.value if state.reason else None,
                    "expected_at": when(expected), "deadline": when(expected + check.grace) if expected else None,
                    "schedule": schedule.schedule_text(check), "grace_s": check.grace,
                    "started_at": when(state.started_at), "max_runtime_s": check.max_runtime,
                    "last_seen": when(state.last_seen), "last_outcome": state.last_outcome, "error": state.last_error,
                    "failures": state.failures, "job_id": state.job_id, "reminder": alert.fields.get("reminder", 0),
                    "after_silence": bool(alert.fields.get("after_silence"))}
            log.warning("check %s: down (%s)%s", check.name, data["reason"],
                        f", reminder {data['reminder']}" if data["reminder"] else "")
        return Event(id=f"{check.name}/{alert.key}", source=SOURCE,
                     type="backup.check.up" if alert.up else "backup.check.down", time=when(alert.at) or "",
                     subject=check.repository, data=data)

    # -- operating -----------------------------------------------------------------------------------

    async def pause(self, name: str) -> bool:
        await self.ready.wait()
        async with self._lock:
            changed = pause(self.states[name])
            if changed:
                self._changed(name)
                await self._save()
        return changed

    async def resume(self, name: str) -> bool:
        await self.ready.wait()
        async with self._lock:
            check = self.checks[name]
            changed = resume(self.states[name], self.clock(), self._due_after(check))
            if changed:
                self._changed(name)
                await self._save()
        self.wake()
        return changed

    async def adopt_pauses(self) -> None:
        """Several nodes (DESIGN §12): a check paused or resumed through another node's API was
        saved there; the evaluating node takes that state in. Read under the lock, so a pause or
        resume made here meanwhile is never undone by an older snapshot."""
        async with self._lock:
            snap = await asyncio.to_thread(self.store.load_checks)
            for name, body in snap.states.items():
                if name not in self.states:
                    continue
                stored = State.from_json(orjson.loads(body))
                if (stored.status is Status.PAUSED) != (self.states[name].status is Status.PAUSED):
                    self.states[name] = stored
                    self._schedule(name)
        self.wake()

    async def add_silence(self, silence: Silence) -> Silence:
        await self.ready.wait()
        kept = await self.store.add_silence(silence)
        self.silences.add(kept)
        self.wake()
        return kept

    async def end_silence(self, silence_id: int) -> bool:
        now = self.clock()
        ended = await self.store.end_silence(silence_id, now)
        if ended:
            self.silences.end(silence_id, now)
            self.wake()
        return ended

    def describe(self, name: str) -> dict[str, Any]:
        """A check as `hookbus checks` and GET /api/checks show it."""
        check, state = self.checks[name], self.states[name]
        change = next_change(check, state)
        return {"name": name, "job": check.job, "repository": check.repository, "status": state.status.value,
                "reason": state.reason.value if state.reason else None, "schedule": schedule.describe(check),
                "last_seen": when(state.last_seen), "last_outcome": state.last_outcome,
                "next_due": when(state.expected_at), "next_change": when(change[0]) if change else None,
                "failures": state.failures, "down_since": when(state.down_since),
                "silenced": self.silences.holding(check, self.clock()) is not None}

    def overview(self) -> list[dict[str, Any]]:
        return [self.describe(name) for name in sorted(self.checks)]


def report_as_run(data: dict[str, Any]) -> dict[str, Any]:
    """A netcfgbu run's report, read as a finished run: failed when no device was
    backed up, a warning when some were not."""
    ok, failed = data.get("ok"), data.get("fail")
    ok = ok if isinstance(ok, int) else 0
    failed = failed if isinstance(failed, int) else 0
    outcome = "failed" if not ok else ("warning" if failed else "success")
    error = f"{failed} of {ok + failed} device(s) not backed up" if outcome != "success" else None
    return {**data, "job": data["job"] if isinstance(data.get("job"), str) else NETCFGBU, "outcome": outcome,
            "error": error}


def _is_run(type_: str) -> bool:
    return type_ in RUN_TYPES
