"""jsonl: append every event, as received plus its `seq`, as one JSON line.

The file is its own cursor: at start the last complete line tells which seq
was written last, a line torn by a crash is cut off, and no seq is ever
written twice, so the file stays exactly-once across restarts.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import IO

import orjson

from hookbus.bus.event import Event

from .base import DeliveryError, Subscriber, SubscriberConfig


class JsonlConfig(SubscriberConfig):
    path: Path
    fsync: bool = False


def last_written_seq(path: Path) -> int:
    """Return the seq of the last complete line, cutting off a torn last line."""
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        chunk = min(size, 1 << 20)
        f.seek(size - chunk)
        tail = f.read(chunk)
        end = tail.rfind(b"\n")
        if end != len(tail) - 1:  # a line torn by a crash
            f.truncate(size - chunk + end + 1)
            tail = tail[: end + 1]
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        if not lines[-1]:
            return 0
        try:
            return int(orjson.loads(lines[-1]).get("seq", 0))
        except (orjson.JSONDecodeError, AttributeError, ValueError):
            return 0


class JsonlSubscriber(Subscriber):
    Config = JsonlConfig
    ordered = True
    takes_many = True  # many lines in one write when events queue up

    config: JsonlConfig

    async def start(self) -> None:
        path = self.config.path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.last_seq = last_written_seq(path)
        self.file: IO[bytes] = path.open("ab", buffering=0)  # one write() per call: nothing waits in a buffer

    async def handle(self, event: Event) -> None:
        await self.handle_many([event])

    async def handle_many(self, events: list[Event]) -> None:
        new = [event for event in events if (event.seq or 0) > self.last_seq]
        if not new:
            return
        lines = b"".join([event.json_with_seq() + b"\n" for event in new])
        end = self.file.tell()
        try:
            if self.file.write(lines) != len(lines):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
            if self.config.fsync:
                await asyncio.to_thread(os.fsync, self.file.fileno())
        except OSError as exc:
            self._cut(end)
            raise DeliveryError(f"cannot write {self.config.path}: {exc.strerror}") from None
        self.last_seq = new[-1].seq or 0

    def _cut(self, size: int) -> None:
        """Take back a write that failed part way, so that the retry does not
        leave a torn line in the middle of the file."""
        try:
            self.file.truncate(size)
        except OSError:
            pass  # the next start cuts a torn last line; a torn line inside stays visible in the file

    async def close(self) -> None:
        self.file.close()


SUBSCRIBER = JsonlSubscriber
