"""Default notification texts, and a message's title and body (fitting them into a
target's size limit is `hookbus.bus.events.text`).

A message is plain text whose first line is its title (Slack's header, Apprise's
title) and whose rest is its body. The defaults for `backup.job.finished` are
the four texts of the design, byte for byte, and so are the checks' (a check
down, back up; DESIGN §10); a `backup.report` gets netcfgbu's own
`Summary: TOTAL=…` shape; every other event type has a short default.
A subscriber's `template` replaces them: one string for every event type, or a
table of event-type globs (and `digest`) → template.
"""

from __future__ import annotations

import fnmatch
from datetime import UTC
from typing import Any

from hookbus.bus.events.event import Event
from hookbus.bus.events.times import parse_time
from hookbus.bus.notify.templates import SAMPLES, TemplateError, is_error, render, summary

__all__ = ["DIGEST", "GENERIC", "NETCFGBU_TIME", "TEMPLATES", "digest_context", "render_message", "sample_digest",
           "samples_for", "split_title", "template_for"]

NETCFGBU_TIME = "%Y-%b-%d %I:%M:%S %p"  # netcfgbu's Report.TIME_FORMAT
FIRST_FAILURES = 10  # a digest lists this many failures, then counts the rest

_JOB_PRELUDE = """\
{%- set d = data if data is mapping else {} -%}
{%- set repo = d.get("repository") or subject or d.get("job") or d.get("job_id") or "?" -%}
{%- set c = d.get("counts") if d.get("counts") is mapping else none -%}
{%- set ft = d.get("failed_tasks") -%}
{%- set failed_tasks = ft if ft is sequence and ft is not string else [] -%}
"""

# The counts line is left out for jobs reported without a task list (no `counts`).
_COUNTS_ALL = ('{% if c %}Tasks Completed: {{ c.get("completed", 0) }}, Skipped: {{ c.get("skipped", 0) }}, '
               'Total: {{ c.get("total", 0) }}\n{% endif %}')
_JOB_ID = '{% if d.get("job_id") is not none %}Job ID: {{ d.get("job_id") }}{% endif %}'
# DESIGN §6: a failure or warning text says why when the job's data has an `error`: one line, at
# most 300 characters, right after the description line. Without `error` the texts are exact.
_JOB_ERROR = ('{% if d.get("error") %}\nError: {{ (d.get("error") | string | trim | replace("\\r", "") '
              '| replace("\\n", " "))[:300] }}{% endif %}')

JOB_FINISHED = _JOB_PRELUDE + """\
{%- set outcome = d.get("outcome") -%}
{%- set reason = d.get("reason") -%}
{%- if outcome == "success" -%}
✅ Backup Job Completed Successfully

Backup job for '{{ repo }}' completed successfully.

{% if c %}Tasks Completed: {{ c.get("completed", 0) }}, Total: {{ c.get("total", 0) }}
{% endif %}""" + _JOB_ID + """
{%- elif outcome == "warning" -%}
⚠️ Backup Job Completed with Warnings

Backup job for '{{ repo }}' completed but some tasks failed.""" + _JOB_ERROR + """

{% if failed_tasks %}Failed Tasks: {{ failed_tasks | join(", ") }}
{% endif %}""" + _COUNTS_ALL + _JOB_ID + """
{%- elif outcome == "cancelled" or reason == "cancelled" -%}
🚫 Backup Job Cancelled

Backup job for '{{ repo }}' was cancelled.

""" + _COUNTS_ALL + _JOB_ID + """
{%- elif reason == "critical_hook" -%}
❌ Backup Job Failed - Critical Hook Error

Backup job for '{{ repo }}' failed due to critical hook failure.""" + _JOB_ERROR + """

{% if d.get("failed_hook") %}Failed Hook: {{ d.get("failed_hook") }}
{% endif %}""" + _COUNTS_ALL + _JOB_ID + """
{%- elif reason == "backup_error" -%}
❌ Backup Job Failed - Backup Error

Backup job for '{{ repo }}' failed during backup process.""" + _JOB_ERROR + """

""" + _COUNTS_ALL + _JOB_ID + """
{%- elif outcome == "failed" -%}
❌ Backup Job Failed

Backup job for '{{ repo }}' failed{% if reason == "task_failed" %} because a critical task failed{% endif %}.\
""" + _JOB_ERROR + """

{% if failed_tasks %}Failed Tasks: {{ failed_tasks | join(", ") }}
{% endif %}""" + _COUNTS_ALL + _JOB_ID + """
{%- else -%}
ℹ️ Backup Job Finished

Backup job for '{{ repo }}' finished{% if outcome %} ({{ outcome }}){% endif %}.

""" + _COUNTS_ALL + _JOB_ID + """
{%- endif -%}
"""

