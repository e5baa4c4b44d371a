"""Templates over events: messages and shell commands, Jinja2 in a sandbox.

A template sees the event (`type`, `source`, `id`, `time`, `subject`, `data`,
`seq`, and the whole CloudEvent as `event`) and the helpers `format_time`,
`format_duration`, `format_size`, `is_error`, `summary` and `json`. Undefined
names are errors. A helper given a value it cannot read returns it as text, so
an odd event still gets its message.

Rendering is a pure function of template and event, so any error in it is
raised as TemplateError: retrying cannot help (the caller dead-letters the
event instead of holding the job's later events behind it).

In a shell command no value is pasted into the text: each `{{ … }}` becomes a
reference to an environment variable (bus/shellvalues.py), or the template is
refused where no reference could be safe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC
from functools import lru_cache
from typing import Any

import orjson
from jinja2 import StrictUndefined, TemplateError, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hookbus.bus.events.event import Event
from hookbus.bus.events.times import parse_time
from hookbus.bus.events.vocabulary import FAILED_OUTCOMES, TaskStatus
from hookbus.bus.notify.shellvalues import MARK, BoundCommand, UnsafeTemplate, bind

__all__ = ["SAMPLES", "BoundCommand", "TemplateError", "check_template", "context", "go_template_hint", "render",
           "render_shell"]


def _lenient(helper: Callable[..., str]) -> Callable[..., str]:
    """A helper that returns a value it cannot read as it is, instead of failing the message."""
    def wrapped(value: Any, *args: Any, **kwargs: Any) -> str:
        try:
            return helper(value, *args, **kwargs)
        except (ValueError, TypeError, OverflowError):
            return "" if value is None else str(value)
    wrapped.__name__, wrapped.__doc__ = helper.__name__, helper.__doc__
    return wrapped


def _format_time(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    """Given an RFC 3339 string or epoch seconds, return it formatted in UTC."""
    if value is None or value == "":
        return ""
    when = parse_time(value)
    if when is None:
        raise ValueError(f"not a time: {value!r}")
    return when.astimezone(UTC).strftime(fmt)


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _format_duration(seconds: Any, compact: bool = False) -> str:
    """Given seconds, return e.g. `4.2s`, `2m 05s`, `1h 02m 03s`; `compact`: at most
    the two largest units, without zeros, e.g. `45s`, `2m 5s`, `6h`, `3h 12m`, `2d 1h`
    (smaller units dropped, not rounded: 6 h and 40 s is `6h`)."""
    if seconds is None or seconds == "":
        return ""
    total = float(seconds)
    if total != total or abs(total) == float("inf"):
        raise ValueError(f"not a duration: {seconds!r}")
    parts: list[str] = []
    if compact:
        if total < 0:
            return "-" + _format_duration(-total, compact=True)
        tenths = round(total, 1)
        if tenths < 10 and tenths != int(tenths):
            return f"{tenths:.1f}s"
        rest, parts = round(total), []
        for unit, size in _UNITS:
            count, rest = divmod(rest, size)
            if count or parts:
                parts.append(f"{count}{unit}")
            if len(parts) == 2:
                break
        return " ".join(p for p in parts if not p.startswith("0")) or "0s"
    if total < 60:
        return f"{total:.1f}s" if total < 10 else f"{total:.0f}s"
    whole = round(total)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _format_size(size: Any) -> str:
    """Given bytes, return e.g. `512 B`, `1.5 KiB`, `2.0 GiB`."""
    if size is None or size == "":
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


format_time, format_duration, format_size = _lenient(_format_time), _lenient(_format_duration), _lenient(_format_size)


def _data(event: Any) -> dict[str, Any]:
    if isinstance(event, Event):
        return event.fields
    if isinstance(event, dict):
        inner = event.get("data")
        return inner if isinstance(inner, dict) and "type" in event else event
    return {}


def is_error(event: Any) -> bool:
    """True for a failed or cancelled job, a failed task or device, a failed validation, a check gone down."""
    type_ = event.type if isinstance(event, Event) else (event.get("type", "") if isinstance(event, dict) else "")
    data = _data(event)
    task: dict[str, Any] = data["task"] if isinstance(data.get("task"), dict) else {}
    return (
        str(type_).endswith(".failed")
        or type_ == "backup.check.down"
        or data.get("outcome") in FAILED_OUTCOMES
        or task.get("status") == TaskStatus.FAILED
        or (type_ == "backup.report" and bool(data.get("fail")))
    )


def summary(event: Any) -> str:
    """One line saying what the event is about."""
    data = _data(event)
    type_ = event.type if isinstance(event, Event) else event.get("type", "") if isinstance(event, dict) else ""
    subject = event.subject if isinstance(event, Event) else None
    who = data.get("job") or data.get("repository") or subject or data.get("job_id") or ""
    if type_ == "backup.report":
        return f"{who or 'run'}: {data.get('ok', 0)} of {data.get('total', 0)} devices backed up, {data.get('fail', 0)} failed"
    if isinstance(data.get("task"), dict):
        task = data["task"]
        return f"{who}: task {task.get('name', '?')} {task.get('status', '')}".strip()
    if isinstance(data.get("device"), dict):
        return f"{data['device'].get('host', '?')}: {'failed' if is_error(event) else 'backed up'}"
    outcome = data.get("outcome")
    return f"{who}: {type_}" + (f" {outcome}" if outcome else "")


def _json(value: Any, indent: bool = False) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0, default=str).decode()


HELPERS: dict[str, Any] = {
    "format_time": format_time,
    "format_duration": format_duration,
    "format_size": format_size,
    "is_error": is_error,
    "summary": summary,
    "json": _json,
}


def _environment(shell: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
        finalize=_shell_value if shell else None,
    )
    env.globals.update(HELPERS)
    env.filters.update({k: v for k, v in HELPERS.items() if k != "summary"})
    return env


_VALUES = "_hookbus_shell_values"  # the render's list of values, in its context


@pass_context
def _shell_value(ctx: Context, value: Any) -> str:
    """Keep a value aside and leave a marker where it goes (bus/shellvalues.py). A command
    gets a boolean as the shell and JSON write it, `true`/`false`, not Python's `True`."""
    if value is None:
        value = ""
    elif isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        value = _json(value)
    values: list[str] = ctx[_VALUES]
    values.append(str(value))
    return f"{MARK}{len(values)}{MARK}"


