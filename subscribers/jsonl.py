"""jsonl: append every event, as received plus its `seq`, as one JSON line.

The file is its own cursor: at start the last complete line tells which seq
was written last, a line torn by a crash is cut off, and no seq is ever
written twice, so the file stays exactly-once across restarts.

Its seqs are those of one journal: `<path>.journal` records which (the
journal's identity). Following another journal (the old one deleted, emptied,
restored), or a journal whose head is behind the file's last seq, the file is
moved aside as `<path>.<time>` and a new one begun, with a warning, so that no
event of the new journal is skipped as "already written".
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from pathlib import Path
from typing import IO

import orjson

from hookbus.bus.delivery.subscriber import DeliveryError, Subscriber, SubscriberConfig
from hookbus.bus.events.event import Event

log = logging.getLogger("hookbus.subscribers.jsonl")


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

    async def joined(self, journal: int, head: int) -> None:
        marker = self.config.path.with_name(self.config.path.name + ".journal")
        try:
            recorded = int(marker.read_text().strip() or 0)
        except (OSError, ValueError):
            recorded = 0  # a file from before the marker: judged by the head alone
        if self.last_seq and ((recorded and recorded != journal) or self.last_seq > head):
            self._set_aside(f"it was written from another journal (last seq {self.last_seq}, journal head {head})")
        if journal and recorded != journal:
            marker.write_text(f"{journal}\n")

    def _set_aside(self, why: str) -> None:
        path = self.config.path
        aside = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}")
        self.file.close()
        os.replace(path, aside)
        log.warning("jsonl %s: %s moved aside to %s: %s; a new file begins", self.name, path, aside, why)
        self.file = path.open("ab", buffering=0)
        self.last_seq = 0

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
