"""batfish: load the backed-up configs as a Batfish snapshot and run the
standard checks; report them as `backup.validation.finished`.

On each matching event (by default a netcfgbu `backup.report`) the files in
`configs_dir` (hidden ones, such as netcfgbu's `.git`, left out) are packed as
a snapshot (`<snapshot>/configs/…`; a directory that already has a `configs/`
folder is taken as a whole Batfish snapshot layout) and uploaded with pybatfish
to the service at `host`, into `network`, as snapshot `hookbus-<name>`
(replaced on every run, so the last one stays there for a closer look). Then
the `questions` are answered, by default all four standard ones:

| question | an error | a warning |
|---|---|---|
| initIssues | an issue whose type is an error (parse or convert error) | any other issue |
| fileParseStatus | a file that FAILED to parse, or is EMPTY | PARTIALLY_UNRECOGNIZED, UNKNOWN, UNSUPPORTED |
| parseWarning | — | every row |
| undefinedReferences | every row | — |

Any error makes the outcome `failed` (reason `findings`); warnings are
counted and listed, not failed. A snapshot Batfish cannot initialise is
`failed` with reason `snapshot_failed`; an empty or missing `configs_dir`,
reason `no_configs`; a check that outlasts `timeout`, reason `timeout`. A
Batfish service that cannot be reached is a delivery error (retried, then
dead-lettered), not a validation result.

pybatfish is blocking (requests, polling with time.sleep): it runs in a
daemon thread of its own, awaited with the timeout; a thread left behind by
a timeout ends with its own HTTP timeouts and never delays shutdown.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from hookbus.bus.delivery.subscriber import DeliveryError, Subscriber, SubscriberConfig, in_daemon_thread
from hookbus.bus.delivery.validator_results import Reporter, Result
from hookbus.bus.events.event import Event
from hookbus.bus.events.vocabulary import Outcome
from hookbus.bus.settings import ConfigError, Duration

log = logging.getLogger("hookbus.subscriber.batfish")

Question = Literal["initIssues", "fileParseStatus", "parseWarning", "undefinedReferences"]
ALL_QUESTIONS: list[Question] = ["initIssues", "fileParseStatus", "parseWarning", "undefinedReferences"]
DEFAULT_PORT = 9996  # Batfish's v2 API (pybatfish's default)
REQUEST_TIMEOUT = 60.0  # per HTTP request; the whole check is bounded by `timeout`
CONNECT_TIMEOUT = 5.0
ROWS_IN_EVENT = 5  # raw rows kept per question in `details.rows`
NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # what Batfish accepts as a network or snapshot name
PARSE_ERRORS = {"FAILED", "EMPTY"}
PARSE_WARNINGS = {"PARTIALLY_UNRECOGNIZED", "UNKNOWN", "UNSUPPORTED"}


class BatfishConfig(SubscriberConfig):
    host: str = "localhost"  # HOST, HOST:PORT, or http(s)://HOST[:PORT]
    network: str = "hookbus"
    configs_dir: Path
    questions: list[Question] = Field(default_factory=lambda: list(ALL_QUESTIONS), min_length=1)
    timeout: Duration = Field(300.0, gt=0, le=86400)  # for upload, parsing and all questions together

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        target(value)
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("letters, digits, '-' and '_' only (a Batfish network name)")
        return value

    @field_validator("questions")
    @classmethod
    def _questions(cls, value: list[Question]) -> list[Question]:
        if len(set(value)) != len(value):
            raise ValueError("lists a question twice")
        return value


def target(host: str) -> tuple[str, int, bool]:
    """Given `host` as configured, return (hostname, port, ssl); raise ValueError if it is not one."""
    text = host if "://" in host else f"http://{host}"
    parts = urlsplit(text)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError("must be HOST, HOST:PORT or http(s)://HOST[:PORT], e.g. localhost:9996")
    return parts.hostname, port, parts.scheme == "https"


def pack_snapshot(configs_dir: Path) -> tuple[bytes, int]:
    """Zip the configs as a Batfish snapshot; return (zip bytes, number of config files)."""
    whole = (configs_dir / "configs").is_dir()  # already a snapshot layout (configs/, hosts/, batfish/, …)
    buf = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(configs_dir.rglob("*")):
            rel = path.relative_to(configs_dir)
            if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                continue
            zf.write(path, f"snapshot/{rel}" if whole else f"snapshot/configs/{rel}")
            count += 1 if not whole or rel.parts[0] == "configs" else 0
    return buf.getvalue(), count


class SnapshotFailed(Exception):
    """Batfish could not initialise the snapshot; the message carries its log tail."""


def ask_batfish(host: str, network: str, snapshot: str, data: bytes,
                questions: list[Question]) -> dict[str, list[dict[str, Any]]]:
    """Upload the snapshot and answer the questions; return each question's rows (blocking)."""
    from pybatfish.client.session import Session
    from pybatfish.exception import BatfishException

    hostname, port, ssl = target(host)
    accepts = inspect.signature(Session).parameters
    options: dict[str, Any] = {"host": hostname, "ssl": ssl, "port": port}
    if "timeout" in accepts:  # pybatfish releases from 2026 on; before, requests use pybatfish's own defaults
        options["timeout"] = REQUEST_TIMEOUT
    bf = Session(**options)
    bf.set_network(network)
    with tempfile.TemporaryDirectory(prefix="hookbus-batfish-") as tmp:
        upload = Path(tmp) / "snapshot.zip"
        upload.write_bytes(data)
        try:
            bf.init_snapshot(str(upload), name=snapshot, overwrite=True)
        except BatfishException as exc:
            raise SnapshotFailed(str(exc)) from None
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in questions:
        question = getattr(bf.q, name, None)
        if question is None:
            raise DeliveryError(f"the Batfish service at {host} does not offer the question {name}", permanent=True)
        answer = question().answer(snapshot=snapshot)
        rows[name] = [dict(row) for row in getattr(answer, "rows", [])]
    return rows


