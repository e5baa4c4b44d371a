"""Run a command as a child process tree that can always be stopped.

`run` starts argv in a session of its own, optionally feeds it stdin, keeps the
tail of its output (stdout and stderr together), and returns when it exits.
On its timeout or when `stop` is set, the tree is stopped: SIGTERM to its
process group first, then, after `grace`, SIGKILL to everything that is left,
so a hook that started `sleep 1000 &` leaves nothing behind. When the caller
is cancelled, the whole tree gets SIGKILL at once.

A process group alone is not the whole tree for every tool: ansible-playbook's
workers call setsid(), so they and the commands they run sit in sessions of
their own, and the group signal does not reach them. The final SIGKILL goes to
every process in any session led by the command or by one of its descendants
(read from /proc just before the SIGTERM: a worker that dies leaves its
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

from hookbus.bus.events.text import cut_mark
from hookbus.bus.filemodes import inherited_umask
from hookbus.bus.secrets import scrub

GRACE = 5.0  # seconds between SIGTERM and SIGKILL
DRAIN = 1.0  # seconds to keep reading after exit (a background child may hold the pipe)
OUTPUT_LIMIT = 64 * 1024  # bytes of output kept: the tail


@dataclass(slots=True)
class Finished:
    """How a command ended. `exit_code` is None when it was stopped (timeout or `stop`)."""

    exit_code: int | None
    output: str  # the tail of stdout+stderr, secrets scrubbed
    duration_s: float
    timed_out: bool = False
    stopped: bool = False


class Tail:
    """The last `limit` bytes written, and how many bytes came before them: a
    stream's tail, behind the cut mark (on top of the limit) when any went."""

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
            text = cut_mark(self.dropped) + text
        return scrub(text)  # a command that prints its environment must not leak configured secrets


def _processes() -> dict[int, tuple[str, int, int, int]]:
    """Every process as pid → (state, ppid, process group, session id), from /proc ({} elsewhere)."""
    table: dict[int, tuple[str, int, int, int]] = {}
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
            table[int(entry)] = (fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def tree_sessions(pid: int) -> set[int]:
    """The session ids of a process and of all its descendants."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for child, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(child)
    sessions = {pid}
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in table:
            sessions.add(table[current][3])
        todo.extend(children.get(current, []))
    return sessions


def live_in_sessions(sessions: set[int]) -> list[int]:
    """Processes (not zombies: those are dead already) in any of the sessions."""
    return [pid for pid, (state, _, _, sid) in _processes().items() if sid in sessions and state != "Z"]


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in a process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    return any(pgrp == pgid and state != "Z" for state, _, pgrp, _ in _processes().values())


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


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()


async def run(argv: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
              timeout: float | None, stdin: bytes | None = None, stop: asyncio.Event | None = None,
              grace: float = GRACE, output_limit: int = OUTPUT_LIMIT) -> Finished:
    """Run argv to its end, its timeout, `stop` being set, or the caller's cancellation.

    Raise OSError when it cannot be started (e.g. the program does not exist).
    On cancellation the tree is killed, then CancelledError propagates.
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, umask=inherited_umask(),
    )
    assert proc.stdout is not None
    tail = Tail(output_limit)
    pump = asyncio.create_task(_pump(proc.stdout, tail))
    feeder = asyncio.create_task(_feed(proc, stdin)) if stdin is not None else None
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    timed_out = stopped = False
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
            await stop_tree(proc, grace)
        # Output still in the pipe belongs to the command; a background child
        # that holds the pipe open must not hold us too.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN):
                await asyncio.shield(pump)
    except asyncio.CancelledError:
        kill_tree_now(proc)  # the caller wants to be done now: no grace
        # Reap it (SIGKILL is quick), so its pipes and transport close now, not when collected.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), 2)
        raise
    finally:
        for task in (pump, feeder):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(pump, *([feeder] if feeder else []), return_exceptions=True)
    return Finished(exit_code=None if timed_out or stopped else proc.returncode, output=tail.text(),
                    duration_s=round(time.monotonic() - started, 3), timed_out=timed_out, stopped=stopped)
