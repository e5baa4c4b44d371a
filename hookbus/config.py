"""The configuration file: TOML, validated once at start-up.

`load_config` returns a `Config` or raises `ConfigError` whose message names
the key at fault (`subscribers[1] (ops).webhook_url: …`). Values written as
`env:NAME` or `file:PATH` are read from the environment or a file; every value
read that way is a secret, and `scrub` hides it from anything printed.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hookbus.bus.filemodes import refuse_readable_secret
from hookbus.bus.jobs.config import JobConfig, load_jobs
from hookbus.bus.secrets import _resolve_tree, mark_secret
from hookbus.bus.settings import BusSettings, Check, ConfigError, HttpSettings, Strict, describe_errors, is_local_endpoint
from hookbus.subscribers import load_subscriber_config

log = logging.getLogger("hookbus.config")

DEFAULT_CONFIG_NAME = "hookbus.toml"


class Config(Strict):
    bus: BusSettings = BusSettings()
    http: HttpSettings = HttpSettings()  # [http]; [webhook] is its old name
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
    raw = _http_section(raw, source)
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
    for token in (*base.http.tokens, *base.http.hmac_secrets):
        mark_secret(token)
    _check_checks(base)
    for key in (base.bus.curve_secret_key, base.bus.curve_client_key):
        mark_secret(key)
    _check_endpoints(base.bus)
    if not base.http.is_loopback and base.http.enabled and not (base.http.tokens or base.http.hmac_secrets):
        raise ConfigError(
            f"http.listen: {base.http.listen} is not a loopback address and no authentication is "
            "configured; set http.tokens or http.hmac_secrets"
        )
    return base.model_copy(update={"subscribers": subscribers, "jobs": jobs})


def _http_section(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Given the raw file, return it with `[webhook]`, the old name of `[http]`, read as
    `[http]` (logging a warning that says so). Raise ConfigError when both are there."""
    if "webhook" not in raw:
        return raw
    if "http" in raw:
        raise ConfigError("[http] and [webhook]: both configure the HTTP listener ([webhook] is the old name "
                          "of [http]); keep [http] only")
    log.warning("%s: [webhook] is the old name of [http], the HTTP listener's section: read as [http]; rename it", source)
    return {("http" if key == "webhook" else key): value for key, value in raw.items()}


def _check_key_files(raw: dict[str, Any]) -> None:
    """A CURVE secret key in a file others can read is refused (§13): the message names the file."""
    bus = raw.get("bus")
    if not isinstance(bus, dict):
        return
    for key in ("curve_secret_key", "curve_client_key"):
        value = bus.get(key)
        if isinstance(value, str) and value.startswith("file:"):
            try:
                refuse_readable_secret(Path(value[5:]).expanduser(), f"bus.{key}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None


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
        elif config.http.enabled and not config.http.is_loopback:
            raise ConfigError(f"checks[{index}].key: a slug can be guessed and http.listen {config.http.listen} "
                              "is not a loopback address; use a UUID key")
