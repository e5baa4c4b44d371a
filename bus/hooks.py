"""Running one hook command as a process.

Given a command, `run_command` runs it in its own process group (its own
session), feeds it optional stdin, keeps the tail of its output, and stops the
whole group on timeout or cancellation: SIGTERM first, SIGKILL after a grace
period, so a hook that started `sleep 1000 &` leaves nothing behind. A `#!`
first line picks the interpreter; otherwise the command goes to `shell -c`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import scrub
from .event import TRUNCATION_MARK
from .jobconfig import DEFAULT_SHELL, DEFAULT_TIMEOUT, is_template

__all__ = ["HookResult", "run_command", "is_template", "stop_group", "group_alive", "DEFAULT_SHELL", "DEFAULT_TIMEOUT"]
OUTPUT_LIMIT = 64 * 1024  # bytes of output kept per hook: its tail
GRACE = 5.0  # seconds between SIGTERM and SIGKILL
DRAIN = 1.0  # seconds to keep reading after the hook exited (a background child may hold the pipe)


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


class Tail:
    """The last `limit` bytes written to it, and how many came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.dropped = 0

    def write(self, chunk: bytes) -> None:
        self.buf += chunk
        excess = len(self.buf) - self.limit
        if excess > 0:
            del self.buf[:excess]
            self.dropped += excess

    def text(self) -> str:
        text = self.buf.decode("utf-8", errors="replace")
        if self.dropped:
            text = TRUNCATION_MARK.format(n=self.dropped) + text
        return scrub(text)  # a hook that prints its environment must not leak configured secrets


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


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group, from /proc. A zombie is
    already dead; it only waits for a parent (maybe PID 1 in a container) to reap it."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    return bool(_group_members(pgid))


async def _wait_group_gone(pgid: int, proc: asyncio.subprocess.Process, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while True:
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await proc.wait()
        if proc.returncode is not None and not await asyncio.to_thread(group_alive, pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


async def stop_group(pgid: int, proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the whole process group; SIGKILL it if anything is left after `grace`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    if await _wait_group_gone(pgid, proc, grace):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    await _wait_group_gone(pgid, proc, 5.0)


async def _pump(stream: asyncio.StreamReader, tail: Tail) -> None:
    while chunk := await stream.read(65536):
        tail.write(chunk)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()


async def run_command(
    command: str, *, shell: str = DEFAULT_SHELL, cwd: Path | None = None, env: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT, stdin: bytes | None = None, output_limit: int = OUTPUT_LIMIT,
    grace: float = GRACE, stop: asyncio.Event | None = None,
) -> HookResult:
    """Run a command to its end, its timeout, `stop` being set, or the caller's cancellation.

    The environment is `env` as given (callers merge os.environ in). On timeout
    or `stop` the whole process group is stopped and the output so far kept in
    the result; on cancellation the group is stopped too, then CancelledError
    propagates.
    """
    started = time.monotonic()
    tail = Tail(output_limit)
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
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=dict(env) if env is not None else None, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
    except (OSError, ValueError) as exc:
        if script is not None:
            await asyncio.to_thread(_remove_script, script)
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror and exc.filename else str(exc)
        return HookResult(None, "", time.monotonic() - started, error=scrub(reason))
    pgid = proc.pid  # start_new_session: the hook leads its own group
    assert proc.stdout is not None
    pump = asyncio.create_task(_pump(proc.stdout, tail))
    feeder = asyncio.create_task(_feed(proc, stdin)) if stdin is not None else None
    timed_out = stopped = False
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        try:
            done, _ = await asyncio.wait({waiter} | ({stopper} if stopper else set()), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (waiter, stopper):
                if future is not None and not future.done():
                    future.cancel()
        if waiter not in done:
            stopped = stopper is not None and stopper in done
            timed_out = not stopped
            await stop_group(pgid, proc, grace)
        # Keep reading briefly: output still in the pipe belongs to the hook. A
        # background child that holds the pipe open must not hold us too.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN):
                await asyncio.shield(pump)
    except asyncio.CancelledError:
        await asyncio.shield(stop_group(pgid, proc, grace))
        raise
    finally:
        for task in (pump, feeder):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(pump, *([feeder] if feeder else []), return_exceptions=True)
        if proc.returncode is None:  # only when cancelled before the group was stopped
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if script is not None:
            await asyncio.to_thread(_remove_script, script)
    return HookResult(None if timed_out or stopped else proc.returncode, tail.text(), time.monotonic() - started,
                      timed_out=timed_out, cancelled=stopped)

