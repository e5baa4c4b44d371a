"""Run a command as a child process tree that can always be stopped.

Given an argv, `run` starts it in a session of its own, keeps the tail of its
output (stdout and stderr together), and returns when it exits, or stops it
when `timeout` runs out: SIGTERM to its process group first, then, after
`grace`, SIGKILL to everything that is left. Cancelling `run` kills the tree
at once.

A process group alone is not the whole tree for every tool: ansible-playbook's
workers call setsid(), so they and the commands they run sit in sessions of
their own, and the group signal does not reach them. ansible-playbook forwards
SIGTERM to its workers itself; for what does not go, the final SIGKILL goes to
every process in any session led by the command or by one of its descendants
(read from /proc, taken just before the SIGTERM: a worker that dies leaves its
children orphaned, but they keep its session id).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hookbus.bus.config import scrub
from hookbus.bus.event import TRUNCATION_MARK

GRACE = 5.0  # seconds between SIGTERM and SIGKILL
DRAIN = 1.0  # seconds to keep reading after exit (a stray child may hold the pipe)
OUTPUT_LIMIT = 64 * 1024


@dataclass(slots=True)
class Finished:
    """How a command ended. `exit_code` is None when it was stopped at its timeout."""

    exit_code: int | None
    output: str  # the tail of stdout+stderr, secrets scrubbed
    duration_s: float
    timed_out: bool = False


class Tail:
    """The last `limit` bytes written, and how many bytes came before them."""

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
        return scrub(text)


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every process as pid → (state, ppid, session id), from /proc ({} elsewhere)."""
    table: dict[int, tuple[str, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue  # it exited while we looked
        # "pid (comm) state ppid pgrp session …": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3:
            table[int(entry)] = (fields[0].decode(), int(fields[1]), int(fields[3]))
    return table


def tree_sessions(pid: int) -> set[int]:
    """The session ids of a process and of all its descendants."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for child, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(child)
    sessions = {pid}
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in table:
            sessions.add(table[current][2])
        todo.extend(children.get(current, []))
    return sessions


def live_in_sessions(sessions: set[int]) -> list[int]:
    """Processes (not zombies: those are dead already) in any of the sessions."""
    return [pid for pid, (state, _, sid) in _processes().items() if sid in sessions and state != "Z"]


def _kill_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree_now(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the command and everything in its sessions, without waiting."""
    sessions = tree_sessions(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    _kill_all(live_in_sessions(sessions), signal.SIGKILL)


async def _gone(proc: asyncio.subprocess.Process, sessions: set[int], limit: float) -> bool:
    """Wait up to `limit` seconds for the command to exit and its sessions to empty."""
    deadline = time.monotonic() + limit
    while True:
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await proc.wait()
        elif not await asyncio.to_thread(live_in_sessions, sessions):
            return True
        else:
            await asyncio.sleep(0.05)
        if time.monotonic() >= deadline:
            return False


async def stop_tree(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the command's group; SIGKILL all of its sessions if anything is left after `grace`."""
    sessions = await asyncio.to_thread(tree_sessions, proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    if await _gone(proc, sessions, grace):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    _kill_all(await asyncio.to_thread(live_in_sessions, sessions), signal.SIGKILL)
    await _gone(proc, sessions, 5.0)


async def _pump(stream: asyncio.StreamReader, tail: Tail) -> None:
    while chunk := await stream.read(65536):
        tail.write(chunk)


async def run(argv: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
              timeout: float, grace: float = GRACE, output_limit: int = OUTPUT_LIMIT) -> Finished:
    """Run argv to its end or its timeout; return how it ended.

    Raise OSError when it cannot be started (e.g. the program does not exist).
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
    )
    assert proc.stdout is not None
    tail = Tail(output_limit)
    pump = asyncio.create_task(_pump(proc.stdout, tail))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await stop_tree(proc, grace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN):
                await asyncio.shield(pump)
    except asyncio.CancelledError:
        kill_tree_now(proc)
        raise
    finally:
        pump.cancel()
    return Finished(exit_code=None if timed_out else proc.returncode, output=tail.text(),
                    duration_s=round(time.monotonic() - started, 3), timed_out=timed_out)