def _lines(value: Any) -> str:
    """FileLines JSON ({filename, lines}) or a list of them, as `file:1,2`."""
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    out = []
    for item in items:
        if isinstance(item, dict):
            lines = ",".join(str(n) for n in item.get("lines") or [])
            out.append(f"{item.get('filename', '?')}{':' + lines if lines else ''}")
    return "; ".join(out)


def classify(question: str, row: dict[str, Any]) -> tuple[str | None, str]:
    """Given a row of a question's answer, return ("error"|"warning"|None, a one-line finding)."""
    def text(key: str) -> str:
        return " ".join(str(row.get(key) or "").split())

    if question == "initIssues":
        kind = text("Type")
        where = _lines(row.get("Source_Lines")) or ", ".join(row.get("Nodes") or [])
        line = f"{kind}: {text('Details')}" + (f" ({where})" if where else "")
        return ("error" if "error" in kind.lower() else "warning"), line
    if question == "fileParseStatus":
        status = text("Status")
        level = "error" if status in PARSE_ERRORS else "warning" if status in PARSE_WARNINGS else None
        return level, f"{text('File_Name')}: parse status {status}"
    if question == "parseWarning":
        line = f"{text('Filename')}:{text('Line')}: parse warning: {text('Text')}"
        comment = text("Comment")
        return "warning", line + (f" ({comment})" if comment and comment != "(not provided)" else "")
    where = _lines(row.get("Lines")) or text("File_Name")
    return "error", f"{where}: undefined {text('Struct_Type')} '{text('Ref_Name')}' ({text('Context')})"


ERROR_WORDS = {"initIssues": "init error(s)", "fileParseStatus": "file(s) failed to parse or empty",
               "undefinedReferences": "undefined reference(s)"}


def judge(answers: dict[str, list[dict[str, Any]]], files: int) -> Result:
    """Given each question's rows, return the validation result."""
    errors: list[str] = []
    warnings: list[str] = []
    tally: dict[str, dict[str, int]] = {}
    for question, rows in answers.items():
        counts = tally.setdefault(question, {"errors": 0, "warnings": 0})
        for row in rows:
            level, line = classify(question, row)
            if level is not None:
                (errors if level == "error" else warnings).append(line)
                counts[level + "s"] += 1
    details: dict[str, Any] = {"files": files, "errors": len(errors), "warnings": len(warnings), "counts": tally,
                               "rows": {q: rows[:ROWS_IN_EVENT] for q, rows in answers.items()}}
    also = f"; {len(warnings)} warning(s)" if warnings else ""
    if errors:
        listed = ", ".join(f"{c['errors']} {ERROR_WORDS[q]}" for q, c in tally.items() if c["errors"])
        return Result(Outcome.FAILED, f"Batfish found {len(errors)} error(s) in {files} config file(s): {listed}{also}",
                      reason="findings", findings=errors + warnings, details=details)
    return Result(Outcome.SUCCESS, f"Batfish: {files} config file(s) loaded, no errors{also}", findings=warnings, details=details)