JOB_STARTED = _JOB_PRELUDE + """\
▶️ Backup Job Started

Backup job for '{{ repo }}' started{% if d.get("job_type") %} ({{ d.get("job_type") }}){% endif %}\
{% if d.get("host") %} on {{ d.get("host") }}{% endif %}.

""" + _JOB_ID

TASK = """\
{%- set d = data if data is mapping else {} -%}
{%- set t = d.get("task") if d.get("task") is mapping else {} -%}
{%- set status = t.get("status") or ("running" if type == "backup.task.started" else "finished") -%}
{%- set icon = {"completed": "✅", "failed": "❌", "skipped": "⏭️", "running": "▶️", "pending": "⏸️"}.get(status, "ℹ️") -%}
{{ icon }} Task {{ t.get("name") or "?" }}{% if t.get("kind") %} ({{ t.get("kind") }}){% endif %}: {{ status }}

{% if subject %}Repository: {{ subject }}
{% endif %}{% if t.get("message") %}{{ t.get("message") }}
{% endif %}{% if t.get("exit_code") is not none %}Exit code: {{ t.get("exit_code") }}
{% endif %}{% if t.get("duration_s") is not none %}Duration: {{ format_duration(t.get("duration_s")) }}
{% endif %}{% if d.get("job_id") is not none %}Job ID: {{ d.get("job_id") }}{% endif %}\
{% if t.get("output_tail") %}

{{ t.get("output_tail") }}{% endif %}"""

DEVICE = """\
{%- set d = data if data is mapping else {} -%}
{%- set dev = d.get("device") if d.get("device") is mapping else {} -%}
{%- if type == "backup.device.failed" -%}
❌ Device backup failed: {{ dev.get("host") or "?" }}

{{ dev.get("host") or "?" }}{% if dev.get("os_name") %} ({{ dev.get("os_name") }}){% endif %}: {{ d.get("error") or "failed" }}
{%- else -%}
✅ Device backed up: {{ dev.get("host") or "?" }}

{{ dev.get("host") or "?" }}{% if dev.get("os_name") %} ({{ dev.get("os_name") }}){% endif %} backed up.
{%- endif %}
{% if d.get("job_id") is not none %}Job ID: {{ d.get("job_id") }}{% endif %}"""

# netcfgbu prints its run summary this way (netcfgbu/cli/report.py); keep the shape users know.
REPORT = """\
{%- set d = data if data is mapping else {} -%}
{%- set failures = d.get("failures") if d.get("failures") is sequence and d.get("failures") is not string else [] -%}
{%- set fail = d.get("fail") or 0 -%}
{%- if fail -%}
❌ netcfgbu backup: {{ fail }} of {{ d.get("total", 0) }} devices failed
{%- else -%}
✅ netcfgbu backup: all {{ d.get("total", 0) }} devices backed up
{%- endif %}

Summary: TOTAL={{ d.get("total", 0) }}, OK={{ d.get("ok", 0) }}, FAIL={{ fail }}
         START={{ netcfgbu_time(d.get("start")) }}, STOP={{ netcfgbu_time(d.get("stop")) }}
         DURATION={% if d.get("duration_s") is number %}{{ "%.3f" | format(d.get("duration_s")) }}{% else %}{{ d.get("duration_s") or "0.000" }}{% endif %}s
{%- if failures %}

FAILURES: {{ fail or failures | length }}
{%- for f in failures[:100] %}
{% if f is mapping %}{{ f.get("host") or "?" }}: {{ f.get("error") or "failed" }}{% else %}{{ f }}{% endif %}
{%- endfor %}
{%- if failures | length > 100 %}
… and {{ failures | length - 100 }} more
{%- endif %}
{%- endif %}
{% if d.get("job_id") is not none %}
Job ID: {{ d.get("job_id") }}{% endif %}"""  # noqa: E501 - netcfgbu's own report lines, as they are

VCS = """\
{%- set d = data if data is mapping else {} -%}
{%- if d.get("success") -%}
✅ Configs saved to version control

Tag: {{ d.get("tag_name") or "-" }}
{%- else -%}
❌ Saving configs to version control failed

Tag: {{ d.get("tag_name") or "-" }}
{%- endif -%}"""

