"""restic: the output of `restic backup --json` → `backup.job.finished`.

restic prints JSON lines on stdout (`status` while it works, `summary` at the
end of a successful backup) and, since 0.15/0.17, `error` and `exit_error`
lines on stderr. Older versions print their errors on stderr as plain text
("Fatal: unable to open config file: …"). So both streams may be piped in
(`2>&1`): a line starting with `{` must be a JSON object; any other line is
kept as restic's text output.

    POST /ingest/restic?job=nightly&repository=MyRepository   (body: the output)
    restic backup --json … 2>&1 | hookbus emit --from restic --job nightly --repository MyRepository

Outcome: success with a summary and no errors; warning with a summary and
errors (restic's exit status 3: some files could not be read); failed without
a summary, with an `exit_error`, or with a failing `--exit-status`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hookbus.adapters.common import (
    OUTPUT_TAIL_BYTES,
    count,
    decode_json,
    error_line,
    job_finished,
    json_type,
    stable_id,
    timestamp,
)
from hookbus.adapters.common import field as get
from hookbus.bus.events.event import Event, EventError
from hookbus.bus.events.host import host_name
from hookbus.bus.events.text import cut_front
from hookbus.bus.events.vocabulary import Outcome, Reason

# Summary counters restic reports, kept in `stats` under the same names.
COUNTERS = ("files_new", "files_changed", "files_unmodified", "dirs_new", "dirs_changed", "dirs_unmodified",
            "data_blobs", "tree_blobs", "data_added", "data_added_packed", "total_files_processed",
            "total_bytes_processed")
MESSAGE_TYPES = ("status", "summary", "error", "verbose_status", "exit_error", "excluded_item")
INCOMPLETE = 3  # restic's exit status for a snapshot made while some files could not be read


@dataclass
class Output:
    summary: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    exit_error: dict[str, Any] | None = None
    text: list[str] = field(default_factory=list)
    last_status: dict[str, Any] | None = None


def parse_output(raw: str) -> Output:
    """Given restic's --json output (stdout, maybe with stderr), return what it says.

    Raise EventError naming the line (`line 3`, `line 3.files_new`) when a JSON line is malformed.
    """
    out = Output()
    for number, line in enumerate(raw.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("{"):
            out.text.append(line.rstrip())
            continue
        where = f"line {number}"
        msg = decode_json(stripped, where)
        if not isinstance(msg, dict):
            raise EventError(where, f"must be a JSON object, not {json_type(msg)}")
        kind = get(msg, "message_type", str, where=where, required=True)
        if kind == "summary":
            out.summary = check_summary(msg, where)
        elif kind == "status":
            out.last_status = msg
        elif kind == "error":
            out.errors.append(error_text(msg, where))
        elif kind == "exit_error":
            get(msg, "code", int, where=where)
            get(msg, "message", str, where=where)
            out.exit_error = msg
        elif kind not in MESSAGE_TYPES:
            raise EventError(f"{where}.message_type", f"unknown restic message type {kind[:40]!r}; "
                             f"expected one of {', '.join(MESSAGE_TYPES)}")
    return out


def check_summary(msg: dict[str, Any], where: str) -> dict[str, Any]:
    for name in COUNTERS:
        count(msg, name, where=where)
    get(msg, "total_duration", float, where=where)
    get(msg, "snapshot_id", str, where=where)
    get(msg, "dry_run", bool, where=where)
    timestamp(msg, "backup_start", where=where)
    timestamp(msg, "backup_end", where=where)
    return msg


def error_text(msg: dict[str, Any], where: str) -> str:
    error = msg.get("error")
    if isinstance(error, dict):  # restic ≥ 0.17: {"message": …}
        text = get(error, "message", str, where=f"{where}.error") or ""
    else:
        text = get(msg, "error", str, where=where) or ""
    item = get(msg, "item", str, where=where)
    return f"{item}: {text}" if item and item not in text else text


def stats(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's numbers as `stats`: snapshot id, file counts, data added, duration."""
    out: dict[str, Any] = {"snapshot_id": summary.get("snapshot_id")}
    for name in COUNTERS:
        if summary.get(name) is not None:
            out[name] = summary[name]
    if summary.get("total_duration") is not None:
        out["duration_s"] = round(float(summary["total_duration"]), 3)
    if summary.get("dry_run"):
        out["dry_run"] = True
    return out


def events(raw: str, *, source: str, job: str | None, repository: str | None, exit_status: int | None = None,
           host: str | None = None) -> list[Event]:
    """Given restic's output, return the job's `backup.job.finished`."""
    out = parse_output(raw)
    summary = out.summary
    failed_exit = exit_status is not None and exit_status not in (0, INCOMPLETE)
    reason: Reason | None = None
    if summary is None or out.exit_error is not None or failed_exit:
        outcome, reason = Outcome.FAILED, Reason.BACKUP_ERROR
    elif out.errors or exit_status == INCOMPLETE:
        outcome = Outcome.WARNING
    else:
        outcome = Outcome.SUCCESS
    error = None
    if outcome != Outcome.SUCCESS:
        error = ((out.exit_error or {}).get("message") or (out.errors[-1] if out.errors else None)
                 or error_line("\n".join(out.text))
                 or (f"restic exited with status {exit_status}" if failed_exit else None)
                 or "restic printed no summary: the backup did not complete")
    lines = out.text + out.errors
    snapshot = summary.get("snapshot_id") if summary else None
    # The same output posted twice is the same event: ids come from the snapshot, else from the output.
    job_id = f"restic-{snapshot}" if snapshot else f"restic-{stable_id(source, raw, exit_status)[:20]}"
    extra: dict[str, Any] = {"host": host, "snapshot_id": snapshot,
                             "exit_status": exit_status, "errors": len(out.errors)}
    if summary:
        extra["stats"] = stats(summary)
        if summary.get("total_duration") is not None:
            extra["duration_s"] = round(float(summary["total_duration"]), 3)
    if lines:
        extra["output_tail"] = cut_front("\n".join(lines), OUTPUT_TAIL_BYTES)
    return [job_finished(source, job_id, job=job, repository=repository, outcome=outcome, reason=reason, error=error,
                         started_at=timestamp(summary, "backup_start") if summary else None,
                         finished_at=timestamp(summary, "backup_end") if summary else None, **extra)]


async def ingest(request: web.Request) -> list[Event]:
    body = await request.read()
    if not body.strip():
        raise EventError("body", "is empty: post the output of `restic backup --json`")
    exit_status = request.query.get("exit_status")
    if exit_status is not None and not exit_status.isdigit():
        raise EventError("exit_status", "must be restic's exit status, an integer")
    return events(body.decode(errors="replace"), source=f"restic://{request.remote or 'unknown'}",
                  job=request.query.get("job"), repository=request.query.get("repository"),
                  exit_status=int(exit_status) if exit_status is not None else None)


def from_cli(args: argparse.Namespace) -> list[Event]:
    """`hookbus emit --from restic`: restic's --json output on stdin."""
    if sys.stdin.isatty():
        raise ValueError("--from restic reads the output of `restic backup --json` on stdin; pipe it in")
    # Empty input is a report too: restic died before printing anything (no repository, wrong password).
    raw = sys.stdin.buffer.read().decode(errors="replace")
    host = host_name()
    return events(raw, source=f"restic://{host}", job=args.job, repository=args.repository or args.subject,
                  exit_status=args.exit_status, host=host)
