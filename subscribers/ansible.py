"""ansible: run a playbook on matching events and report the outcome as
`backup.validation.finished` (same `job_id`; `outcome`, `reason`, per-host
ok/changed/failed/unreachable counts, first failures, output tail).

Why the `ansible-playbook` command rather than ansible-runner: hookbus must
stop a playbook at its timeout from its asyncio loop, whole process tree and
all, and keep its output; a child process in a session of its own gives
exactly that (bus/process.py). ansible-runner would add pexpect,
python-daemon and an artifacts directory per run, and its blocking API would
need a thread that cannot be stopped from outside; what it adds on top
(per-task events) is covered for our needs by a 60-line callback plugin
(adapters/ansible_callbacks/hookbus_stats.py) that writes the per-host counts
and first failures as JSON. And the command works with whatever Ansible the
user already has (distribution package, pipx, a venv): `hookbus[ansible]`
only provides one for those who have none.

Extra vars (DESIGN §9), passed as a file (`-e @file`), never on the command
line: every field of the event's `data` at top level, the whole event as
`hookbus_event`, then the subscriber's own `extra_vars` (which win). Values
that come from the event are marked `!unsafe`, so Ansible never evaluates a
`{{ … }}` that an event carries, and `data` fields that could steer Ansible
itself (`ansible_*`, reserved names such as `hostvars`, names that are not
identifiers) stay out of the top level; they remain in `hookbus_event.data`.

For a host list of this host only (`localhost,`), `ANSIBLE_PYTHON_INTERPRETER`
is the Python running hookbus unless the user has set it: discovery would take
the first python3 on PATH, which may be a pyenv shim that cannot run a module.
"""

from __future__ import annotations

import json
import keyword
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

import hookbus.adapters
from hookbus.bus.delivery.subscriber import DeliveryError, Subscriber, SubscriberConfig
from hookbus.bus.delivery.validator_results import Reporter, Result
from hookbus.bus.events.event import Event
from hookbus.bus.events.vocabulary import Outcome
from hookbus.bus.jobs import process
from hookbus.bus.settings import ConfigError, Duration

log = logging.getLogger("hookbus.subscriber.ansible")

CALLBACK_DIR = Path(hookbus.adapters.__file__).resolve().parent / "ansible_callbacks"
EVENT_VAR = "hookbus_event"
# Names Ansible gives a meaning of its own: an event must not set them.
RESERVED = frozenset({
    "hostvars", "groups", "group_names", "inventory_hostname", "inventory_hostname_short", "inventory_dir",
    "inventory_file", "omit", "play_hosts", "playbook_dir", "role_name", "role_names", "role_path", "vars",
    "environment", "ansible_play_batch", "ansible_play_hosts", EVENT_VAR,
})
OUTPUT_IN_EVENT = 16 * 1024  # bytes of output tail carried by the result event


class AnsibleConfig(SubscriberConfig):
    playbook: Path
    inventory: str | None = None  # a file or directory, or a host list such as "localhost,"
    extra_vars: dict[str, Any] = {}
    timeout: Duration = Field(600.0, gt=0, le=86400)  # for the whole playbook run

    @field_validator("playbook")
    @classmethod
    def _playbook(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value.resolve()

    @field_validator("inventory")
    @classmethod
    def _inventory(cls, value: str | None) -> str | None:
        if value is None or "," in value:
            return value
        path = Path(value)
        if not path.exists():
            raise ValueError(f"no such file or directory: {value} (a host list needs a comma: 'localhost,')")
        return str(path.resolve())

    @field_validator("extra_vars")
    @classmethod
    def _extra_vars(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"{name!r} is not a valid Ansible variable name")
            if name == EVENT_VAR:
                raise ValueError(f"{EVENT_VAR!r} is set by hookbus (the triggering event)")
        return value


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_local_host_list(inventory: str | None) -> bool:
    """Whether an inventory is a host list of this host only (`localhost,`)."""
    if inventory is None or "," not in inventory:
        return False
    hosts = [h.strip() for h in inventory.split(",") if h.strip()]
    return bool(hosts) and all(h in LOCAL_HOSTS for h in hosts)


def find_ansible_playbook() -> str | None:
    """ansible-playbook on PATH, else next to this Python (a venv whose bin is not on PATH)."""
    found = shutil.which("ansible-playbook")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def usable_var(name: Any) -> bool:
    return (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
            and not name.startswith("ansible_") and name not in RESERVED)


def _quote(text: str) -> str:
    """A YAML double-quoted scalar: printable ASCII as is, everything else escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def to_yaml(value: Any, unsafe: bool) -> str:
    """Return value as a YAML flow node; with `unsafe`, every string is tagged `!unsafe`."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quote(str(k))}: {to_yaml(v, unsafe)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_yaml(v, unsafe) for v in value) + "]"
    if isinstance(value, str):
        return ("!unsafe " if unsafe else "") + _quote(value)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return to_yaml(str(value), unsafe)


