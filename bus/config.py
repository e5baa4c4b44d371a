"""Configuration: TOML, validated once at start-up.

`load_config` returns a `Config` or raises `ConfigError` whose message names
the key at fault (`subscribers[1] (ops).webhook_url: …`). Values written as
`env:NAME` or `file:PATH` are read from the environment or a file; every value
read that way is a secret, and `scrub` hides it from anything printed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import redact, signing
from .filemodes import refuse_readable_secret
from .jobconfig import JobConfig, load_jobs

DEFAULT_CONFIG_NAME = "hookbus.toml"

# Every secret value seen while loading configuration; `scrub` replaces them (bus/redact.py).
_SECRETS: set[str] = redact.known_secrets()


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(Strict):
    attempts: int = Field(10, ge=1, le=1000)
    max_delay: float = Field(300.0, gt=0, le=86400)
    initial_delay: float = Field(1.0, gt=0, le=3600)


class BusSettings(Strict):
    data_dir: Path = Path("var")
    control: str = "tcp://127.0.0.1:7600"
    publish: str = "tcp://127.0.0.1:7601"
    max_event_bytes: int = Field(256 * 1024, ge=4096, le=64 * 1024 * 1024)
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    retention_days: float = Field(30.0, gt=0)
    heartbeat: float = Field(1.0, gt=0, le=60)
    curve_secret_key: str | None = None  # the broker's certificate (secret) file text
    curve_public_key: str | None = None  # the broker's public key, for clients
    curve_authorized_keys: Path | None = None  # folder of clients' public certificates
    curve_client_key: str | None = None  # a client's own certificate (secret) file text
    credential: Path | None = None  # a client's credential file (`hookbus grant`); else $HOOKBUS_CREDENTIAL, else data_dir's own

    @property
    def curve_configured(self) -> bool:
        """Keys were given, not only the ones data_dir sets up for its own user."""
        return bool(self.curve_secret_key or self.curve_client_key or self.credential)

    @field_validator("control", "publish")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError("must be a ZeroMQ endpoint such as tcp://127.0.0.1:7600")
        return value


def _hmac_secret(value: str) -> str:
    signing.secret_bytes(value)  # a malformed whsec_ key would fail every signed request
    return value


class WebhookSettings(Strict):
    enabled: bool = True
    listen: str = "127.0.0.1:8765"
    tokens: list[str] = []
    hmac_secrets: list[Annotated[str, AfterValidator(_hmac_secret)]] = []
    hmac_tolerance: float = Field(300.0, gt=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    body_timeout: float = Field(30.0, gt=0, le=3600)

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


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


class Check(Strict):
    """A job reported through the healthchecks-compatible ping API (`/ping/{key}`)."""

    key: str
    job: str = Field(min_length=1)
    repository: str | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if _UUID.fullmatch(value):
            return value.lower()  # healthchecks UUIDs are matched whatever their case
        if _SLUG.fullmatch(value):
            return value
        raise ValueError("must be a UUID such as 5f0a1c2e-9a7b-4c3d-8e1f-123456789abc, "
                         "or a slug of lowercase letters, digits, '-' and '_'")

    @property
    def is_uuid(self) -> bool:
        return bool(_UUID.fullmatch(self.key))


class Config(Strict):
    bus: BusSettings = BusSettings()
    webhook: WebhookSettings = WebhookSettings()
    # Each subscriber table is validated by its own kind's model (subscribers/).
    subscribers: list[Any] = []
    jobs: list[JobConfig] = []  # validated by load_jobs, whose errors name the job
    checks: list[Check] = []  # the ping API's keys (adapters/ping.py)
    source: str = "<embedded defaults>"

    def subscriber(self, name: str) -> Any:
        for sub in self.subscribers:
            if sub.name == name:
                return sub
        known = ", ".join(s.name for s in self.subscribers) or "none"
        raise ConfigError(f"no subscriber named {name!r} (configured: {known})")


DEFAULTS: dict[str, Any] = {
    "subscribers": [{"name": "audit", "kind": "jsonl", "events": ["*"], "path": "var/events.jsonl"}],
}


def resolve_value(value: str, key: str) -> str:
    """Given a config string, return it with `env:NAME` / `file:PATH` read in."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{key}: environment variable {name} is not set")
        secret = os.environ[name]
    elif value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    else:
        return value
    mark_secret(secret)
    return secret


