"""The `[[jobs]]` tables that `hookbus run JOB` executes, validated once at start-up.

A job: pre-hooks → backup → prune → check → post-hooks → notification. Every
command (hook, backup, prune, check) takes `timeout`, `shell`, `cwd`, `env`; a
command that uses `{{ }}` or `{% %}` is a template over the job (see
`bus/jobs/runner.py`), checked here so a mistake is reported at start-up.

A job with a `schedule` (cron, in `tz`) or a `period` is expected to run: the
configuration (`hookbus/config.py`) gives it a check of its own name with
these keys and `grace`, `max_runtime`, `down_after_failures`, `repeat`, as a
`[[checks]]` table would (`bus.settings.Expectation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from hookbus.bus.notify.templates import SAMPLES, TemplateError, check_template
from hookbus.bus.settings import Duration, Expectation, Strict, describe_errors

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
DEFAULT_SHELL = "/bin/bash"  # what Borgitory runs hooks with, so its hook scripts run unchanged
DEFAULT_TIMEOUT = 300.0
# The keys of a [[jobs]] table that its check takes (see the module docstring).


def is_template(command: str) -> bool:
    """A command is a Jinja2 template only when it uses `{{ }}` or `{% %}`: plain
    shell text (`${#array[@]}`, awk's `{…}`) runs exactly as written."""
    return "{{" in command or "{%" in command


class Command(Strict):
    shell: str | None = None  # default: the job's `shell`, else /bin/bash (before `command`, which is checked with it)
    command: str = Field(min_length=1)
    timeout: Duration | None = Field(None, gt=0, le=7 * 86400)
    cwd: Path | None = None
    env: dict[str, str] = {}

    @field_validator("command")
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if is_template(value):  # rendered against a sample job, as `shell` will run it
            try:
                check_template(value, [SAMPLES["backup.task.started"]], shell=info.data.get("shell") or DEFAULT_SHELL,
                               job=SAMPLE_JOB, task=SAMPLE_TASK)
            except TemplateError as exc:
                raise ValueError(f"template error: {exc.message or exc}") from None
        return value


class PreHook(Command):
    name: str = Field(min_length=1)
    critical: bool = False
    timeout: Duration | None = Field(DEFAULT_TIMEOUT, gt=0, le=7 * 86400)


class PostHook(PreHook):
    run_on_job_failure: bool = False


class MainTask(Command):
    """prune / check: a failure makes the job end with warnings unless `critical`."""

    critical: bool = False


class BackupTask(Command):
    """A failed backup always fails the job."""

    critical: Literal[True] = True


def _as_table(value: Any) -> Any:
    return {"command": value} if isinstance(value, str) else value


class JobConfig(Expectation):  # with `schedule` or `period`, a check of its name
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    repository: str = Field(min_length=1)
    backup: BackupTask
    prune: MainTask | None = None
    check: MainTask | None = None
    pre_hooks: list[PreHook] = []
    post_hooks: list[PostHook] = []
    shell: str = DEFAULT_SHELL
    cwd: Path | None = None
    env: dict[str, str] = {}
    @model_validator(mode="before")
    @classmethod
    def _commands_as_tables(cls, data: Any) -> Any:
        # `backup = "borg create …"` is short for `backup = { command = "borg create …" }`.
        if isinstance(data, dict):
            data = {**data, **{k: _as_table(data[k]) for k in ("backup", "prune", "check") if k in data}}
        return data


SAMPLE_JOB: dict[str, Any] = {
    "job_id": "job-abc-123", "name": "nightly", "repository": "MyRepository", "job_type": "manual", "host": "db1",
    "failed": False, "outcome": "success", "reason": None, "failed_hook": None, "failed_tasks": [], "tasks": [],
}
SAMPLE_TASK: dict[str, Any] = {"index": 0, "name": "Database Dump", "kind": "hook", "phase": "pre", "status": "running",
                               "critical": True, "run_on_job_failure": False}


def load_jobs(tables: Any) -> list[JobConfig]:
    """Validate the `[[jobs]]` tables; raise ValueError whose lines name the key
    at fault, e.g. `jobs[0] (nightly).pre_hooks[1].command: Field required`."""
    if not isinstance(tables, list):
        raise ValueError("jobs: must be an array of tables ([[jobs]])")
    jobs: list[JobConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        where = f"jobs[{index}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: must be a table")
        if isinstance(table.get("name"), str):
            where += f" ({table['name']})"
        try:
            job = JobConfig.model_validate(table)
        except ValidationError as exc:
            raise ValueError(describe_errors(exc, where)) from None
        if job.name in seen:
            raise ValueError(f"{where}.name: {job.name!r} is used twice; job names must be unique")
        seen.add(job.name)
        jobs.append(job)
    return jobs
