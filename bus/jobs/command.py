"""Running one hook command as a process.

Given a command, `run_command` picks its interpreter (a `#!` first line, else
`shell -c`) and runs it with bus/process.py: its own session, optional stdin,
the tail of its output kept, and the whole tree stopped on timeout, `stop` or
cancellation, so a hook that started `sleep 1000 &` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hookbus.bus.jobs import process
from hookbus.bus.jobs.config import DEFAULT_SHELL, DEFAULT_TIMEOUT
from hookbus.bus.jobs.process import GRACE
from hookbus.bus.secrets import scrub

__all__ = ["HookResult", "hook_env", "run_command"]

# Borgitory's names for three of ours, so its hook scripts run unchanged.
BORGITORY_NAMES = {"HOOKBUS_REPOSITORY": "BORGITORY_REPOSITORY_ID", "HOOKBUS_TASK_INDEX": "BORGITORY_TASK_INDEX",
                   "HOOKBUS_JOB_TYPE": "BORGITORY_JOB_TYPE"}


def hook_env(**fields: object) -> dict[str, str]:
    """HOOKBUS_* variables from fields (job_id= → HOOKBUS_JOB_ID; None leaves one
    out), plus Borgitory's names where they apply."""
    env = {f"HOOKBUS_{name.upper()}": str(value) for name, value in fields.items() if value is not None}
    env.update({theirs: env[ours] for ours, theirs in BORGITORY_NAMES.items() if ours in env})
    return env


@dataclass(slots=True)
class HookResult:
    """What became of one command. `exit_code` is None when it never ran or was stopped."""

    exit_code: int | None
    output: str
    duration_s: float
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None  # why it could not start

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled and self.error is None

    @property
    def could_not_start(self) -> bool:
        return self.error is not None

    def describe(self, timeout: float | None = None) -> str:
        """One line: `exit status 1`, `timed out after 2s; …`, `could not start: …`."""
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.timed_out:
            return f"timed out after {timeout:g}s; its process group was stopped" if timeout else "timed out"
        if self.cancelled:
            return "cancelled; its process group was stopped"
        if self.exit_code is not None and self.exit_code < 0:
            try:
                name = signal.Signals(-self.exit_code).name
            except ValueError:
                name = f"signal {-self.exit_code}"
            return f"killed by {name}"
        return f"exit status {self.exit_code}"


def shebang_argv(script: str, path: Path) -> list[str]:
    """Given a script whose first line is `#!interpreter [arg]`, return the argv
    that runs it the way the kernel would (one optional argument, kept whole)."""
    line = script.split("\n", 1)[0][2:].strip()
    interpreter, _, arg = line.partition(" ")
    if not interpreter:
        raise ValueError("the #! line names no interpreter")
    return [interpreter, *([arg.strip()] if arg.strip() else []), str(path)]


def _write_script(script: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="hookbus-hook-"))
    path = folder / "hook"
    path.write_text(script)
    path.chmod(0o700)
    return path


def _remove_script(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
        path.parent.rmdir()


async def run_command(
    command: str, *, shell: str = DEFAULT_SHELL, cwd: Path | None = None, env: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT, stdin: bytes | None = None,
    grace: float = GRACE, stop: asyncio.Event | None = None,
) -> HookResult:
    """Run a command to its end, its timeout, `stop` being set, or the caller's cancellation.

    The environment is `env` as given (callers merge os.environ in). On timeout
    or `stop` the whole process tree is stopped and the output so far kept in
    the result; on cancellation the tree is killed, then CancelledError
    propagates (bus/process.py).
    """
    started = time.monotonic()
    script: Path | None = None
    text = command.lstrip()
    try:
        if text.startswith("#!"):
            script = await asyncio.to_thread(_write_script, text)
            argv = shebang_argv(text, script)
        else:
            argv = [shell, "-c", command]
        if cwd is not None and not cwd.is_dir():
            raise FileNotFoundError(f"cwd {cwd} is not a directory")
        finished = await process.run(argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin, stop=stop,
                                     grace=grace)
    except (OSError, ValueError) as exc:
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror and exc.filename else str(exc)
        return HookResult(None, "", time.monotonic() - started, error=scrub(reason))
    finally:
        if script is not None:
            await asyncio.to_thread(_remove_script, script)
    return HookResult(finished.exit_code, finished.output, finished.duration_s,
                      timed_out=finished.timed_out, cancelled=finished.stopped)
