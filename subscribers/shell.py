"""shell: run a command when an event comes, with Backrest's conditions and error behaviours.

`on = ["CONDITION_SNAPSHOT_ERROR", …]` takes Backrest's conditions as they
are (or use `events` globs). `command` is run by `shell -c` (or the
interpreter of its `#!` line) in its own process group, with the event's JSON
on stdin and `HOOKBUS_*` variables; a command that uses `{{ }}` / `{% %}` is a
template over the event, and every value it substitutes is shell-quoted, so
event data can never inject shell syntax.

When the command fails, `error_behavior` decides: ON_ERROR_IGNORE logs it;
ON_ERROR_FATAL dead-letters the event at once, which publishes
`hookbus.delivery.failed` for notifications to see; the three retries try it
again after 1 minute, after 10 minutes, or with exponential backoff. With
ON_ERROR_CANCEL (start conditions only) and ON_ERROR_FATAL on a start
condition, `hookbus run` runs the hook itself before the task starts and
cancels (or fails) the job when it fails; the event it then publishes names
the hook in `gated_by`, and this subscriber does not run it a second time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from hookbus.adapters.backrest import KINDS  # Backrest's operation words → task kinds
from hookbus.bus.delivery.subscriber import DeliveryError, Subscriber, SubscriberConfig, note_answer, wants
from hookbus.bus.events.event import Event, compile_globs
from hookbus.bus.events.vocabulary import Outcome, TaskKind, TaskStatus
from hookbus.bus.jobs.command import HookResult, hook_env, run_command
from hookbus.bus.jobs.config import DEFAULT_SHELL, is_template
from hookbus.bus.jobs.process import DRAIN, GRACE
from hookbus.bus.notify.templates import SAMPLES, BoundCommand, TemplateError, check_template, render_shell

log = logging.getLogger("hookbus.subscriber.shell")

Behavior = Literal["ON_ERROR_IGNORE", "ON_ERROR_FATAL", "ON_ERROR_CANCEL", "ON_ERROR_RETRY_1MINUTE",
                   "ON_ERROR_RETRY_10MINUTES", "ON_ERROR_RETRY_EXPONENTIAL_BACKOFF"]

START_TYPES = ("backup.job.started", "backup.task.started")
# The behaviours that make a hook one of `hookbus run`'s gates: the job runs it itself.
GATE_BEHAVIORS = ("ON_ERROR_CANCEL", "ON_ERROR_FATAL")
# The fixed-pace retry behaviours: seconds between attempts.
_PACE = {"ON_ERROR_RETRY_1MINUTE": 60.0, "ON_ERROR_RETRY_10MINUTES": 600.0}

# Backrest's outcome words → task statuses (None: any; a warning is a completed task that says so).
_STATUSES: dict[str, str | None] = {"END": None, "SUCCESS": TaskStatus.COMPLETED, "ERROR": TaskStatus.FAILED,
                                    "WARNING": Outcome.WARNING, "SKIPPED": TaskStatus.SKIPPED}

Predicate = Callable[[Event], bool]


def _task(event: Event) -> dict[str, Any]:
    task = event.fields.get("task")
    return task if isinstance(task, dict) else {}


def _status_is(task: dict[str, Any], status: str | None) -> bool:
    # A task that completed with a warning (Backrest's partial backup) says so in `warning`.
    warned = task.get("status") == Outcome.WARNING or task.get("warning") is True
    if status == Outcome.WARNING:
        return warned
    if status == TaskStatus.COMPLETED:
        return task.get("status") == TaskStatus.COMPLETED and not warned
    return status is None or task.get("status") == status


def _task_condition(type_: str, kind: str, status: str | None) -> Predicate:
    def matches(event: Event) -> bool:
        task = _task(event)
        return event.type == type_ and task.get("kind") == kind and _status_is(task, status)
    return matches


def _any_error(event: Event) -> bool:
    return ((event.type == "backup.task.finished" and _task(event).get("status") == TaskStatus.FAILED)
            or (event.type == "backup.job.finished" and event.fields.get("outcome") == Outcome.FAILED))


def _conditions() -> dict[str, tuple[str, Predicate]]:
    table: dict[str, tuple[str, Predicate]] = {"CONDITION_ANY_ERROR": ("backup.*.finished", _any_error)}
    for word, kind in KINDS.items():
        table[f"CONDITION_{word}_START"] = ("backup.task.started", _task_condition("backup.task.started", kind, None))
        for outcome, status in _STATUSES.items():
            table[f"CONDITION_{word}_{outcome}"] = (
                "backup.task.finished", _task_condition("backup.task.finished", kind, status))
    return table


CONDITIONS = _conditions()


def _example(condition: str) -> tuple[str, str, str]:
    """(event type, task kind, task status) of an event that meets a condition, for `hookbus test`."""
    if condition == "CONDITION_ANY_ERROR":
        return "backup.task.finished", TaskKind.BACKUP, TaskStatus.FAILED
    _, word, outcome = condition.split("_", 2)
    if outcome == "START":
        return "backup.task.started", KINDS[word], TaskStatus.RUNNING
    return "backup.task.finished", KINDS[word], _STATUSES[outcome] or TaskStatus.COMPLETED


def _known_condition(name: str) -> str:
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; known: {', '.join(sorted(CONDITIONS))}")
    return name


class ShellConfig(SubscriberConfig):
    on: list[Annotated[str, AfterValidator(_known_condition)]] | None = None
    error_behavior: Behavior = "ON_ERROR_IGNORE"
    shell: str = DEFAULT_SHELL  # before `command`, which is checked with it
    command: str = Field(min_length=1)
    cwd: Path | None = None
    env: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        on = data.get("on")
        if on is not None:
            if data.get("events") is not None:
                raise ValueError("give either `on` (Backrest conditions) or `events`, not both")
            if isinstance(on, list):  # the event types those conditions need; `on` itself is checked below
                data["events"] = sorted({CONDITIONS[c][0] for c in on if isinstance(c, str) and c in CONDITIONS})
        # The retry behaviours set the pace unless `retry` says otherwise.
        pace = _PACE.get(str(data.get("error_behavior")))
        if pace is not None and "retry" not in data:
            data["retry"] = {"initial_delay": pace, "max_delay": pace}
        return data

    @field_validator("on")
    @classmethod
    def _on(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("name at least one condition, e.g. CONDITION_SNAPSHOT_ERROR")
        return value

    @field_validator("error_behavior")
    @classmethod
    def _cancel_needs_start(cls, value: str, info: ValidationInfo) -> str:
        if value != "ON_ERROR_CANCEL":
            return value
        on: list[str] = info.data.get("on") or []
        events: list[str] = info.data.get("events") or []
        starts = all(c.endswith("_START") for c in on) if on else bool(events) and all(e in START_TYPES for e in events)
        if not starts:
            raise ValueError("ON_ERROR_CANCEL cancels a job before something starts: use it with start conditions "
                             "(CONDITION_SNAPSHOT_START, CONDITION_PRUNE_START, …) or events = "
                             "[\"backup.job.started\"] / [\"backup.task.started\"]")
        return value

    @field_validator("command")
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        if not is_template(value):
            return value
        # Rendered against the sample events it could see (a job's end when none of them matches).
        match = compile_globs(info.data.get("events") or ["*"]).match
        samples = [e for t, e in SAMPLES.items() if match(t)] or [SAMPLES["backup.job.finished"]]
        try:
            check_template(value, samples, shell=info.data.get("shell") or DEFAULT_SHELL)
        except TemplateError as exc:
            raise ValueError(f"template error: {exc.message or exc}") from None
        return value


def is_gate_table(table: dict[str, Any]) -> bool:
    """Whether a [[subscribers]] table, as written, is a shell hook `hookbus run` runs as a gate
    (what ShellSubscriber.is_gate says once it is loaded)."""
    return table.get("kind") == "shell" and table.get("error_behavior") in GATE_BEHAVIORS


def event_env(event: Event) -> dict[str, str]:
    """The event as HOOKBUS_* variables (and Borgitory's names where they apply)."""
    data = event.fields
    task = _task(event)
    return hook_env(event_type=event.type, event_id=event.id, event_source=event.source, event_seq=event.seq or "",
                    subject=event.subject or "", job_id=data.get("job_id"), job=data.get("job"),
                    repository=data.get("repository") or event.subject, job_type=data.get("job_type"),
                    outcome=data.get("outcome"), task_index=task.get("index"), task_name=task.get("name"),
                    task_status=task.get("status"))


class ShellSubscriber(Subscriber):
    Config = ShellConfig
    default_events = ["*"]
    config: ShellConfig

    def __init__(self, config: ShellConfig) -> None:
        super().__init__(config)
        self.predicates = [CONDITIONS[c][1] for c in config.on or []]
        patterns = config.events if config.events is not None else self.default_events
        self.match_type = compile_globs(patterns).match
        self.behavior: str = config.error_behavior
        self.is_gate = self.behavior in GATE_BEHAVIORS

    def handler_timeout(self) -> float:
        # `timeout` limits the command; stopping its process group takes up to GRACE more.
        return float(self.config.timeout) + GRACE + DRAIN + 5.0

    def matches(self, event: Event) -> bool:
        """Whether this hook is for the event: its types, `when`, and its conditions."""
        if not self.match_type(event.type) or not wants(self.config, event):
            return False
        return not self.predicates or any(p(event) for p in self.predicates)

    def gates(self, event: Event) -> bool:
        """For `hookbus run`: whether to run this hook itself, before the start event goes out."""
        return self.is_gate and event.type in START_TYPES and self.matches(event)

    def command_for(self, event: Event) -> BoundCommand:
        """The command to run for an event, its template rendered; raise a permanent DeliveryError
        naming a template error (the same event renders the same: retrying cannot help)."""
        command = self.config.command
        if not is_template(command):
            return BoundCommand(command, {})
        try:
            return render_shell(command, event, shell=self.config.shell)
        except TemplateError as exc:
            raise DeliveryError(f"command template: {getattr(exc, 'message', None) or exc}", permanent=True) from None

    async def execute(self, event: Event) -> HookResult:
        """Run the command for an event; raise a permanent DeliveryError when its template fails."""
        command = self.command_for(event)
        env = {**os.environ, **event_env(event), **self.config.env, **command.env}
        stdin = event.json_with_seq()
        return await run_command(command.text, shell=self.config.shell, cwd=self.config.cwd, env=env,
                                 timeout=self.config.timeout, stdin=stdin)

    def sample(self, event: Event) -> Event:
        """For `hookbus test`: a sample that meets the first condition."""
        if not self.config.on:
            return event
        type_, kind, status = _example(self.config.on[0])
        base = SAMPLES[type_]
        data = dict(base.fields)
        data["task"] = {**data.get("task", {}), "kind": kind, "name": kind, "status": status}
        return dataclasses.replace(base, id=event.id, time=event.time, data=data)

    def preview(self, event: Event) -> str:
        if not self.matches(event):
            raise DeliveryError("it does not meet this hook's conditions (`on`, `events`, `when`): nothing would run")
        command = self.command_for(event)
        values = "".join(f"\n  {name}={value!r}" for name, value in command.env.items())
        return (f"would run, with {self.config.shell} and the event's JSON on stdin:\n{command.text}"
                + (f"\nwith the template's values in the environment:{values}" if values else ""))

    async def run_gate(self, event: Event) -> HookResult:
        try:
            return await self.execute(event)
        except DeliveryError as exc:
            return HookResult(None, "", 0.0, error=str(exc))

    async def handle(self, event: Event) -> None:
        if self.name in (event.fields.get("gated_by") or []):
            return  # `hookbus run` ran it before the task started
        if self.predicates and not any(p(event) for p in self.predicates):
            return
        result = await self.execute(event)
        note_answer(result.exit_code)  # the delivery trail shows the exit status
        if result.ok:
            log.debug("shell %s: seq %s: exit status 0", self.name, event.seq)
            return
        output = " ".join(result.output.strip().splitlines()[-3:])[-500:]
        message = f"command {result.describe(self.config.timeout)}" + (f": {output}" if output else "")
        if self.behavior == "ON_ERROR_IGNORE":
            log.warning("shell %s: seq %s: %s (ignored: ON_ERROR_IGNORE)", self.name, event.seq, message)
            return
        if self.behavior in ("ON_ERROR_FATAL", "ON_ERROR_CANCEL"):
            # Nothing to cancel here (an outside tool's job, or an end event): the failure goes to the
            # dead letters and out as hookbus.delivery.failed.
            raise DeliveryError(message, permanent=True)
        raise DeliveryError(message, retry_after=_PACE.get(self.behavior))


SUBSCRIBER = ShellSubscriber
