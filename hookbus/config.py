"""The configuration file: TOML, validated once at start-up.

`load_config` returns a `Config` or raises `ConfigError` whose message names
the key at fault (`subscribers[1] (ops).webhook_url: …`). Values written as
`env:NAME` or `file:PATH` are read from the environment or a file; every value
read that way is a secret, and `scrub` hides it from anything printed.

`Config.checks` holds every check: the `[[checks]]` tables, then one for each
`[[jobs]]` entry with a `schedule` or `period` (named as the job, for its
repository). A `[[checks]]` table of the same name as such a job is an error,
not a merge: which table's `grace` (or key, or schedule) would win is not
obvious, and one place to say what a job is expected to do is clearer — keep
the schedule in the job or in the `[[checks]]` table, not both.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hookbus.adapters import registry
from hookbus.bus.filemodes import refuse_readable_secret
from hookbus.bus.jobs.config import JobConfig, load_jobs
from hookbus.bus.secrets import _resolve_tree, mark_database_url, mark_secret
from hookbus.bus.settings import (
    EXPECTATION_KEYS,
    BusSettings,
    Check,
    ConfigError,
    HttpSettings,
    SourceSettings,
    Strict,
    describe_errors,
    is_local_endpoint,
)
from hookbus.subscribers import load_subscriber_config, subscriber_label

log = logging.getLogger("hookbus.config")

DEFAULT_CONFIG_NAME = "hookbus.toml"


class Config(Strict):
    bus: BusSettings = BusSettings()
    http: HttpSettings = HttpSettings()  # [http]; [webhook] is its old name
    # Each subscriber table is validated by its own kind's model (subscribers/).
    subscribers: list[Any] = []
    jobs: list[JobConfig] = []  # validated by load_jobs, whose errors name the job
    checks: list[Check] = []  # [[checks]] and the jobs' own (see the module docstring)
    sources: list[SourceSettings] = []  # tools hookbus follows (DESIGN §14), validated by _load_sources
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


def load_config(path: Path | None, *, subscribers: Callable[[dict[str, Any]], bool] | None = None,
                http: bool = True) -> Config:
    """Read, resolve and validate a configuration file (or the embedded defaults).

    A command that needs only part of it loads only that part, so a value it does
    not use cannot stop it (`hookbus run` from cron, where a notifier's
    `env:SLACK_WEBHOOK_URL` is not set, must still back up):
    `subscribers`, given, chooses the [[subscribers]] tables (as written) to load;
    the others are neither resolved nor validated and are not in the Config.
    `http=False` leaves the [http] section out (its defaults stand).
    `hookbus check-config` and `serve` load everything."""
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
    return build_config(raw, source, subscribers=subscribers, http=http)


def build_config(raw: dict[str, Any], source: str, *, subscribers: Callable[[dict[str, Any]], bool] | None = None,
                 http: bool = True) -> Config:
    raw = _http_section(raw, source)
    if not http:
        raw = {key: value for key, value in raw.items() if key != "http"}
    _check_key_files(raw)
    subs_raw = raw.get("subscribers", [])
    resolved = _resolve_tree({key: value for key, value in raw.items() if key != "subscribers"}, "")
    try:
        jobs = load_jobs(resolved.pop("jobs", []))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    checks = _load_checks(resolved.pop("checks", []))
    sources = _load_sources(resolved.pop("sources", []))
    if not isinstance(subs_raw, list):
        raise ConfigError("subscribers: must be an array of tables ([[subscribers]])")
    try:
        base = Config.model_validate({**resolved, "source": source})
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, "")) from None
    loaded = []
    seen: set[str] = set()
    for index, table in enumerate(subs_raw):
        if subscribers is not None and not (isinstance(table, dict) and subscribers(table)):
            continue  # not this command's: its values are not even read
        # Resolved one table at a time, so an error names the subscriber: `subscribers[1] (ops).webhook_url: …`.
        sub = load_subscriber_config(_resolve_tree(table, subscriber_label(table, index)), index)
        if sub.name in seen:
            raise ConfigError(f"subscribers[{index}].name: {sub.name!r} is used twice; names must be unique")
        seen.add(sub.name)
        loaded.append(sub)
    for token in (*base.http.tokens, *base.http.hmac_secrets):
        mark_secret(token)
    base = base.model_copy(update={"checks": checks + _job_checks(jobs, checks)})
    _check_checks(base, len(checks), jobs)
    for key in (base.bus.curve_secret_key, base.bus.curve_client_key):
        mark_secret(key)
    if base.bus.on_postgres:  # the URL's password is never printed (§3); where the store is, is
        mark_database_url(base.bus.store)
    _check_endpoints(base.bus)
    if not base.http.is_loopback and base.http.enabled and not (base.http.tokens or base.http.hmac_secrets):
        raise ConfigError(
            f"http.listen: {base.http.listen} is not a loopback address and no authentication is "
            "configured; set http.tokens or http.hmac_secrets"
        )
    return base.model_copy(update={"subscribers": loaded, "jobs": jobs, "sources": sources})


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
    for key, endpoint in [*(("control", c) for c in bus.controls), ("publish", bus.publish)]:
        if not is_local_endpoint(endpoint) and not (bus.curve_configured or os.environ.get("HOOKBUS_CREDENTIAL")):
            raise ConfigError(
                f"bus.{key}: {endpoint} is not a loopback address and no CURVE keys are configured; set "
                "bus.curve_secret_key and bus.curve_authorized_keys (broker), or bus.curve_public_key and "
                "bus.curve_client_key or bus.credential (clients)")


def _label(table: Any, index: int) -> str:
    """`checks[0] (nightly)`: the index, and the name (else the job) when the table has one."""
    where = f"checks[{index}]"
    if isinstance(table, dict):
        name = table.get("name", table.get("job"))
        if isinstance(name, str):
            where += f" ({name})"
    return where


def _load_checks(tables: Any) -> list[Check]:
    """Validate the `[[checks]]` tables; the errors name the check, as the jobs' do."""
    if not isinstance(tables, list):
        raise ConfigError("checks: must be an array of tables ([[checks]])")
    checks = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"checks[{index}]: must be a table")
        try:
            checks.append(Check.model_validate(table))
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, _label(table, index))) from None
    return checks