LOG = """\
{%- set d = data if data is mapping else {} -%}
📝 {{ subject or d.get("job") or d.get("job_id") or source }}: log

{{ d.get("message") if d.get("message") is not none else (data if data is string else json(data)) }}"""

VALIDATION = """\
{%- set d = data if data is mapping else {} -%}
{%- set ok = d.get("outcome") == "success" -%}
{{ "✅" if ok else "❌" }} Validation {{ "passed" if ok else (d.get("outcome") or "finished") }}\
{% if d.get("validator") %} ({{ d.get("validator") }}){% endif %}

{% if d.get("summary") %}{{ d.get("summary") if d.get("summary") is string else json(d.get("summary")) }}
{% endif %}{% if not ok and d.get("reason") %}Reason: {{ d.get("reason") }}
{% endif %}{%- set f = d.get("findings") if d.get("findings") is sequence and d.get("findings") is not string else [] -%}
{% if f %}
Findings:
{% for line in f %}- {{ line }}
{% endfor %}{% if (d.get("findings_total") or 0) > f | length %}… and {{ d.get("findings_total") - f | length }} more
{% endif %}
{% endif %}{% if d.get("job_id") is not none %}Job ID: {{ d.get("job_id") }}{% endif %}"""

DELIVERY_FAILED = """\
{%- set d = data if data is mapping else {} -%}
🚨 hookbus: delivery failed

Subscriber '{{ d.get("subscriber") or "?" }}' gave up on a {{ d.get("event_type") or "?" }} event \
({{ d.get("event_id") or "?" }}{% if d.get("event_seq") is not none %}, seq {{ d.get("event_seq") }}{% endif %}) \
after {{ d.get("attempts") or "?" }} attempt(s): {{ d.get("error") or "unknown error" }}
{% if d.get("job_id") is not none %}Job ID: {{ d.get("job_id") }}
{% endif %}Replay it with: hookbus replay --dead-letters --subscriber {{ d.get("subscriber") or "NAME" }}"""

# The checks engine's events (DESIGN §10). The title names the check; the text the job, and its
# repository when there is one. Times to the minute in UTC, durations compact (`3h 12m`).
_CHECK_PRELUDE = """\
{%- set d = data if data is mapping else {} -%}
{%- macro when(value) %}{{ format_time(value, "%Y-%m-%d %H:%M UTC") }}{% endmacro -%}
{%- macro took(value) %}{{ format_duration(value, compact=True) }}{% endmacro -%}
{%- set job = d.get("job") or d.get("check") or subject or "?" -%}
{%- set name = d.get("check") or job -%}
{%- set of = "'" ~ job ~ "'" ~ (" for '" ~ d.get("repository") ~ "'" if d.get("repository") else "") -%}
"""

_ERROR = '{% if d.get("error") %}Error: {{ (d.get("error") | string)[:300] }}\n{% endif %}'

CHECK_DOWN = _CHECK_PRELUDE + """\
{%- set reason = d.get("reason") -%}
{%- set reminder = d.get("reminder") if d.get("reminder") is number else 0 -%}
{%- set notes = (["reminder " ~ reminder] if reminder > 0 else []) + (["silence ended"] if d.get("after_silence") else []) -%}
{%- set what = {"missed": "Missed", "running_too_long": "Running Too Long", "failed": "Failing"}.get(reason, "Down") -%}
{%- set failures = d.get("failures") if d.get("failures") is number else 0 -%}
❌ Backup {{ "Still " if reminder > 0 else "" }}{{ what }} - {{ name }}{% if notes %} ({{ notes | join(", ") }}){% endif %}

{% if reason == "missed" -%}
{%- set due = d.get("deadline") or d.get("expected_at") -%}
{%- set schedule = d.get("schedule") | string if d.get("schedule") else "" -%}
{%- set how = ([schedule if schedule.startswith("every ") else "schedule " ~ schedule] if schedule else [])
              + (["grace " ~ took(d.get("grace_s"))] if d.get("grace_s") is number else []) -%}
No run of {{ of }} started {% if due %}by {{ when(due) }}{% else %}when due{% endif %}\
{% if how %} ({{ how | join(", ") }}){% endif %}.

{% if d.get("last_seen") %}Last run: {{ when(d.get("last_seen")) }}\
{% if d.get("last_outcome") %}, {{ d.get("last_outcome") }}{% endif %}{% else %}No run seen yet.{% endif %}
""" + _ERROR + """\
{%- elif reason == "running_too_long" -%}
{{ of }}{% if d.get("started_at") %} started at {{ when(d.get("started_at")) }} and{% endif %} has not finished\
{% if d.get("max_runtime_s") is number %} after {{ took(d.get("max_runtime_s")) }}{% else %} in time{% endif %}.
{%- elif reason == "failed" -%}
{{ of }} failed{% if failures > 1 %} {{ failures }} times in a row{% if d.get("last_seen") %}, last at \
{{ when(d.get("last_seen")) }}{% endif %}{% elif d.get("last_seen") %} at {{ when(d.get("last_seen")) }}{% endif %}.

""" + _ERROR + """{% if d.get("job_id") is not none %}Job ID: {{ d.get("job_id") }}{% endif %}
{%- else -%}
{{ of }} is down{% if reason %} ({{ reason }}){% endif %}.
{%- endif -%}
"""