def extra_vars_document(event: Event, own: dict[str, Any]) -> str:
    """The extra-vars file: event data fields, `hookbus_event`, then the subscriber's `extra_vars`."""
    data = event.fields
    whole = {**event.to_dict(), "seq": event.seq}
    parts = [f"{_quote(k)}: {to_yaml(v, unsafe=True)}" for k, v in data.items() if usable_var(k) and k not in own]
    parts.append(f"{_quote(EVENT_VAR)}: {to_yaml(whole, unsafe=True)}")
    parts += [f"{_quote(k)}: {to_yaml(v, unsafe=False)}" for k, v in own.items()]
    return "{\n  " + ",\n  ".join(parts) + "\n}\n"


def _counts(stats: dict[str, Any]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    hosts: dict[str, dict[str, int]] = {}
    for host, counts in (stats.get("hosts") or {}).items():
        if isinstance(counts, dict):
            hosts[str(host)] = {k: int(v) for k, v in counts.items() if isinstance(v, int)}
    totals = {k: sum(h.get(k, 0) for h in hosts.values()) for k in ("ok", "changed", "failed", "unreachable", "skipped")}
    return hosts, totals


def _finding(failure: dict[str, Any]) -> str:
    where = f"{failure.get('host', '?')}: {failure.get('task', '?')}"
    if failure.get("item") is not None:
        where += f" ({failure['item']})"
    prefix = "unreachable: " if failure.get("unreachable") else ""
    message = " ".join(str(failure.get("message") or "failed").split())  # one line per finding
    return f"{where}: {prefix}{message}"


def _last_error_lines(output: str, limit: int = 3) -> list[str]:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines)[-limit:]


def judge(name: str, finished: process.Finished, stats: dict[str, Any] | None, timeout: float) -> Result:
    """Given how ansible-playbook ended and what the callback wrote, return the result."""
    hosts, totals = _counts(stats or {})
    failures = [_finding(f) for f in (stats or {}).get("failures", []) if isinstance(f, dict)]
    recap = (f"ok {totals['ok']}, changed {totals['changed']}, failed {totals['failed']}, "
             f"unreachable {totals['unreachable']}")
    details: dict[str, Any] = {"exit_code": finished.exit_code, "duration_s": finished.duration_s,
                               "hosts": hosts, "totals": totals}
    if finished.timed_out:  # the recap is usually missing: the callback writes it at the end
        return Result(Outcome.FAILED, f"{name} timed out after {timeout:g}s and was stopped",
                      reason="timeout", findings=failures or [f"stopped after {timeout:g}s"], details=details)
    if finished.exit_code == 0:
        return Result(Outcome.SUCCESS, f"{name}: {len(hosts)} host(s) passed ({recap})", details=details)
    bad = sum(1 for h in hosts.values() if h.get("failed") or h.get("unreachable"))
    if totals["unreachable"] and not totals["failed"]:
        reason = "unreachable"
    elif totals["failed"] or totals["unreachable"]:
        reason = "task_failed"
    else:
        reason = "playbook_error"  # a syntax error, a missing role, bad options: no host ran
    if reason == "playbook_error":
        findings = _last_error_lines(finished.output)
        summary = f"{name} failed: exit status {finished.exit_code}: {findings[-1] if findings else 'no output'}"
    else:
        findings = failures
        summary = f"{name} failed on {bad} of {len(hosts)} host(s) ({recap})"
    return Result(Outcome.FAILED, summary, reason=reason, findings=findings, details=details)


