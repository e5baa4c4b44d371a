"""jsonl: append every event, as received plus its `seq`, as one JSON line.

The file is its own cursor: at start the last complete line tells which seq
was written last, a line torn by a crash is cut off, and no seq is ever
written twice, so the file stays exactly-once across restarts.
"""

from __future__ import annotations

import asyncio
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

    config: JsonlConfig

    async def start(self) -> None:
        path = self.config.path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.last_seq = last_written_seq(path)
        self.file: IO[bytes] = path.open("ab")

    async def handle(self, event: Event) -> None:
        seq = event.seq or 0
        if seq <= self.last_seq:
            return
        line = event.json_with_seq() + b"\n"
        try:
            self.file.write(line)
            self.file.flush()
            if self.config.fsync:
                await asyncio.to_thread(os.fsync, self.file.fileno())
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.config.path}: {exc.strerror}") from None
        self.last_seq = seq

    async def close(self) -> None:
        self.file.close()


SUBSCRIBER = JsonlSubscriber