CHECK_UP = _CHECK_PRELUDE + """\
{%- set outcome = d.get("outcome") -%}
{%- set verb = {"success": "succeeded", "warning": "completed with warnings"}.get(outcome)
               or ("finished (" ~ outcome ~ ")" if outcome else "ran") -%}
✅ Backup Back to Normal - {{ name }}

{{ of }} {{ verb }}{% if d.get("at") %} at {{ when(d.get("at")) }}{% endif %}\
{% if d.get("down_for_s") is number %} after {{ took(d.get("down_for_s")) }} down{% endif %}.
"""

JOB_ANOMALY = _CHECK_PRELUDE + """\
{%- set metric, value, median, runs = d.get("metric"), d.get("value"), d.get("median"), d.get("runs") -%}
{%- macro amount(v) %}{{ took(v) if metric == "duration_s" else (format_size(v) if metric == "data_added" else v) }}\
{% endmacro -%}
⚠️ Backup Anomaly - {{ job }}

{{ "Run " ~ d.get("job_id") if d.get("job_id") is not none else "A run" }} of {{ of }} \
{% if metric == "duration_s" %}took{% elif metric == "data_added" %}added{% else %}had {{ metric }}{% endif %} \
{{ amount(value) }}{% if median is not none %}, {% if value is number and median is number -%}
{{ "less than a third of" if value < median else "more than 3 times" }} its median
{%- else %}against a median of{% endif %} {{ amount(median) }}\
{% if runs is number %} over the last {{ "good run" if runs == 1 else runs ~ " good runs" }}{% endif %}{% endif %}.
"""

GENERIC = """\
{{ "❌" if is_error(event) else "ℹ️" }} {{ summary(event) }}

{{ type }} from {{ source }}{% if time %} at {{ format_time(time) }}{% endif %}"""

# A group of events sent as one message (bus/digest.py); `digest` is digest_context().
DIGEST = """\
{%- set g = digest -%}
{{ g.icon }} {{ g.title }}

{{ g.ok }} succeeded, {{ g.failed }} failed, {{ g.count }} in this message\
{% if g.labels %} ({% for k, v in g.labels | dictsort %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}){% endif %}
{%- if g.failures %}

First failures:
{% for line in g.failures %}  {{ line }}
{% endfor %}
{%- if g.more_failures %}  … and {{ g.more_failures }} more
{% endif %}
{%- endif %}"""

TEMPLATES: dict[str, str] = {
    "backup.job.finished": JOB_FINISHED,
    "backup.job.started": JOB_STARTED,
    "backup.task.started": TASK,
    "backup.task.finished": TASK,
    "backup.device.succeeded": DEVICE,
    "backup.device.failed": DEVICE,
    "backup.report": REPORT,
    "backup.vcs.saved": VCS,
    "backup.log": LOG,
    "backup.validation.finished": VALIDATION,
    "hookbus.delivery.failed": DELIVERY_FAILED,
    "backup.check.down": CHECK_DOWN,
    "backup.check.up": CHECK_UP,
    "backup.job.anomaly": JOB_ANOMALY,
}

DIGEST_KEY = "digest"


def netcfgbu_time(value: Any) -> str:
    """Given an RFC 3339 string or epoch seconds, return it as netcfgbu prints times
    (UTC); any other text comes back as it is."""
    if value is None or value == "":
        return "-"
    when = parse_time(value)
    return when.astimezone(UTC).strftime(NETCFGBU_TIME) if when else str(value)


EXTRAS: dict[str, Any] = {"netcfgbu_time": netcfgbu_time}