def _resolve_tree(node: Any, key: str) -> Any:
    if isinstance(node, str):
        return resolve_value(node, key)
    if isinstance(node, list):
        return [_resolve_tree(v, f"{key}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: _resolve_tree(v, f"{key}.{k}" if key else k) for k, v in node.items()}
    return node


def mark_secret(value: str | None) -> None:
    """Remember a value that must never be printed (tokens given inline, URL paths)."""
    if value and len(value) >= 4:
        redact.remember(value)


def scrub(text: str) -> str:
    """Return text with every known secret (and its base64 and leading parts) and
    every credential-shaped part (URL user:password, Authorization headers,
    password=…) replaced by ***."""
    return redact.redact_text(text)


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


def find_config_path(explicit: str | None) -> Path | None:
    """--config, else HOOKBUS_CONFIG, else ./hookbus.toml if present, else None (defaults)."""
    if explicit:
        return Path(explicit)
    if os.environ.get("HOOKBUS_CONFIG"):
        return Path(os.environ["HOOKBUS_CONFIG"])
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def load_config(path: Path | None) -> Config:
    """Read, resolve and validate a configuration file (or the embedded defaults)."""
    if path is None:
        raw: dict[str, Any] = dict(DEFAULTS)
        source = "<embedded defaults>"
    else:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        source = str(path)
    return build_config(raw, source)


def build_config(raw: dict[str, Any], source: str) -> Config:
    from hookbus.subscribers import load_subscriber_config

    _check_key_files(raw)
    resolved = _resolve_tree(raw, "")
    subs_raw = resolved.pop("subscribers", [])
    try:
        jobs = load_jobs(resolved.pop("jobs", []))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(subs_raw, list):
        raise ConfigError("subscribers: must be an array of tables ([[subscribers]])")
    try:
        base = Config.model_validate({**resolved, "source": source})
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, "")) from None
    subscribers = []
    seen: set[str] = set()
    for index, table in enumerate(subs_raw):
        sub = load_subscriber_config(table, index)
        if sub.name in seen:
            raise ConfigError(f"subscribers[{index}].name: {sub.name!r} is used twice; names must be unique")
        seen.add(sub.name)
        subscribers.append(sub)
    for token in (*base.webhook.tokens, *base.webhook.hmac_secrets):
        mark_secret(token)
    _check_checks(base)
    for key in (base.bus.curve_secret_key, base.bus.curve_client_key):
        mark_secret(key)
    _check_endpoints(base.bus)
    if not base.webhook.is_loopback and base.webhook.enabled and not (base.webhook.tokens or base.webhook.hmac_secrets):
        raise ConfigError(
            f"webhook.listen: {base.webhook.listen} is not a loopback address and no authentication is "
            "configured; set webhook.tokens or webhook.hmac_secrets"
        )
    return base.model_copy(update={"subscribers": subscribers, "jobs": jobs})


def _check_key_files(raw: dict[str, Any]) -> None:
    """A CURVE secret key in a file others can read is refused (§13): the message names the file."""
    bus = raw.get("bus") if isinstance(raw.get("bus"), dict) else {}
    for key in ("curve_secret_key", "curve_client_key"):
        value = bus.get(key)
        if isinstance(value, str) and value.startswith("file:"):
            try:
                refuse_readable_secret(Path(value[5:]).expanduser(), f"bus.{key}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None


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


def _check_endpoints(bus: BusSettings) -> None:
    """Beyond loopback, CURVE keys must be configured, as HTTP needs tokens there."""
    for key in ("control", "publish"):
        endpoint = getattr(bus, key)
        if not is_local_endpoint(endpoint) and not (bus.curve_configured or os.environ.get("HOOKBUS_CREDENTIAL")):
            raise ConfigError(
                f"bus.{key}: {endpoint} is not a loopback address and no CURVE keys are configured; set "
                "bus.curve_secret_key and bus.curve_authorized_keys (broker), or bus.curve_public_key and "
                "bus.curve_client_key or bus.credential (clients)")


def _check_checks(config: Config) -> None:
    """Ping keys are unique; a UUID key is a credential (kept out of logs); a slug
    can be guessed, so it is refused where the ping API is reachable from elsewhere."""
    seen: set[str] = set()
    for index, check in enumerate(config.checks):
        if check.key in seen:
            raise ConfigError(f"checks[{index}].key: {check.key!r} is used twice; keys must be unique")
        seen.add(check.key)
        if check.is_uuid:
            mark_secret(check.key)
        elif config.webhook.enabled and not config.webhook.is_loopback:
            raise ConfigError(f"checks[{index}].key: a slug can be guessed and webhook.listen {config.webhook.listen} "
                              "is not a loopback address; use a UUID key")


class ScrubFilter(logging.Filter):
    """Hides every configured secret and credential-shaped text from log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class BadHttpFilter(logging.Filter):
    """aiohttp logs a malformed request (the client's error, already answered 400)
    with a traceback; one line says it better."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            error = record.exc_info[1]
            record.msg, record.args = "refused a malformed HTTP request: %s", (" ".join(str(error.message).split())[:200],)
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.server").addFilter(BadHttpFilter())
