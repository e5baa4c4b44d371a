"""Clients of the broker: request/reply over DEALER, and publishing with acks."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any

import orjson
import zmq
import zmq.asyncio

from hookbus.bus.settings import BusSettings
from hookbus.bus.transport import protocol
from hookbus.bus.transport.credentials import NoCredential, apply_credential, find_credential

log = logging.getLogger("hookbus.client")


class BrokerUnavailable(ConnectionError):
    """The broker did not answer in time."""


class BrokerRefused(ValueError):
    """The broker answered with an error (e.g. an invalid event); `info` holds its JSON."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(info.get("error", "refused"))
        self.info = info


def configure_client_socket(sock: zmq.asyncio.Socket, bus: BusSettings) -> None:
    """Reconnect quickly, and speak CURVE with this client's credential, pinned to
    the broker's public key: a process squatting the port cannot complete the
    handshake, so nothing is sent to it and no answer of its is read.
    Raise NoCredential when there is none (see credentials.find_credential)."""
    sock.linger = 0
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    apply_credential(sock, find_credential(bus))


class ControlClient:
    """Requests to the broker's control socket.

    Many requests may be in flight; replies are matched by request id. A
    request not answered within `attempt_timeout` is sent again (every command
    is idempotent) until `timeout` runs out.

    With several endpoints (the nodes of one bus, `[bus] control` as a list) the
    socket connects to all of them: ZeroMQ sends only on connections that are up
    (IMMEDIATE) and in turn, so a dead node is passed over and a request resent
    after a node died mid-way goes to one that lives.
    """

    def __init__(self, bus: BusSettings, ctx: zmq.asyncio.Context | None = None,
                 endpoints: list[str] | None = None) -> None:
        self.bus = bus
        self.endpoints = endpoints or bus.controls
        self.where = " or ".join(self.endpoints)  # for messages
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4)
        self._waiting: dict[bytes, asyncio.Future[list[bytes]]] = {}
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            try:
                configure_client_socket(sock, self.bus)
            except BaseException:
                sock.close(linger=0)
                raise
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on live connections
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            for endpoint in self.endpoints:
                sock.connect(endpoint)
            self._sock = sock
            self._reader = asyncio.create_task(self._read(sock))
        return self._sock

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=True)
            if len(frames) < 3:
                continue
            future = self._waiting.pop(frames[1], None)
            if future is not None and not future.done():
                future.set_result(frames)

    async def request(
        self, command: bytes, payload: Any = None, bodies: list[bytes] | None = None,
        *, timeout: float = 10.0, attempt_timeout: float = 2.0,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send a command; return the reply's JSON and body frames.

        Raise BrokerUnavailable after `timeout` seconds without an answer,
        BrokerRefused when the broker answers ERR.
        """
        try:
            sock = self._socket()
        except NoCredential:
            # As if the broker did not answer, but paced: callers retry at once (a subscriber's hello,
            # a run's spool), and the broker may be writing the keys at its first start right now.
            await asyncio.sleep(min(timeout, 1.0))
            try:
                sock = self._socket()
            except NoCredential as exc:
                raise BrokerUnavailable(f"broker at {self.where}: {exc}") from None
        req = self._prefix + next(self._ids).to_bytes(8, "big")
        frames = [command, req, orjson.dumps(payload if payload is not None else {}), *(bodies or [])]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        busy = ""
        try:
            while True:
                future: asyncio.Future[list[bytes]] = loop.create_future()
                self._waiting[req] = future
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    async with asyncio.timeout(remaining):
                        await sock.send_multipart(frames)
                    async with asyncio.timeout(min(attempt_timeout, max(remaining, 0.01))):
                        reply = await future
                except TimeoutError:
                    continue
                info = orjson.loads(reply[2])
                if reply[0] == protocol.ERR and info.get("retry"):
                    # The broker is up but its journal could not commit (e.g. disk full): wait and resend.
                    busy = str(info.get("error", "journal error"))
                    await asyncio.sleep(min(0.5, max(deadline - loop.time(), 0)))
                    continue
                if reply[0] == protocol.ERR:
                    raise BrokerRefused(info)
                return info, reply[3:]
        finally:
            self._waiting.pop(req, None)
        if not self._waiting:
            # libzmq gives up on a connection whose handshake was refused (a process squatting the
            # port, a key not yet authorized): the next request starts on a new socket.
            self._drop_socket()
        if busy:
            raise BrokerUnavailable(f"broker at {self.where} could not commit within {timeout:.0f}s: {busy}")
        raise BrokerUnavailable(f"broker at {self.where} did not answer within {timeout:.0f}s")

    async def publish(self, bodies: list[bytes], *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Publish CloudEvent JSON bodies; return [{"id", "seq", "duplicate"}] once durable.
        Raise BrokerRefused at once for a body the broker's frame limit would drop."""
        limit = protocol.max_frame_bytes(self.bus.max_event_bytes)
        for index, body in enumerate(bodies):
            if len(body) > limit:
                raise BrokerRefused({"error": f"event of {len(body)} bytes: the bus takes at most {limit} "
                                              "(4 × bus.max_event_bytes)", "field": "event", "index": index})
        info, _ = await self.request(protocol.PUB, {}, bodies, timeout=timeout, attempt_timeout=5.0)
        accepted: list[dict[str, Any]] = info["accepted"]
        return accepted

    def _drop_socket(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        self._drop_socket()
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
