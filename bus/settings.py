"""Settings of the bus's own parts ([bus], [http], [[checks]], [[sources]]) and the error
every configuration problem raises.

Every time span in the configuration is a `Duration`: a number of seconds or a
string such as "30s", "5m", "4h", "1d", "1h30m", "2w", read as seconds (float).
A cron schedule (`CronSchedule`) and a time zone (`TimeZoneName`) are checked
here too, so `[[checks]]` and `[[jobs]]` share one validation.

`ConfigError`'s message names the key at fault (`subscribers[1] (ops).webhook_url: …`);
`describe_errors` turns pydantic's errors into that form. The whole file is
read and assembled above the bus, in `hookbus/config.py`.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hookbus.bus import signing


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DURATION_UNITS = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DURATION_FORMS = 'must be a number of seconds or a duration such as "30s", "5m", "4h", "1d", "1h30m"'


def parse_duration(text: str) -> float | None:
    """Given "30s", "5m", "4h", "1d", "2w", "1h30m" (units largest first, each
    once; spaces between parts allowed) or a plain number, return seconds; None
    when the text is neither."""
    compact = "".join(text.split()).lower()
    try:
        seconds = float(compact) if compact[:1].isdigit() and compact[-1:].isdigit() else _units(compact)
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


def _units(compact: str) -> float | None:
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        return None
    order = [list(DURATION_UNITS).index(u) for _, u in parts]
    if order != sorted(set(order)):  # "1m1h" or "1h1h": a typo more likely than meant
        return None
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def _duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("duration", _DURATION_FORMS)
    if isinstance(value, int | float) and math.isfinite(value):
        return value  # the bounds (ge/gt/le) are checked by the float that follows
    if isinstance(value, str):
        seconds = parse_duration(value)
        if seconds is not None:
            return seconds
    raise PydanticCustomError("duration", _DURATION_FORMS)


# A time span in seconds: a number, or a string such as "30s", "5m", "1h30m".
# Field(...) bounds apply to the seconds: `timeout: Duration = Field(30.0, gt=0, le=86400)`.
Duration = Annotated[float, BeforeValidator(_duration)]


def _days(value: Any) -> Any:
    if isinstance(value, str):
        seconds = parse_duration(value)
        if seconds is not None:  # a plain number in a string is days, as a number is
            return float(value) if value.strip()[-1:].isdigit() else seconds / 86400
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise PydanticCustomError("duration", 'must be a number of days or a duration such as "36h", "30d", "2w"')


# A span in days (`retention_days`): a number of days, or a duration string read as days ("2w" → 14.0).
Days = Annotated[float, BeforeValidator(_days)]


CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))


def cron_problem(expr: str) -> str | None:
    """What is wrong with a 5-field cron schedule (healthchecks' cronsim semantics:
    `L`, `LW`, `5L`, `MON#1` and names included), or None when it is one."""
    parts = expr.split()
    if len(parts) != 5:
        return (f"{len(parts)} field(s); a cron schedule has 5: minute hour day-of-month month day-of-week"
                + (" (the @ shortcuts are not supported)" if expr.strip().startswith("@") else ""))
    try:
        CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        message = str(exc)
        for (name, low, high), text in zip(CRON_FIELDS, parts, strict=True):
            if message.lower().endswith(name):
                numbers = [int(n) for n in re.findall(r"\d+", text.split("/")[0].split("#")[0])]
                outside = [n for n in numbers if not low <= n <= high]
                if outside:
                    return f"{name} {outside[0]} out of range {low}-{high}"
                return f"bad {name} {text!r}"
        return message
    return None


def _cron(value: str) -> str:
    expr = " ".join(value.split())
    problem = cron_problem(expr)
    if problem:
        raise PydanticCustomError("cron", "{value} is not a cron schedule ({problem})",
                                  {"value": repr(value), "problem": problem})
    return expr


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError("time_zone", "unknown time zone {value}; use an IANA name such as Europe/Berlin or UTC",
                                  {"value": repr(value)}) from None
    return value


CronSchedule = Annotated[str, AfterValidator(_cron)]  # 5 fields, whitespace normalized
TimeZoneName = Annotated[str, AfterValidator(_zone)]  # an IANA zone zoneinfo knows


class RetrySettings(Strict):
    attempts: int = Field(10, ge=1, le=1000)
    max_delay: Duration = Field(300.0, gt=0, le=86400)
    initial_delay: Duration = Field(1.0, gt=0, le=3600)


def _endpoint(value: str) -> str:
    if not value.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError("must be a ZeroMQ endpoint such as tcp://127.0.0.1:7600")
    return value


class BusSettings(Strict):
    data_dir: Path = Path("var")
    # Where the journal is (DESIGN §12): "sqlite" (data_dir/journal.db) or a postgresql:// URL.
    store: str = "sqlite"
    # One endpoint, or the endpoints of every node of one bus (DESIGN §12): a node binds the
    # first, its own; clients try each in turn.
    control: str | list[str] = "tcp://127.0.0.1:7600"
    publish: str = "tcp://127.0.0.1:7601"
    max_event_bytes: int = Field(256 * 1024, ge=4096, le=64 * 1024 * 1024)
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    retention_days: Days = Field(30.0, gt=0)
    heartbeat: Duration = Field(1.0, gt=0, le=60)
    curve_secret_key: str | None = None  # the broker's certificate (secret) file text
    curve_public_key: str | None = None  # the broker's public key, for clients
    curve_authorized_keys: Path | None = None  # folder of clients' public certificates
    curve_client_key: str | None = None  # a client's own certificate (secret) file text
    credential: Path | None = None  # a client's credential file (`hookbus grant`); else $HOOKBUS_CREDENTIAL, else data_dir's own
    node: str = Field("", max_length=200)  # this node's name among several on one store; "" = the host name
    lease: Duration = Field(10.0, ge=1, le=600)  # a dead node's subscribers and singleton work move on within this

    @property
    def curve_configured(self) -> bool:
        """Keys were given, not only the ones data_dir sets up for its own user."""
        return bool(self.curve_secret_key or self.curve_client_key or self.credential)

    @property
    def controls(self) -> list[str]:
        """Every node's control endpoint, this node's (the one it binds) first."""
        return [self.control] if isinstance(self.control, str) else list(self.control)

    @property
    def own_control(self) -> str:
        return self.controls[0]

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname()

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        # The message never repeats the value: a URL may hold a password.
        if value != "sqlite" and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError('must be "sqlite" or a PostgreSQL URL such as postgresql://hookbus@db1/hookbus')
        return value

    @property
    def on_postgres(self) -> bool:
        return self.store != "sqlite"

    @field_validator("control")
    @classmethod
    def _endpoints(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("must name at least one endpoint")
            for endpoint in value:
                _endpoint(endpoint)
            return value
        return _endpoint(value)

    @field_validator("publish")
    @classmethod
    def _publish(cls, value: str) -> str:
        return _endpoint(value)

    @field_validator("node")
    @classmethod
    def _node(cls, value: str) -> str:
        if value != value.strip() or any(ord(c) < 32 for c in value):
            raise ValueError("must not contain control characters, nor begin or end with a space")
        return value


def _hmac_secret(value: str) -> str:
    signing.secret_bytes(value)  # a malformed whsec_ key would fail every signed request
    return value


class HttpSettings(Strict):
    """The HTTP listener, `[http]` (`[webhook]` is its old name; `webhook` is otherwise the outbound subscriber kind)."""

    enabled: bool = True
    listen: str = "127.0.0.1:8765"
    tokens: list[str] = []
    hmac_secrets: list[Annotated[str, AfterValidator(_hmac_secret)]] = []
    hmac_tolerance: Duration = Field(300.0, gt=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    body_timeout: Duration = Field(30.0, gt=0, le=3600)
    ui: bool = True  # the operator's page at / (DESIGN §11)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError("must be HOST:PORT such as 127.0.0.1:8765")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


# A UUID as healthchecks writes one in a ping URL (any case): the one pattern, for
# check keys here and for the ping API and the healthchecks subscriber above.
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


MAX_CHECK_SPAN = 366 * 86400.0  # a yearly job's period; spans beyond are mistakes (and overflow datetimes)
_BADGE_KEY = re.compile(r"[A-Za-z0-9_-]{16,200}")


class Expectation(Strict):
    """When a job should run and how it may fail before it is down (DESIGN §10): the keys a
    `[[checks]]` table and a `[[jobs]]` table with a schedule share."""

    schedule: CronSchedule | None = None
    tz: TimeZoneName = "UTC"
    period: Duration | None = Field(None, gt=0, le=MAX_CHECK_SPAN)
    grace: Duration = Field(3600.0, ge=0, le=MAX_CHECK_SPAN)
    max_runtime: Duration | None = Field(None, gt=0, le=MAX_CHECK_SPAN)
    down_after_failures: int = Field(1, ge=1, le=1000)
    repeat: Duration | None = Field(None, gt=0, le=MAX_CHECK_SPAN)

    @property
    def expected(self) -> bool:
        """A schedule or a period: a run is due at times."""
        return self.schedule is not None or self.period is not None

    @model_validator(mode="after")
    def _one_way_to_be_due(self) -> Expectation:
        if self.schedule is not None and self.period is not None:
            raise PydanticCustomError("schedule_and_period", "schedule and period: give one or the other; a job runs "
                                      "on a cron schedule or every period, not both")
        return self


EXPECTATION_KEYS = tuple(Expectation.model_fields)


class Check(Expectation):
    """An expectation about a job (DESIGN §10): when it should run, how late it may
    be, how long it may take; and its healthchecks-compatible ping key (`/ping/{key}`).

    `name` defaults to `job`. A check has a cron `schedule` (in `tz`), or a
    `period` counted from the last run, or neither (it is then only fed, never
    late). `key` and `badge_key` are optional; `badge_key` is read-only (the SVG
    badge) and never the ping key.
    """

    name: str = Field(min_length=1, max_length=200)
    job: str = Field(min_length=1)
    repository: str | None = None
    key: str | None = None
    badge_key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_from_job(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("job"), str):
            return {"name": data["job"], **data}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if "/" in value or any(ord(c) < 32 or c == "\x7f" for c in value) or value != value.strip():
            raise PydanticCustomError("check_name", "must not contain '/' or control characters, nor begin or end with a space")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if UUID.fullmatch(value):
            return value.lower()  # healthchecks UUIDs are matched whatever their case
        if _SLUG.fullmatch(value):
            return value
        raise ValueError("must be a UUID such as 5f0a1c2e-9a7b-4c3d-8e1f-123456789abc, "
                         "or a slug of lowercase letters, digits, '-' and '_'")

    @field_validator("badge_key")
    @classmethod
    def _badge_key(cls, value: str | None) -> str | None:
        if value is not None and not _BADGE_KEY.fullmatch(value):
            raise PydanticCustomError("badge_key", "must be 16 to 200 characters of A-Z, a-z, 0-9, '-' and '_'")
        return value

    @model_validator(mode="after")
    def _badge_not_ping_key(self) -> Check:
        if self.badge_key is not None and self.key is not None and self.badge_key.lower() == self.key.lower():
            raise PydanticCustomError("badge_key", "badge_key: must not be the ping key (the badge key is read-only "
                                      "and shown in pages; the ping key reports runs)")
        return self

    @property
    def is_uuid(self) -> bool:
        return self.key is not None and bool(UUID.fullmatch(self.key))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


class SourceSettings(Strict):
    """A `[[sources]]` table: a tool hookbus follows (DESIGN §14). `kind` names the
    adapter module that follows it; `hookbus/config.py` checks that one exists."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = Field(min_length=1)
    url: str  # the tool's base URL
    # The tool's own database file, where hookbus runs beside it (read only).
    database: Path | None = None
    max_delay: Duration = Field(60.0, gt=0, le=3600)  # the longest wait between reconnections

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be the tool's base URL, http:// or https://, such as http://127.0.0.1:8000")
        return value.rstrip("/")


def describe_errors(exc: ValidationError, prefix: str) -> str:
    """Format pydantic errors as `key: problem` lines, never echoing values."""
    lines = []
    for err in exc.errors():
        loc = prefix
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{loc}: {msg}")
    return "\n".join(lines)


def is_local_endpoint(endpoint: str) -> bool:
    """ipc://, inproc://, or tcp:// on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[6:].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # `*`, an interface name or a host name: reachable from elsewhere
