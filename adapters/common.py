"""What every inbound adapter shares: field checks whose errors name the field,
the canonical job events, and the record of open jobs that ties a tool's
"started" to its "finished".

A tool often reports the start and the end of one backup in two separate calls
(a healthchecks `/start` ping, then the plain ping; a Backrest START hook, then
an END hook). The job id given at the start is kept under a key naming the job
(`OpenJob`) so the end gets the same `job_id`. On the server that record lives
in the journal (`JournalJobs`), so it survives a restart of hookbus;
`hookbus emit` keeps it in a small file on the tool's host (`FileJobs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from hookbus.bus.events.event import Event, EventError, check_depth, new_id
from hookbus.bus.events.payloads import job_finished_data, job_started_data, task_data
from hookbus.bus.events.times import now_rfc3339, parse_time, rfc3339
from hookbus.bus.events.vocabulary import Outcome, Reason
from hookbus.bus.store.base import FORGET_AFTER_S, Store
from hookbus.bus.store.base import OpenJob as OpenJob  # the adapters' import of it

OUTPUT_TAIL_BYTES = 16 * 1024  # what a finished job keeps of a tool's output when nothing else says


# -- fields ------------------------------------------------------------------------

_KINDS: dict[type, str] = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                           dict: "an object", list: "an array"}


def field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], *, where: str = "",
          required: bool = False, default: Any = None) -> Any:
    """Given a decoded JSON object, return obj[name] if it is of `kind`.

    Raise EventError naming the field (`where` + name) when it is required and
    missing, or present with another type. JSON null counts as missing.
    """
    path = f"{where}.{name}" if where else name
    value = obj.get(name)
    if value is None:
        if required:
            raise EventError(path, "required field is missing")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python, but `true` is not a count.
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds) or (float in kinds and isinstance(value, int))
    if not ok:
        wanted = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        raise EventError(path, f"must be {wanted}, not {json_type(value)}")
    return value


def json_type(value: Any) -> str:
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", dict: "an object",
            list: "an array", type(None): "null"}.get(type(value), type(value).__name__)


def count(obj: dict[str, Any], name: str, *, where: str = "") -> int | None:
    """Return obj[name] as a non-negative integer (or None when absent); raise EventError otherwise."""
    value = field(obj, name, int, where=where)
    if value is not None and value < 0:
        raise EventError(f"{where}.{name}" if where else name, "must not be negative")
    return value  # type: ignore[no-any-return]


def timestamp(obj: dict[str, Any], name: str, *, where: str = "") -> str | None:
    """Return obj[name], an ISO 8601 / RFC 3339 time, as RFC 3339 in UTC (naive times are taken as UTC)."""
    value = field(obj, name, str, where=where)
    if value is None or value == "":
        return None
    parsed = parse_time(value)
    if parsed is None:
        raise EventError(f"{where}.{name}" if where else name, "must be an ISO 8601 time such as 2026-11-21T03:38:00Z")
    return rfc3339(parsed)


_ERRORISH = re.compile(r"error|fail|fatal|denied|does not exist|not found|non-zero|exception|refused|timed out", re.I)
# borgmatic logs its own pings ("Pinging Healthchecks fail"): never the error itself.
_PING_NOISE = re.compile(r"^Pinging \S+ (start|finish|fail|log)\b")


def error_line(text: str) -> str | None:
    """The line of a tool's log that best names what went wrong: the first that
    reads like an error (usually the cause; later ones repeat it), else the last."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _PING_NOISE.match(line.strip())]
    for line in lines:
        if _ERRORISH.search(line):
            return line[:1000]
    return lines[-1][:1000] if lines else None


