"""The broker's ZAP handler: which CURVE client keys may connect, and as what.

libzmq asks it once per connection (not per message). A known key is let in
with its role as the ZAP User-Id, which the broker reads off every request
(`frame.get("User-Id")`); an unknown key is refused during the handshake, so
its requests never reach the broker at all. The live stream (XPUB) carries
every event, so only operate keys may subscribe to it.

The handler reads the key folders again whenever one of them changed (a few
stat calls per connection), so a credential written by `hookbus grant` works
without a restart, on its first try (libzmq does not reconnect a client that
was refused), and a deleted key is refused from the next connection on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio
from zmq.utils import z85

from hookbus.bus.transport.credentials import OPERATE, PUBLISH

log = logging.getLogger("hookbus.zap")

ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
CONTROL_DOMAIN, LIVE_DOMAIN = b"control", b"live"
ALLOWED = {CONTROL_DOMAIN: {PUBLISH, OPERATE}, LIVE_DOMAIN: {OPERATE}}


def _stamp(folders: list[Path]) -> tuple[int, ...]:
    """When each folder last changed (a key added or removed), -1 for none."""
    stamps = []
    for folder in folders:
        try:
            stamps.append(folder.stat().st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return tuple(stamps)


class ZapHandler:
    def __init__(self, ctx: zmq.asyncio.Context, load: Callable[[], dict[bytes, str]], folders: list[Path]) -> None:
        self.ctx = ctx
        self._load = load
        self._folders = folders
        self._stamp = _stamp(folders)
        self.keys = load()
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        sock = self.ctx.socket(zmq.REP)
        sock.linger = 0
        sock.bind(ENDPOINT)
        self._sock = sock
        self._task = asyncio.create_task(self._serve(), name="broker-zap")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)

    def role_of(self, public_key: bytes) -> str | None:
        if (stamp := _stamp(self._folders)) != self._stamp:
            self._stamp = stamp
            self.keys = self._load()
        return self.keys.get(public_key)

    def decide(self, frames: list[bytes]) -> list[bytes]:
        """Given a ZAP request, return the reply: 200 with the role as User-Id, or 400."""
        version, request_id = [*frames, b"", b""][:2]
        if len(frames) < 7 or version != b"1.0":
            return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
        domain, address, mechanism, credentials = frames[2], frames[3], frames[5], frames[6:]
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return [version, request_id, b"400", b"CURVE only", b"", b""]
        role = self.role_of(z85.encode(credentials[0]))
        if role is None or role not in ALLOWED.get(domain, set()):
            log.info("refused a %s connection from %s: %s", domain.decode(errors="replace"),
                     address.decode(errors="replace"), "unknown key" if role is None else f"a {role} key")
            return [version, request_id, b"400", b"not allowed", b"", b""]
        return [version, request_id, b"200", b"OK", role.encode(), b""]

    async def _serve(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            try:
                verdict = self.decide(frames)
            except Exception:  # a handshake must get an answer, or every later one waits behind it
                log.exception("ZAP: could not decide on a handshake; refused")
                verdict = [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"internal error", b"", b""]
            await self._sock.send_multipart(verdict)
