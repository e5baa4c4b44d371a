"""Following the live stream: handed over in memory by a broker in the same
process (`hookbus serve`), or read from the broker's XPUB socket by a
subscriber in a process of its own. Either way each message goes to
`Position.on_live`, and the subscriber catches up whenever it is behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import zmq
import zmq.asyncio

from hookbus.bus.delivery.gaps import Position
from hookbus.bus.delivery.lanes import MAX_INFLIGHT
from hookbus.bus.settings import BusSettings
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import configure_client_socket

log = logging.getLogger("hookbus.subscriber")

_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


class LiveFeed(Protocol):
    """The broker, to subscribers running in its own process: it calls every
    attached listener with what it publishes on XPUB, so they skip the socket."""

    def attach(self, listener: Callable[[str | None, int, bytes], None]) -> None: ...

    def detach(self, listener: Callable[[str | None, int, bytes], None]) -> None: ...


def read_message(raw: zmq.Socket[bytes]) -> list[bytes]:
    """Every frame of the next message (it arrives whole), at most four kept.
    Raise zmq.Again when none is waiting."""
    frames = [raw.recv(_NOBLOCK)]
    while raw.get(_RCVMORE):
        frame = raw.recv(_NOBLOCK)
        if len(frames) < 4:
            frames.append(frame)
    return frames


def live_problem(frames: list[bytes], heartbeat: bool) -> str:
    """What is wrong with a live message, or "" for [type, seq, body] or [heartbeat topic, seq]."""
    if len(frames) != (2 if heartbeat else 3):
        return f"{len(frames)}{'+' if len(frames) == 4 else ''} frames"
    if len(frames[1]) != 8:
        return f"a seq frame of {len(frames[1])} bytes, not 8"
    if not heartbeat:
        try:
            frames[0].decode()
        except UnicodeDecodeError:
            return "a topic that is not UTF-8"
    return ""


async def follow_feed(position: Position) -> None:
    """In the broker's process, live events are handed over in memory (on_live)."""
    while True:
        await position.catch_up()
        position.wake.clear()
        try:
            async with asyncio.timeout(0.05 if position.high < position.target else None):
                await position.wake.wait()
        except TimeoutError:
            pass


class SocketFollower:
    """In a process of its own, live events come over the broker's XPUB socket."""

    def __init__(self, position: Position, bus: BusSettings, ctx: zmq.asyncio.Context, stats: dict[str, int]) -> None:
        self.position = position
        self.name = position.name
        self.bus = bus
        self.ctx = ctx
        self.stats = stats

    async def follow(self) -> None:
        position = self.position
        sock, raw = self._live_socket()
        silent_ms = int(3000 * self.bus.heartbeat)
        try:
            while True:
                await position.catch_up()
                behind = position.high < position.target
                if not await sock.poll(50 if behind else silent_ms):  # POLLIN
                    if not behind:
                        # libzmq does not reconnect after a refused handshake (e.g. a process held the
                        # port while the broker restarted): connect afresh. PINGs keep the target meanwhile.
                        log.debug("subscriber %s: no heartbeat from broker for %.0fs; reconnecting", self.name, silent_ms / 1000)
                        sock.close(linger=0)
                        sock, raw = self._live_socket()
                    continue
                self._read_waiting(raw)
        finally:
            sock.close(linger=0)

    def _read_waiting(self, raw: zmq.Socket[bytes]) -> None:
        for _ in range(MAX_INFLIGHT):
            try:
                frames = read_message(raw)
            except zmq.Again:
                break
            self._on_frames(frames)

    def _live_socket(self) -> tuple[zmq.asyncio.Socket, zmq.Socket[bytes]]:
        """A SUB socket on the broker's publish socket, and a plain shadow of it that
        takes everything already queued without a future per message."""
        sock = self.ctx.socket(zmq.SUB)
        configure_client_socket(sock, self.bus)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.subscribe(b"")  # every seq, so that gaps are visible
        sock.connect(self.bus.publish)
        return sock, zmq.Socket.shadow(sock.underlying)

    def _on_frames(self, frames: list[bytes]) -> None:
        """One live message, checked: a malformed one is logged and skipped, never
        fatal (the journal has the event; a gap in seqs makes the subscriber read it)."""
        topic = frames[0]
        heartbeat = topic == protocol.HEARTBEAT_TOPIC
        problem = live_problem(frames, heartbeat)
        if problem:
            self.stats["malformed"] = self.stats.get("malformed", 0) + 1
            log.warning("subscriber %s: skipped a malformed live message: %s", self.name, problem)
            return
        seq = protocol.seq_from(frames[1])
        self.position.on_live(None if heartbeat else topic.decode(), seq, b"" if heartbeat else frames[2])