def stable_id(*parts: Any) -> str:
    """An id derived from the payload, so that the same report sent twice is the same event."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def decode_json(body: bytes | str, what: str = "body") -> Any:
    if not body.strip():
        raise EventError(what, "is empty")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError(what, f"is not valid JSON: {exc}") from None
    check_depth(obj, what)  # a tool's payload becomes event data: the same limit
    return obj


def json_object(body: bytes) -> dict[str, Any]:
    obj = decode_json(body)
    if not isinstance(obj, dict):
        raise EventError("body", f"must be a JSON object, not {json_type(obj)}")
    return obj


# -- canonical job events --------------------------------------------------------------

def job_started(source: str, job_id: str, *, job: str | None, repository: str | None,
                started_at: str | None = None, **extra: Any) -> Event:
    data = job_started_data(job_id, job=job, repository=repository, started_at=started_at or now_rfc3339(), **extra)
    return Event(id=f"{job_id}/job.started", source=source, type="backup.job.started", time=now_rfc3339(),
                 subject=repository, data=data)


def job_finished(source: str, job_id: str, *, job: str | None, repository: str | None, outcome: Outcome,
                 reason: Reason | None = None, **extra: Any) -> Event:
    data = job_finished_data(job_id, job=job, repository=repository, outcome=outcome, reason=reason, **extra)
    return Event(id=f"{job_id}/job.finished", source=source, type="backup.job.finished", time=now_rfc3339(),
                 subject=repository, data=data)


def task_event(source: str, job_id: str, phase_of_life: str, task: dict[str, Any], *, subject: str | None,
               event_key: str, **extra: Any) -> Event:
    """backup.task.started / backup.task.finished; `event_key` names the task within the job."""
    type_ = f"backup.task.{phase_of_life}"
    return Event(id=f"{job_id}/task.{event_key}.{phase_of_life}", source=source, type=type_, time=now_rfc3339(),
                 subject=subject, data=task_data(job_id, task, **extra))


# -- open jobs -------------------------------------------------------------------------

def new_job() -> OpenJob:
    return OpenJob(new_id(), now_rfc3339())


class JournalJobs:
    """Open jobs kept by the store (`Store.open_job`): committed like events, so a
    restart of hookbus between a start and its finish keeps them together."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def open(self, key: str, job: OpenJob) -> None:
        await self.store.open_job(key, job)

    async def get(self, key: str, finished: tuple[str, str] | None = None) -> OpenJob | None:
        """The open job under key; with `finished`, see `Store.find_open_job`."""
        return await self.store.find_open_job(key, finished)

    async def close(self, key: str, job_id: str) -> None:
        await self.store.close_job(key, job_id)


def state_dir() -> Path:
    """Where `hookbus emit` keeps the jobs it saw start: $HOOKBUS_STATE_DIR, else
    $XDG_STATE_HOME/hookbus, else ~/.local/state/hookbus."""
    if os.environ.get("HOOKBUS_STATE_DIR"):
        return Path(os.environ["HOOKBUS_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hookbus"


class FileJobs:
    """Open jobs in a small JSON file next to the tool (for `hookbus emit`, which
    has no journal at hand). Every change holds an exclusive lock on the file,
    so hooks running at the same time do not lose each other's entries."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "open-jobs.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.with_suffix(".lock"), "a")  # noqa: SIM115 - held for the block
        except OSError as exc:
            raise ValueError(f"cannot keep job state in {self.path.parent} ({exc.strerror}); "
                             "set HOOKBUS_STATE_DIR to a writable folder") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = orjson.loads(self.path.read_bytes()) if self.path.exists() else {}
            except (OSError, orjson.JSONDecodeError):
                state = {}  # a torn file only loses the pairing of jobs already under way
            if not isinstance(state, dict):
                state = {}
            before = dict(state)
            yield state
            if state != before:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_bytes(orjson.dumps(state))
                os.replace(tmp, self.path)

    def open_sync(self, key: str, job: OpenJob) -> None:
        with self._locked() as state:
            now = time.time()
            for old in [k for k, v in state.items() if not isinstance(v, dict) or v.get("at", 0) < now - FORGET_AFTER_S]:
                del state[old]
            state[key] = {"job_id": job.job_id, "started_at": job.started_at, "at": now}

    def get_sync(self, key: str) -> OpenJob | None:
        with self._locked() as state:
            entry = state.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("job_id"), str):
                return OpenJob(entry["job_id"], str(entry.get("started_at") or now_rfc3339()))
            return None

    def close_sync(self, key: str, job_id: str) -> None:
        with self._locked() as state:
            entry = state.get(key)
            if isinstance(entry, dict) and entry.get("job_id") == job_id:
                del state[key]