class BatfishSubscriber(Subscriber):
    Config = BatfishConfig
    default_events = ["backup.report"]
    concurrency = 1  # one snapshot at a time: they share a name, and Batfish works hard on each
    config: BatfishConfig

    def __init__(self, config: BatfishConfig) -> None:
        super().__init__(config)
        try:
            import pybatfish  # noqa: F401  (checked at start-up, used in a thread)
        except ImportError:
            raise ConfigError(f"subscriber {config.name} (batfish): pybatfish is not installed; "
                              "install it with: pip install 'hookbus[batfish]'") from None
        logging.getLogger("pybatfish").setLevel(logging.WARNING)  # it logs every status poll at INFO
        self.snapshot = "hookbus-" + re.sub(r"[^A-Za-z0-9_-]", "_", config.name)
        self.reporter = Reporter(config.name, "batfish")

    def handler_timeout(self) -> float:
        # Our own timeout first, then time to publish the result.
        return float(self.config.timeout) + CONNECT_TIMEOUT + 35.0

    async def handle(self, event: Event) -> None:
        await self.reporter.report(event, self.run_checks, self.context.publish)

    async def reachable(self) -> None:
        """Fail fast, and retryably, when nothing listens at `host` (pybatfish would retry for minutes)."""
        hostname, port, _ = target(self.config.host)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, writer = await asyncio.open_connection(hostname, port)
        except (OSError, TimeoutError) as exc:
            raise DeliveryError(f"Batfish service at {hostname}:{port} not reachable: {exc or 'timed out'}") from None
        writer.close()

    async def run_checks(self) -> Result:
        cfg = self.config
        details = {"host": cfg.host, "network": cfg.network, "snapshot": self.snapshot,
                   "configs_dir": str(cfg.configs_dir), "questions": list(cfg.questions)}
        if not cfg.configs_dir.is_dir():
            return Result(Outcome.FAILED, f"no configs to validate: {cfg.configs_dir} is not a directory",
                          reason="no_configs", details=details)
        data, files = await asyncio.to_thread(pack_snapshot, cfg.configs_dir)
        if not files:
            return Result(Outcome.FAILED, f"no configs to validate in {cfg.configs_dir}", reason="no_configs", details=details)
        await self.reachable()
        try:
            async with asyncio.timeout(cfg.timeout):
                answers = await in_daemon_thread(ask_batfish, cfg.host, cfg.network, self.snapshot, data, cfg.questions,
                                                 name=f"batfish-{self.name}")
        except TimeoutError:
            return Result(Outcome.FAILED, f"Batfish checks did not finish within {cfg.timeout:g}s", reason="timeout",
                          findings=[f"stopped waiting after {cfg.timeout:g}s"], details={**details, "files": files})
        except SnapshotFailed as exc:
            tail = [line for line in str(exc).splitlines() if line.strip()][-5:]
            return Result(Outcome.FAILED, f"Batfish could not load the {files} config file(s) as a snapshot",
                          reason="snapshot_failed", findings=tail, details={**details, "files": files})
        except DeliveryError:
            raise
        except Exception as exc:  # requests / pybatfish errors: the service failed or refused
            status = getattr(getattr(exc, "response", None), "status_code", None)
            permanent = isinstance(status, int) and 400 <= status < 500 and status not in (408, 425, 429)
            raise DeliveryError(f"Batfish service at {cfg.host}: {type(exc).__name__}: {exc}", permanent=permanent) from None
        result = judge(answers, files)
        result.details = {**details, **result.details}
        return result


SUBSCRIBER = BatfishSubscriber