_ENVS = {False: _environment(False), True: _environment(True)}


@lru_cache(maxsize=256)
def _compile(source: str, shell: bool) -> Any:
    if shell and any(True for _ in _ENVS[True].parse(source).find_all(nodes.FilterBlock)):
        # A filter block's output skips `finalize`, so its values would be pasted into the command.
        raise TemplateError("{% filter %} blocks cannot be used in a command; apply the filter to the value: "
                            "{{ data.x | upper }}")
    return _ENVS[shell].from_string(source)


def context(event: Event) -> dict[str, Any]:
    body = event.to_dict()
    return {"type": event.type, "source": event.source, "id": event.id, "time": event.time, "subject": event.subject,
            "data": event.data if event.data is not None else {}, "seq": event.seq, "event": body}


# Go's text/template, as Backrest writes it: `{{ .Error }}`, `{{ if .Error -}}`, `{{- .Plan.Id }}`,
# `{{ range .Items }}`, `{{ end }}`, `{{ .FormatTime .CurTime }}`. No Jinja2 expression starts with
# a dot, and Jinja2 has no `{{ end }}`.
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(?:\.[A-Za-z]|(?:if|range|with|else|end|define|template|block)\b\s*(?:\.|-?\}\})"
                          r"|(?:not|and|or|eq|ne|len|index|printf)\s+\.[A-Za-z])")
# Backrest's template words → hookbus's (the table "From Backrest's template words" in docs/backrest.md).
_GO_WORDS = {".Error": "data.error", ".Plan": "data.plan", ".Repo": "data.repository", ".Event": "data.condition",
             ".Task": "data.task.name", ".SnapshotId": "data.snapshot_id", ".SnapshotStats": "data.stats",
             ".CurTime": "time", ".Duration": "data.duration_s", ".FormatTime": "format_time(time)",
             ".Summary": "summary(event)", ".JsonMarshal": "json(data)"}
_FIRST_GO_WORD = re.compile(r"\.(" + "|".join(w[1:] for w in _GO_WORDS) + r")\b")


