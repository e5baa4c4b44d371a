"""Control commands' inputs, checked like HTTP's (DESIGN §13), and who may send them.

Each command's JSON is validated once, on arrival, by its model here: a bad
request gets an ERR naming the field, never a crash and never a poisoned state
(a RETRY due at "inf", a cursor past the head). Publishing and operating are
separate rights: a publish key may only PUB; operate keys may do everything.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from hookbus.bus.secrets import redact_text
from hookbus.bus.store.base import DEAD, DELIVERED, FAILED, SILENCED
from hookbus.bus.transport import protocol
from hookbus.bus.transport.credentials import OPERATE, PUBLISH

MAX_SEQ = 2 ** 62
MAX_RETRY_AHEAD = 366 * 86400.0  # a retry due later than this is no backoff anyone configured
MAX_IDS = 1000

Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
Attempts = Annotated[int, Field(ge=0, le=1_000_000)]
# A subscriber's error text is stored and shown: redacted before it is cut, so a cut cannot hide a credential's end.
ErrorText = Annotated[str, AfterValidator(lambda text: redact_text(text[:16000])[:4000])]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Empty(Request):
    pass


class Fetch(Request):
    after: Seq
    limit: int = Field(500, ge=1, le=5000)
    events: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(None, max_length=100)


Runner = Annotated[str, Field(max_length=200)]  # who runs a subscriber: host, pid, start (journal.runner_name)


class Hello(Request):
    name: Name
    start: Literal["beginning", "now"] = "beginning"
    runner: Runner | None = None


class Ack(Request):
    name: Name
    cursor: Seq
    epoch: Seq


class Retry(Request):
    name: Name
    seq: Seq
    attempts: Attempts
    next_at: float = Field(0.0, ge=0, allow_inf_nan=False)
    error: ErrorText = ""

    @field_validator("next_at")
    @classmethod
    def _sane(cls, value: float) -> float:
        if value > time.time() + MAX_RETRY_AHEAD:
            raise ValueError("must be a time (Unix seconds) within a year from now")
        return value


class Dead(Request):
    name: Name
    seq: Seq
    attempts: Attempts
    error: ErrorText


MAX_TRAIL = 2000  # records in one TRAIL: 2000 × (300 characters of reason + the rest) stays well under a frame
REASON_CHARS = 300
MAX_TRAIL_AHEAD = 86400.0  # a record's time later than now by more than this is not a clock's drift


def _reason(text: str) -> str:
    """Redacted before it is cut, so a cut cannot hide a credential's end."""
    return redact_text(text[:4 * REASON_CHARS])[:REASON_CHARS] if text else text


# [seq, attempt, at, outcome, status, reason]: arrays, not objects (a TRAIL carries thousands);
# the array itself is taken from JSON as a tuple, its items strictly.
TrailRecord = Annotated[tuple[
    Annotated[StrictInt, Field(ge=1, le=MAX_SEQ)],
    Annotated[StrictInt, Field(ge=0, le=1_000_000)],
    Annotated[StrictFloat | StrictInt, Field(ge=0, allow_inf_nan=False)],
    Literal[DELIVERED, FAILED, DEAD, SILENCED],  # type: ignore[valid-type]
    Annotated[StrictInt, Field(ge=-65536, le=65536)] | None,
    Annotated[StrictStr, Field(max_length=16000), AfterValidator(_reason)],
], Strict(False)]


Record = tuple[int, int, float, str, int | None, str]

# [first_seq, last_seq, at, status]: every seq of the run delivered at its first attempt.
TrailRun = Annotated[tuple[
    Annotated[StrictInt, Field(ge=1, le=MAX_SEQ)],
    Annotated[StrictInt, Field(ge=1, le=MAX_SEQ)],
    Annotated[StrictFloat | StrictInt, Field(ge=0, allow_inf_nan=False)],
    Annotated[StrictInt, Field(ge=-65536, le=65536)] | None,
], Strict(False)]
Run = tuple[int, int, float, int | None]


class Trail(Request):
    """What became of deliveries, for the delivery trail; `runner` must hold the name's lease."""

    name: Name
    runner: Runner
    records: list[TrailRecord] = Field(default_factory=list, max_length=MAX_TRAIL)
    delivered: list[TrailRun] = Field(default_factory=list, max_length=MAX_TRAIL)

    @field_validator("records")
    @classmethod
    def _sane(cls, records: list[Record]) -> list[Record]:
        latest = time.time() + MAX_TRAIL_AHEAD
        for index, record in enumerate(records):
            if record[2] > latest:
                raise ValueError(f"record {index}: its time is more than a day ahead")
        return records

    @field_validator("delivered")
    @classmethod
    def _runs(cls, runs: list[Run]) -> list[Run]:
        latest = time.time() + MAX_TRAIL_AHEAD
        for index, (first, last, at, _) in enumerate(runs):
            if not first <= last or at > latest:
                raise ValueError(f"run {index}: must be [first_seq <= last_seq, a time not ahead by more than a day, status]")
        return runs


class Ping(Request):
    name: Name
    runner: Runner | None = None
    stats: dict[Annotated[str, Field(max_length=64)], int | float] = Field(default_factory=dict, max_length=32)


class Replays(Request):
    name: Name
    limit: int = Field(100, ge=1, le=MAX_IDS)


class Replayed(Request):
    id: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    ok: bool
    error: ErrorText = ""


class Replay(Request):
    subscriber: Name | None = None
    from_seq: Annotated[int, Field(ge=1, le=MAX_SEQ)] | None = None
    ids: list[Annotated[int, Field(ge=1, le=MAX_SEQ)]] | None = Field(None, max_length=MAX_IDS)
    dead_letters: bool = False


MODELS: dict[bytes, type[Request]] = {
    protocol.PUB: Empty, protocol.FETCH: Fetch, protocol.HELLO: Hello, protocol.ACK: Ack, protocol.RETRY: Retry,
    protocol.DEAD: Dead, protocol.PING: Ping, protocol.REPLAYS: Replays, protocol.REPLAYED: Replayed,
    protocol.STATUS: Empty, protocol.REPLAY: Replay, protocol.TRAIL: Trail,
}
RIGHT: dict[bytes, str] = {protocol.PUB: PUBLISH}  # every other command needs OPERATE


class BadRequest(ValueError):
    """A control request that is not allowed or not valid; `field` names what is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def may(role: str | None, command: bytes) -> bool:
    """Whether a connection let in as `role` may send `command`."""
    return role == OPERATE or (role is not None and RIGHT.get(command) == role)


def parse(command: bytes, payload: Any) -> Request:
    """Validate a command's JSON; raise BadRequest naming the first field at fault."""
    model = MODELS.get(command)
    if model is None:
        raise BadRequest(f"unknown command {command[:32]!r}", "command")
    if not isinstance(payload, dict):
        raise BadRequest("the request must be a JSON object", "payload")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part)[:64] for part in err["loc"]]  # a dict key in the path is the client's text, of any size
        raise BadRequest(f"{'.'.join(loc) or 'payload'}: {err['msg']}", loc[0] if loc else "payload") from None
