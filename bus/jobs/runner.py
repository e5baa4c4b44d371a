"""`hookbus run JOB`: run a configured job the way Borgitory does.

Order: pre-hooks → backup → prune → check → post-hooks → notification (the
notification publishes `backup.job.finished`). A failed critical pre-hook or a
failed backup fails the job: every later task is skipped with Borgitory's
message, except post-hooks with `run_on_job_failure`, which run. A failed
non-critical task lets the job go on and end "completed with warnings".

Every task publishes `backup.task.started` when it starts (a skipped task never
starts) and `backup.task.finished`; the job publishes `backup.job.started` and,
last, `backup.job.finished` with every task and the counts. Publishing never
holds the job up: events go through the spool (bus/spool.py), so a job runs
the same with the broker down, and its events arrive once the broker is back.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hookbus.bus.events.event import Event, new_event, new_id
from hookbus.bus.events.host import host_name
from hookbus.bus.events.payloads import job_finished_data, job_started_data, task_data
from hookbus.bus.events.text import cut_front
from hookbus.bus.events.times import now_rfc3339
from hookbus.bus.events.vocabulary import Outcome, Phase, Reason, TaskKind, TaskStatus
from hookbus.bus.jobs.command import HookResult, hook_env, run_command
from hookbus.bus.jobs.config import NAME_PATTERN, Command, JobConfig, is_template
from hookbus.bus.notify.templates import TemplateError, render_shell
from hookbus.bus.secrets import scrub
from hookbus.bus.settings import BusSettings
from hookbus.bus.transport.spool import SpoolingPublisher

# Borgitory's words, verbatim (DESIGN §7).
SKIP_CRITICAL_HOOK = "Task skipped due to critical hook failure"
SKIP_CRITICAL_TASK = "Task skipped due to critical task failure"
SKIP_CRITICAL_EXCEPTION = "Task skipped due to critical task exception"
SKIP_CANCELLED = "Task skipped because the job was cancelled"

JOB_OUTPUT_LIMIT = 4096  # per task in backup.job.finished; backup.task.finished carries the whole kept tail

ICONS = {TaskStatus.COMPLETED: "✅", TaskStatus.FAILED: "❌", TaskStatus.SKIPPED: "⏭️ ", TaskStatus.PENDING: "⏸️ ",
         TaskStatus.RUNNING: "▶️ "}


_FAILED_LINES: dict[Reason | None, str] = {Reason.CRITICAL_HOOK: "❌ Job Failed - Critical Hook Error",
                                           Reason.BACKUP_ERROR: "❌ Job Failed - Backup Error"}


def result_line(outcome: Outcome, reason: Reason | None) -> str:
    """The seed's `Result:` words for an outcome: the default message's title without "Backup"
    (bus/notify/messages.py: `🚫 Backup Job Cancelled` is `🚫 Job Cancelled` here)."""
    if outcome == Outcome.SUCCESS:
        return "✅ Job Completed Successfully"
    if outcome == Outcome.WARNING:
        return "⚠️  Job Completed with Warnings"
    if outcome == Outcome.CANCELLED:
        return "🚫 Job Cancelled"
    return _FAILED_LINES.get(reason, "❌ Job Failed - Task Error")


@dataclass
class Task:
    index: int
    name: str
    kind: TaskKind
    phase: Phase
    critical: bool = False
    run_on_job_failure: bool = False
    command: Command | None = None  # None: the notification
    status: TaskStatus = TaskStatus.PENDING
    message: str = ""
    exit_code: int | None = None
    duration_s: float | None = None
    output_tail: str = ""
    started_at: str | None = None
    finished_at: str | None = None

    def as_dict(self, output_limit: int | None = None) -> dict[str, Any]:
        output = self.output_tail if output_limit is None else cut_front(self.output_tail, output_limit)
        return {"index": self.index, "name": self.name, "kind": self.kind, "phase": self.phase, "status": self.status,
                "critical": self.critical, "run_on_job_failure": self.run_on_job_failure, "message": self.message,
                "exit_code": self.exit_code, "duration_s": self.duration_s, "output_tail": output,
                "started_at": self.started_at, "finished_at": self.finished_at}


def plan(job: JobConfig) -> list[Task]:
    """Given a job, return its tasks in the order they run, all pending."""
    tasks: list[Task] = []

    def add(name: str, kind: TaskKind, phase: Phase, command: Command | None, critical: bool = False,
            on_failure: bool = False) -> None:
        tasks.append(Task(len(tasks), name, kind, phase, critical, on_failure, command))

    for pre in job.pre_hooks:
        add(pre.name, TaskKind.HOOK, Phase.PRE, pre, pre.critical)
    add("backup", TaskKind.BACKUP, Phase.MAIN, job.backup, True)
    if job.prune is not None:
        add("prune", TaskKind.PRUNE, Phase.MAIN, job.prune, job.prune.critical)
    if job.check is not None:
        add("check", TaskKind.CHECK, Phase.MAIN, job.check, job.check.critical)
    for post in job.post_hooks:
        add(post.name, TaskKind.HOOK, Phase.POST, post, post.critical, post.run_on_job_failure)
    add("notification", TaskKind.NOTIFICATION, Phase.POST, None)
    return tasks


class Gate(Protocol):
    """A hook that a job runs itself before a start event goes out, and that fails
    (`behavior` ON_ERROR_FATAL) or cancels (ON_ERROR_CANCEL) the job when it fails:
    e.g. a shell subscriber with one of those error behaviours. The caller of
    run_job / cmd_run chooses them (`gates`)."""

    name: str
    behavior: str

    def gates(self, event: Event) -> bool: ...

    async def run_gate(self, event: Event) -> HookResult: ...


GateFactory = Callable[[], Sequence[Gate]]  # called once per run, in its event loop


class Publisher(Protocol):
    async def publish(self, event: Event) -> None: ...


class JobRun:
    """One run of one job. `run()` returns the `backup.job.finished` data."""

    def __init__(self, job: JobConfig, publisher: Publisher, *, job_type: str = "manual", job_id: str | None = None,
                 gates: Sequence[Gate] = (), out: Callable[[str], None] | None = None) -> None:
        self.job = job
        self.publisher = publisher
        self.job_type = job_type
        self.job_id = job_id or new_id()
        self.gates = list(gates)
        self.out = out or (lambda line: None)
        self.host = host_name()
        self.source = f"hookbus://{self.host}/jobs/{job.name}"
        self.tasks = plan(job)
        self.reason: Reason | None = None
        self.failed_hook: str | None = None
        self.skip_message = ""
        self.error: str | None = None
        self.cancel_requests = 0  # SIGTERM / SIGINT received
        self.abort = False  # stop everything, run_on_job_failure post-hooks included
        self._stop: asyncio.Event | None = None

    # -- cancelling ------------------------------------------------------------

    def request_cancel(self) -> None:
        """SIGTERM/SIGINT: stop the running task and cancel the job; post-hooks
        with run_on_job_failure still run. Asked again, or once the job has
        failed already, those are stopped too."""
        self.cancel_requests += 1
        if self.cancel_requests > 1 or self.reason not in (None, Reason.CANCELLED):
            self.abort = True
        if self._stop is not None:
            self._stop.set()

    def _cancelled(self, error: str) -> None:
        self.reason, self.skip_message, self.error = Reason.CANCELLED, SKIP_CANCELLED, error

    # -- events ------------------------------------------------------------------

    def event(self, type_: str, data: dict[str, Any]) -> Event:
        return new_event(type_, data, source=self.source, subject=self.job.repository)

    def _task_data(self, task: Task, output_limit: int | None = None) -> dict[str, Any]:
        return task_data(self.job_id, task.as_dict(output_limit), job=self.job.name, repository=self.job.repository)

    def context(self) -> dict[str, Any]:
        """The job so far, as command templates see it (`job.failed`, `job.outcome`, …)."""
        outcome, reason = self._outcome()
        return {"job_id": self.job_id, "name": self.job.name, "repository": self.job.repository,
                "job_type": self.job_type, "host": self.host, "failed": self.reason is not None, "outcome": outcome,
                "reason": reason, "failed_hook": self.failed_hook, "failed_tasks": self._failed_kinds(),
                "tasks": [t.as_dict(JOB_OUTPUT_LIMIT) for t in self.tasks]}

    async def _gate(self, event: Event) -> tuple[Gate, HookResult] | None:
        """Run the gates this start event has; record them in `gated_by` so the
        subscribers do not run them again; return the first that failed."""
        for gate in self.gates:
            if not gate.gates(event):
                continue
            assert isinstance(event.data, dict)
            event.data.setdefault("gated_by", []).append(gate.name)
            result = await gate.run_gate(event)
            self.out(f"   shell hook {gate.name} ({gate.behavior}): {result.describe()}")
            if not result.ok:
                return gate, result
        return None

    # -- running -------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.started_at, started = now_rfc3339(), time.monotonic()
        self.out(f"job {self.job.name} ({self.job_id}) for '{self.job.repository}': {len(self.tasks)} tasks")
        start = self.event("backup.job.started", job_started_data(
            self.job_id, job=self.job.name, repository=self.job.repository, host=self.host, job_type=self.job_type,
            tasks=[t.as_dict() for t in self.tasks]))
        failed_gate = await self._gate(start)
        await self.publisher.publish(start)
        if failed_gate is not None:
            self._gate_failed(*failed_gate, task=None)
        for task in self.tasks[:-1]:
            await self._step(task)
        return await self._notify(started)

    def _gate_failed(self, gate: Gate, result: HookResult, task: Task | None) -> None:
        what = f"shell hook {gate.name!r} {result.describe()}"
        if gate.behavior == "ON_ERROR_CANCEL":
            self._cancelled(f"cancelled by {what}")
            if task is not None:
                task.status, task.message = TaskStatus.SKIPPED, f"Cancelled by {what}"
        else:  # ON_ERROR_FATAL: treated as a failure of what it guards
            if task is None:
                self.reason, self.failed_hook, self.skip_message = Reason.CRITICAL_HOOK, gate.name, SKIP_CRITICAL_HOOK
                self.error = f"{what} (ON_ERROR_FATAL)"
            else:
                task.status, task.message = TaskStatus.FAILED, f"{what} (ON_ERROR_FATAL)"
                self._failed(task, could_not_start=False)

    def _should_skip(self, task: Task) -> bool:
        if self.cancel_requests and self.reason is None:
            self._cancelled("cancelled by a signal")
        if self.reason is None:
            return False
        return self.abort or not (task.phase == Phase.POST and task.run_on_job_failure)

    async def _step(self, task: Task) -> None:
        if self._should_skip(task):
            task.status, task.message = TaskStatus.SKIPPED, SKIP_CANCELLED if self.abort else self.skip_message
            task.finished_at = now_rfc3339()
            await self._finished(task)
            return
        task.status, task.started_at = TaskStatus.RUNNING, now_rfc3339()
        started = self.event("backup.task.started", self._task_data(task))
        failed_gate = await self._gate(started)
        if failed_gate is not None:
            self._gate_failed(*failed_gate, task=task)
            task.finished_at = now_rfc3339()
            await self._finished(task)
            return
        await self.publisher.publish(started)
        ran_on_failure = self.reason is not None
        result = await self._execute(task, started)
        task.exit_code, task.duration_s, task.output_tail = result.exit_code, round(result.duration_s, 3), result.output
        task.finished_at = now_rfc3339()
        assert task.command is not None
        if result.ok:
            task.status = TaskStatus.COMPLETED
            task.message = "exit status 0" + (" (run on job failure)" if ran_on_failure else "")
        else:
            task.status, task.message = TaskStatus.FAILED, result.describe(task.command.timeout)
            if result.cancelled and self.reason is None:
                self._cancelled("cancelled by a signal")
            elif not result.cancelled:
                self._failed(task, could_not_start=result.could_not_start)
        await self._finished(task)

    def _failed(self, task: Task, could_not_start: bool) -> None:
        """A task failed: a critical one fails the job (the first such decides why)."""
        if not task.critical or self.reason is not None:
            return
        hook = task.kind == TaskKind.HOOK
        what = f"hook {task.name!r}" if hook else task.kind
        # Why, in the words of its output's last line (borg's "Repository … does not exist."): the messages'
        # `Error:` line (DESIGN §6).
        last = next((line.strip() for line in reversed(task.output_tail.splitlines()) if line.strip()), "")
        self.error = f"{'critical ' if hook else ''}{what} failed: {task.message}" + (f": {last}" if last else "")
        if hook:
            self.reason, self.failed_hook, self.skip_message = Reason.CRITICAL_HOOK, task.name, SKIP_CRITICAL_HOOK
        else:
            self.reason = Reason.BACKUP_ERROR if task.kind == TaskKind.BACKUP else Reason.TASK_FAILED
            self.skip_message = SKIP_CRITICAL_EXCEPTION if could_not_start else SKIP_CRITICAL_TASK

    def _env(self, task: Task) -> dict[str, str]:
        assert task.command is not None
        env = dict(os.environ)
        env.update(hook_env(job_id=self.job_id, job=self.job.name, repository=self.job.repository, task_index=task.index,
                            job_type=self.job_type, task_name=task.name, job_failed=int(self.reason is not None)))
        env.update(self.job.env)
        env.update(task.command.env)  # the hook's own settings win, e.g. a numeric BORGITORY_REPOSITORY_ID
        return env

    async def _execute(self, task: Task, started: Event) -> HookResult:
        command = task.command
        assert command is not None
        text, values = command.command, {}
        shell = command.shell or self.job.shell
        if is_template(text):
            try:
                bound = render_shell(text, started, shell=shell, job=self.context(), task=task.as_dict())
            except TemplateError as exc:
                return HookResult(None, "", 0.0, error=f"command template: {getattr(exc, 'message', None) or exc}")
            text, values = bound.text, bound.env
        self._stop = asyncio.Event()
        if self.abort or (self.cancel_requests and self.reason is None):
            self._stop.set()  # asked to stop between the task's start event and here
        try:
            return await run_command(text, shell=shell, cwd=command.cwd or self.job.cwd,
                                     env={**self._env(task), **values}, timeout=command.timeout, stop=self._stop)
        finally:
            self._stop = None

    def _say(self, task: Task, message: str) -> None:
        icon = ICONS.get(task.status, "")
        self.out(f"{task.index + 1:>3}. {task.name:<30} {icon} {task.status}" + (f": {message}" if message else ""))

    async def _finished(self, task: Task, say: bool = True) -> None:
        if say:
            self._say(task, task.message)
        if task.status == TaskStatus.FAILED and task.output_tail.strip():
            for line in task.output_tail.rstrip().splitlines()[-10:]:
                self.out(f"       | {line}")
        await self.publisher.publish(self.event("backup.task.finished", self._task_data(task)))

    # -- the end -------------------------------------------------------------------

    def _failed_kinds(self) -> list[TaskKind]:
        kinds: list[TaskKind] = []
        for task in self.tasks:
            if task.status == TaskStatus.FAILED and task.kind not in kinds:
                kinds.append(task.kind)
        return kinds

    def _outcome(self) -> tuple[Outcome, Reason | None]:
        if self.reason == Reason.CANCELLED:
            return Outcome.CANCELLED, Reason.CANCELLED
        if self.reason is not None:
            return Outcome.FAILED, self.reason
        if any(t.status == TaskStatus.FAILED for t in self.tasks):
            return Outcome.WARNING, Reason.TASK_FAILED
        return Outcome.SUCCESS, None

    def counts(self) -> dict[str, int]:
        statuses = [t.status for t in self.tasks]
        ended = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.SKIPPED)
        return {**{s.value: statuses.count(s) for s in ended}, "total": len(statuses)}

    async def _notify(self, started: float) -> dict[str, Any]:
        task = self.tasks[-1]
        task.status, task.started_at = TaskStatus.RUNNING, now_rfc3339()
        await self.publisher.publish(self.event("backup.task.started", self._task_data(task)))
        # The notification is the one being sent: it counts as completed (DESIGN §6).
        task.status, task.message = TaskStatus.COMPLETED, "backup.job.finished published"
        task.finished_at = now_rfc3339()
        task.duration_s = 0.0
        await self._finished(task, say=False)  # what became of it is known only at the end: `report`
        outcome, reason = self._outcome()
        if outcome == Outcome.WARNING:
            self.error = "; ".join(
                f"{'hook ' + repr(t.name) if t.kind == TaskKind.HOOK else t.kind} failed: {t.message}"
                for t in self.tasks if t.status == TaskStatus.FAILED)
        duration = time.monotonic() - started
        counts = self.counts()
        finished = job_finished_data(
            self.job_id, job=self.job.name, repository=self.job.repository, outcome=outcome, reason=reason,
            error=scrub(self.error) if self.error else None, started_at=self.started_at, finished_at=now_rfc3339(),
            duration_s=round(duration, 3), job_type=self.job_type, host=self.host, failed_hook=self.failed_hook,
            failed_tasks=self._failed_kinds(), counts=counts, tasks=[t.as_dict(JOB_OUTPUT_LIMIT) for t in self.tasks],
            stats={})
        await self.publisher.publish(self.event("backup.job.finished", finished))
        return finished

    def report(self, finished: dict[str, Any], spooled: int) -> None:
        """The run's last lines, once its events have gone to the broker or `spooled` of them
        stay in the spool: the notification says which (it is not published until the broker has it)."""
        outcome, reason, counts = Outcome(finished["outcome"]), finished["reason"], finished["counts"]
        self._say(self.tasks[-1], "backup.job.finished published" if not spooled else
                  "backup.job.finished spooled, not yet published: the broker could not be reached")
        self.out(f"Result: {result_line(outcome, Reason(reason) if reason else None)}")
        self.out(f"Tasks Completed: {counts['completed']}, Failed: {counts['failed']}, Skipped: {counts['skipped']}, "
                 f"Total: {counts['total']}")


# -- the command ------------------------------------------------------------------------

async def run_job(bus: BusSettings, job: JobConfig, *, job_type: str, job_id: str | None, publish_timeout: float,
                  out: Callable[[str], None], gates: GateFactory) -> tuple[dict[str, Any], int, SpoolingPublisher]:
    """Run one job, publishing through the spool, with the hooks `gates()` returns
    as its gates; return its result, how many events are left in the spool, and
    the publisher."""
    job_id = job_id or new_id()
    publisher = SpoolingPublisher(bus, f"{job_id}-{job.name}")
    await publisher.start()
    earlier = asyncio.create_task(publisher.flush_earlier(publish_timeout))
    run = JobRun(job, publisher, job_type=job_type, job_id=job_id, gates=gates(), out=out)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, run.request_cancel)
    try:
        result = await run.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    try:
        async with asyncio.timeout(publish_timeout + 1):
            await earlier
    except TimeoutError:
        earlier.cancel()
    left = await publisher.close(publish_timeout)
    run.report(result, left)
    return result, left, publisher


def cmd_run(bus: BusSettings, job: JobConfig, *, job_type: str, job_id: str | None, publish_timeout: float,
            gates: GateFactory) -> int:
    """`hookbus run JOB`: 0 for success or warnings, 1 for failed or cancelled, 2 for a bad job id.
    `gates` returns the hooks the job runs itself before its start events (see Gate)."""
    if job_id is not None and not re.fullmatch(NAME_PATTERN, job_id):
        print("hookbus: --job-id may hold only letters, digits, '_', '.' and '-'", file=sys.stderr)
        return 2

    def out(line: str) -> None:
        print(scrub(line), flush=True)

    result, left, publisher = asyncio.run(run_job(bus, job, job_type=job_type, job_id=job_id,
                                                  publish_timeout=publish_timeout, out=out, gates=gates))
    if left:
        print(f"hookbus: the broker at {' or '.join(bus.controls)} could not be reached; {left} event(s) of this job are "
              f"kept in {publisher.path} and will be delivered when the broker starts (it reads "
              f"{publisher.path.parent}) or by the next `hookbus run`", file=sys.stderr)
    return 0 if result["outcome"] in (Outcome.SUCCESS, Outcome.WARNING) else 1