def _load_sources(tables: Any) -> list[SourceSettings]:
    """Validate the `[[sources]]` tables: each of a kind some adapter follows, names unique;
    an error names the source (`sources[0] (borgitory).url: …`)."""
    if not isinstance(tables, list):
        raise ConfigError("sources: must be an array of tables ([[sources]])")
    kinds = registry.followers() if tables else {}  # imports every adapter: only when needed
    sources: list[SourceSettings] = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"sources[{index}]: must be a table")
        name = table.get("name")
        where = f"sources[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        try:
            source = SourceSettings.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, where)) from None
        if source.kind not in kinds:
            raise ConfigError(f"{where}.kind: no source kind {source.kind!r}; known: {', '.join(sorted(kinds)) or 'none'}")
        if any(s.name == source.name for s in sources):
            raise ConfigError(f"{where}.name: {source.name!r} is used twice; source names must be unique "
                              "(the name is part of every event's source)")
        if source.database is not None:
            source = source.model_copy(update={"database": source.database.expanduser()})
        sources.append(source)
    return sources


def _job_checks(jobs: list[JobConfig], checks: list[Check]) -> list[Check]:
    """The checks of the jobs that have a `schedule` or `period`; a [[checks]]
    table of the same name is an error naming both (see the module docstring)."""
    tables = {check.name: index for index, check in enumerate(checks)}
    derived = []
    for index, job in enumerate(jobs):
        if not job.expected:
            continue
        if job.name in tables:
            raise ConfigError(
                f"checks[{tables[job.name]}] ({job.name}).name: jobs[{index}] ({job.name}) has a "
                f"{'schedule' if job.schedule else 'period'} and so a check of this name already; give the "
                "schedule in one of them only (or another name to this check)")
        derived.append(Check(name=job.name, job=job.name, repository=job.repository,
                             **{key: getattr(job, key) for key in EXPECTATION_KEYS}))
    return derived


def _check_checks(config: Config, tables: int, jobs: list[JobConfig]) -> None:
    """Check names, ping keys and badge keys are unique (the error names the second);
    a UUID key and a badge key are credentials (kept out of logs); a slug can be
    guessed, so it is refused where the ping API is reachable from elsewhere.
    `tables`: how many of config.checks are [[checks]] tables (the jobs' follow)."""
    job_index = {job.name: index for index, job in enumerate(jobs)}
    names: set[str] = set()
    keys: dict[str, str] = {}  # a ping or badge key → which
    for index, check in enumerate(config.checks):
        where = f"checks[{index}] ({check.name})" if index < tables else f"jobs[{job_index[check.name]}] ({check.name})"
        if check.name in names:
            raise ConfigError(f"{where}.name: {check.name!r} is used twice; check names must be unique "
                              "(a check is named as its job unless it has a `name`)")
        names.add(check.name)
        for field, value in (("key", check.key), ("badge_key", check.badge_key)):
            if value is None:
                continue
            if value.lower() in keys:
                raise ConfigError(f"{where}.{field}: {value!r} is used twice (also as a {keys[value.lower()]}); "
                                  "ping keys and badge keys must be unique")
            keys[value.lower()] = "ping key" if field == "key" else "badge key"
        if check.badge_key is not None:
            mark_secret(check.badge_key)
        if check.key is None:
            continue
        if check.is_uuid:
            mark_secret(check.key)
        elif config.http.enabled and not config.http.is_loopback:
            raise ConfigError(f"{where}.key: a slug can be guessed and http.listen {config.http.listen} "
                              "is not a loopback address; use a UUID key")