def template_for(event_type: str, overrides: str | dict[str, str] | None) -> tuple[str, str]:
    """Given an event type and a subscriber's `template`, return (the key it came
    from, the template source). `key` is "" for a single string, the matching
    glob for a table entry, or "default"."""
    if isinstance(overrides, str) and event_type != DIGEST_KEY:
        return "", overrides  # one string for every event; a digest of several keeps its default
    if isinstance(overrides, dict):
        if event_type == DIGEST_KEY and DIGEST_KEY in overrides:
            return DIGEST_KEY, overrides[DIGEST_KEY]
        if event_type != DIGEST_KEY:
            if event_type in overrides:
                return event_type, overrides[event_type]
            for pattern, source in overrides.items():
                if pattern != DIGEST_KEY and fnmatch.fnmatchcase(event_type, pattern):
                    return pattern, source
    if event_type == DIGEST_KEY:
        return "default", DIGEST
    return "default", TEMPLATES.get(event_type, GENERIC)


def render_message(source: str, event: Event, **extra: Any) -> str:
    """Render a message template; raise TemplateError. The result has no trailing blank lines."""
    return render(source, event, **EXTRAS, **extra).rstrip()


def render_default(event: Event) -> str:
    """Render the default message of an event. Defaults are written for odd data
    too; should one still fail, fall back to the generic one-line summary."""
    try:
        return render_message(TEMPLATES.get(event.type, GENERIC), event)
    except TemplateError:
        return render_message(GENERIC, event)


def samples_for(key: str, types: list[str]) -> tuple[list[Event], dict[str, Any]]:
    """Given a template's key (`""` for the one template of every event type, an
    event-type glob, or `digest`) and the event types a subscriber takes, return
    the sample events to check the template with (templates.check_template) and
    the names it sees besides the event, as render_message gives them."""
    if key == DIGEST_KEY:
        group = sample_digest()
        return [group[-1]], {**EXTRAS, "digest": digest_context(group, {"job_id": "run-1"})}
    return [SAMPLES[t] for t in types if not key or fnmatch.fnmatchcase(t, key)], EXTRAS


def sample_digest() -> list[Event]:
    ok, failed = SAMPLES["backup.device.succeeded"], SAMPLES["backup.device.failed"]
    return [ok, failed]


# -- digests ----------------------------------------------------------------------------------------

def _failure_line(event: Event) -> str:
    data = event.fields
    if event.type.startswith("backup.device."):
        device: dict[str, Any] = data["device"] if isinstance(data.get("device"), dict) else {}
        return f"{device.get('host') or '?'}: {data.get('error') or 'failed'}"
    if event.type == "hookbus.delivery.failed":
        return (f"{data.get('subscriber') or '?'} gave up on {data.get('event_type') or '?'} "
                f"{data.get('event_id') or '?'}: {data.get('error') or '?'}")
    return summary(event)


def digest_context(events: list[Event], labels: dict[str, Any]) -> dict[str, Any]:
    """Given the events of one group message, return what its template sees as `digest`:
    counts, the first failures, and a title."""
    failures = [e for e in events if is_error(e)]
    types = sorted({e.type for e in events})
    devices = all(t.startswith("backup.device.") for t in types)
    alerts = types == ["hookbus.delivery.failed"]
    job = labels.get("job_id")
    if devices:
        title = f"netcfgbu backup{f' {job}' if job else ''}: {len(events)} devices, {len(failures)} failed"
    elif alerts:
        title = f"hookbus: {len(events)} deliveries failed"
    else:
        title = f"{len(events)} events{f' of {job}' if job else ''}, {len(failures)} failed"
    return {
        "icon": "🚨" if alerts else ("❌" if failures else "✅"),
        "title": title,
        "count": len(events),
        "ok": len(events) - len(failures),
        "failed": len(failures),
        "types": {t: sum(1 for e in events if e.type == t) for t in types},
        "labels": {k: v for k, v in labels.items() if v is not None},
        "failures": [_failure_line(e) for e in failures[:FIRST_FAILURES]],
        "more_failures": max(0, len(failures) - FIRST_FAILURES),
        "first_time": events[0].time if events else None,
        "last_time": events[-1].time if events else None,
    }


# -- a message's parts ---------------------------------------------------------------------------------

def split_title(text: str) -> tuple[str, str]:
    """Given a rendered message, return (its first line, the rest without the blank line between)."""
    title, _, body = text.partition("\n")
    return title.strip(), body.lstrip("\n")