class AnsibleSubscriber(Subscriber):
    Config = AnsibleConfig
    default_events = ["backup.report"]
    concurrency = 2  # playbooks are heavy; events of one job still run in order
    config: AnsibleConfig

    def __init__(self, config: AnsibleConfig) -> None:
        super().__init__(config)
        found = find_ansible_playbook()
        if found is None:
            raise ConfigError(f"subscriber {config.name} (ansible): ansible-playbook not found on PATH or next to "
                              f"{sys.executable}; install it with: pip install 'hookbus[ansible]'")
        self.executable = found
        self.reporter = Reporter(config.name, "ansible")

    def handler_timeout(self) -> float:
        # The playbook's own timeout, then time to stop its tree and publish the result.
        return float(self.config.timeout) + process.GRACE + 35.0

    async def handle(self, event: Event) -> None:
        await self.reporter.report(event, lambda: self.run_playbook(event), self.context.publish)

    def environment(self, stats_path: Path) -> dict[str, str]:
        env = dict(os.environ)
        if is_local_host_list(self.config.inventory) and not env.get("ANSIBLE_PYTHON_INTERPRETER"):
            # Interpreter discovery takes the first python3 on PATH; a pyenv shim there answers with its
            # complaint ("Module result deserialization failed: No start of json char found"). On this
            # host the Python running hookbus is known to work. A remote host's is the inventory's
            # business (`ansible_python_interpreter`), and a value set here would be wrong there.
            env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
        env["ANSIBLE_CALLBACK_PLUGINS"] = os.pathsep.join(
            p for p in (str(CALLBACK_DIR), env.get("ANSIBLE_CALLBACK_PLUGINS", "")) if p)
        env["HOOKBUS_ANSIBLE_STATS"] = str(stats_path)
        env.setdefault("ANSIBLE_NOCOLOR", "1")  # the output tail is read as plain text
        env["PYTHONUNBUFFERED"] = "1"  # so a stopped run still shows how far it got
        return env

    async def run_playbook(self, event: Event) -> Result:
        cfg = self.config
        with tempfile.TemporaryDirectory(prefix="hookbus-ansible-") as tmp:
            vars_path = Path(tmp) / "extra-vars.yml"
            vars_path.write_text(extra_vars_document(event, cfg.extra_vars))
            stats_path = Path(tmp) / "stats.json"
            argv = [self.executable, "-e", f"@{vars_path}"]
            if cfg.inventory:
                argv += ["-i", cfg.inventory]
            argv.append(str(cfg.playbook))
            log.info("subscriber %s: running %s for %s %s", self.name, cfg.playbook.name, event.type, event.id)
            try:
                finished = await process.run(argv, env=self.environment(stats_path), cwd=cfg.playbook.parent,
                                             timeout=cfg.timeout, output_limit=OUTPUT_IN_EVENT)
            except OSError as exc:
                raise DeliveryError(f"cannot start {self.executable}: {exc.strerror or exc}") from None
            stats = None
            if stats_path.exists():
                try:
                    stats = json.loads(stats_path.read_text())
                except ValueError:
                    log.warning("subscriber %s: unreadable stats from the callback plugin", self.name)
        result = judge(cfg.playbook.name, finished, stats, cfg.timeout)
        result.details.update({"playbook": str(cfg.playbook), "inventory": cfg.inventory,
                               "output_tail": finished.output})
        return result


SUBSCRIBER = AnsibleSubscriber