def go_template_hint(source: str) -> str | None:
    """Given a template, say how to write it in Jinja2 when it is written as a Go template
    (Backrest's syntax), else None."""
    if not _GO_TEMPLATE.search(source):
        return None
    word = _FIRST_GO_WORD.search(source)
    go, jinja = (f".{word.group(1)}", _GO_WORDS[f".{word.group(1)}"]) if word else (".Error", "data.error")
    return (f"this looks like a Go template (Backrest's syntax); hookbus templates are Jinja2: write "
            f"{{{{ {jinja} }}}} instead of {{{{ {go} }}}}, {{% if … %}}…{{% endif %}} instead of "
            "{{ if … }}…{{ end }}; see the table \"From Backrest's template words\" in docs/backrest.md")


_NO_ATTRIBUTE = re.compile(r"has no attribute '(error|message)'")


def _explain(source: str, names: dict[str, Any], exc: BaseException) -> str:
    """A template's error, with a hint where the cause is a usual one: Go syntax, or a task
    event's text looked for in `data.error` (it is in `data.task.message`)."""
    hint = go_template_hint(source)
    if hint is not None:
        return hint
    text = str(getattr(exc, "message", None) or exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
    missing = _NO_ATTRIBUTE.search(text)
    if missing and str(names.get("type", "")).startswith("backup.task.") and f"data.{missing.group(1)}" in source:
        text += (f"; on a task event ({names['type']}) the text is in data.task.message: did you mean "
                 "data.task.message? (or data.get(\"error\") where the key may be absent)")
    return text


def _render(source: str, shell: bool, names: dict[str, Any]) -> str:
    try:
        return str(_compile(source, shell).render(names))
    except (Exception, RecursionError) as exc:  # a helper or filter on odd data: the same every time
        hint = _explain(source, names, exc)
        if isinstance(exc, TemplateError) and hint == (getattr(exc, "message", None) or str(exc)):
            raise
        raise TemplateError(hint) from None


def render(source: str, event: Event, **extra: Any) -> str:
    """Render a message template against an event. Raise TemplateError."""
    return _render(source, False, {**context(event), **extra})


def render_shell(source: str, event: Event, *, shell: str, **extra: Any) -> BoundCommand:
    """Render a command template to be run by `shell` (or its own `#!` line): the
    text refers to each value by an environment variable, given beside it.
    Raise TemplateError, also where the template puts a value no reference can
    make safe."""
    values: list[str] = []
    text = _render(source, True, {**context(event), **extra, _VALUES: values})
    try:
        return bind(text, values, shell)
    except UnsafeTemplate as exc:
        raise TemplateError(str(exc)) from None


def check_template(source: str, samples: Iterable[Event], *, shell: str | None = None, **extra: Any) -> None:
    """The one check of a template, at start-up: given a template and the sample
    events it is to be rendered with, compile it and render it against each, as
    it will be rendered — a command run by `shell`, or, without `shell`, a
    message — with the `extra` names in scope (a job's `job` and `task`, a
    message's helpers, a digest). Raise TemplateError saying which sample it
    failed on; with no samples, nothing is checked."""
    if shell is not None and MARK in source:
        raise TemplateError("the command holds a NUL character")
    for event in samples:
        try:
            if shell is None:
                render(source, event, **extra)
            else:
                render_shell(source, event, shell=shell, **extra)
        except TemplateError as exc:
            raise TemplateError(f"{exc.message} (rendering a sample {event.type} event)") from None


def _sample(type_: str, data: dict[str, Any], subject: str | None = "MyRepository",
            time: str = "2026-11-21T03:38:00Z") -> Event:
    return Event(id=f"sample-{type_}", source="hookbus://sample", type=type_, time=time, subject=subject, data=data,
                 seq=1)


_TASKS = [
    {"index": 0, "name": "Database Dump", "kind": "hook", "phase": "pre", "status": "completed", "critical": True},
    {"index": 1, "name": "backup", "kind": "backup", "phase": "main", "status": "completed", "critical": True},
]

SAMPLES: dict[str, Event] = {e.type: e for e in [
    _sample("backup.job.started", {"job_id": "job-abc-123", "job": "nightly", "repository": "MyRepository",
                                   "job_type": "scheduled", "host": "db1", "tasks": _TASKS}),
    _sample("backup.job.finished", {
        "job_id": "job-abc-123", "job": "nightly", "repository": "MyRepository", "outcome": "success", "reason": None,
        "failed_hook": None, "failed_tasks": [], "counts": {"completed": 7, "failed": 0, "skipped": 0, "total": 7},
        "tasks": _TASKS, "error": None, "started_at": "2026-11-21T03:30:00Z", "finished_at": "2026-11-21T03:38:00Z",
        "duration_s": 480.0, "stats": {}}),
    _sample("backup.task.started", {"job_id": "job-abc-123", "task": {**_TASKS[1], "status": "running"}}),
    _sample("backup.task.finished", {"job_id": "job-abc-123", "task": {**_TASKS[1], "exit_code": 0, "duration_s": 42.0,
                                                                       "message": "", "output_tail": ""}}),
    _sample("backup.device.succeeded", {"job_id": "run-1", "device": {"host": "switch1", "os_name": "eos"}, "error": None}, None),
    _sample("backup.device.failed", {"job_id": "run-1", "device": {"host": "switch2", "os_name": "ios"},
                                     "error": "timeout connecting"}, None),
    _sample("backup.report", {"job_id": "run-1", "total": 2, "ok": 1, "fail": 1, "start": "2026-11-21T03:00:00Z",
                              "stop": "2026-11-21T03:01:00Z", "duration_s": 60.0,
                              "failures": [{"host": "switch2", "error": "timeout connecting"}]}, None),
    _sample("backup.vcs.saved", {"success": True, "tag_name": "20261121_030100"}, None),
    _sample("backup.log", {"job_id": "job-abc-123", "message": "borg: 1.2 GiB deduplicated"}),
    _sample("backup.validation.finished", {
        "job_id": "run-1", "validator": "ansible", "subscriber": "validate-configs", "outcome": "failed",
        "reason": "task_failed",
        "summary": "validate-configs.yml failed on 1 of 1 host(s) (ok 3, changed 0, failed 1, unreachable 0)",
        "findings": ["localhost: No config is empty (switch2.cfg): switch2.cfg is empty"], "findings_total": 1,
        "details": {"playbook": "/etc/hookbus/validate-configs.yml", "inventory": "localhost,", "exit_code": 2,
                    "duration_s": 4.2, "hosts": {"localhost": {"ok": 3, "changed": 0, "failed": 1, "unreachable": 0,
                                                              "skipped": 0, "rescued": 0, "ignored": 0}},
                    "totals": {"ok": 3, "changed": 0, "failed": 1, "unreachable": 0, "skipped": 0}, "output_tail": "…"},
        "trigger": {"type": "backup.report", "id": "report-run-1", "source": "netcfgbu://lab", "seq": 41}}, None),
    _sample("hookbus.delivery.failed", {"subscriber": "ops", "event_id": "e-1", "event_type": "backup.job.finished",
                                        "event_seq": 7, "attempts": 10, "error": "timed out"}, None),
    # The checks engine's events (DESIGN §10): every field is always there, null when it does not apply.
    _sample("backup.check.down", {
        "check": "nightly", "job": "nightly", "repository": "MyRepository", "reason": "missed",
        "expected_at": "2026-12-04T02:00:00.000Z", "deadline": "2026-12-04T03:00:00.000Z", "schedule": "0 2 * * *",
        "grace_s": 3600, "started_at": None, "max_runtime_s": 21600, "last_seen": "2026-12-03T02:00:00.000Z",
        "last_outcome": "success", "error": None, "failures": 0, "job_id": None, "reminder": 0,
        "after_silence": False}, time="2026-12-04T03:00:00.000Z"),
    _sample("backup.check.up", {
        "check": "nightly", "job": "nightly", "repository": "MyRepository", "down_since": "2026-12-04T02:00:00.000Z",
        "down_for_s": 11520, "at": "2026-12-04T05:12:00.000Z", "outcome": "success", "job_id": "job-abc-123"},
        time="2026-12-04T05:12:00.000Z"),
    _sample("backup.job.anomaly", {
        "job_id": "job-abc-123", "job": "nightly", "repository": "MyRepository", "metric": "duration_s",
        "value": 4.0, "median": 7500.0, "runs": 5}),
]}
