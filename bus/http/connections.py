"""Bounds on the HTTP server's connections, so that idle ones cannot starve it.

Each connection holds a file descriptor, and so do the journal, the spool and
every ZeroMQ peer: a thousand idle connections under the common `ulimit -n
1024` used to take the last ones, and POST /events, `hookbus emit` and the
spool failed with "Too many open files". So:

- a connection must complete a request header within IDLE_TIMEOUT of opening
  (aiohttp's keepalive_timeout covers the time between requests; older
  aiohttp versions do not start it before the first request);
- at most `limit` connections are open, a number derived from the open-file
  limit (fdlimit.sizes): past it, a new connection closes the oldest one still
  waiting for its first request header, so a flood of idle connections makes
  room for real requests instead of taking the last descriptor.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

IDLE_TIMEOUT = 10.0  # seconds a connection may sit without a complete request header


class ConnectionGate:
    """aiohttp's protocol factory, wrapped: counts connections, times their first
    request header, and closes the oldest idle one when the limit is reached."""

    def __init__(self, server: web.Server, limit: int, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.server, self.limit, self.idle_timeout = server, limit, idle_timeout
        # Connections with no request yet, oldest first, with the timer that closes them.
        self._waiting: OrderedDict[RequestHandler, asyncio.TimerHandle] = OrderedDict()
        make_request = server.request_factory

        def request_factory(message: Any, payload: Any, protocol: RequestHandler, writer: Any, task: Any) -> Any:
            self._started(protocol)
            return make_request(message, payload, protocol, writer, task)

        # Set before any connection: each handler copies it when it is made.
        server.request_factory = request_factory

    def __call__(self) -> RequestHandler:
        if len(self.server.connections) >= self.limit:
            self._close_oldest_idle()
        handler = self.server()
        self._waiting[handler] = asyncio.get_running_loop().call_later(self.idle_timeout, self._expire, handler)
        return handler

    def _started(self, handler: RequestHandler) -> None:
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, handler: RequestHandler) -> None:
        if self._waiting.pop(handler, None) is not None:
            self._close(handler)

    def _close_oldest_idle(self) -> None:
        while self._waiting:
            handler, timer = self._waiting.popitem(last=False)
            timer.cancel()
            if self._close(handler):
                return

    @staticmethod
    def _close(handler: RequestHandler) -> bool:
        """Close a connection; False if the client had closed it already."""
        if handler.transport is None:
            return False
        handler.force_close()
        return True


class GatedSite(web.TCPSite):
    """A TCPSite whose connections pass through a ConnectionGate."""

    __slots__ = ("gate",)

    def __init__(self, runner: web.AppRunner, host: str, port: int, gate: ConnectionGate, backlog: int) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        self._server = await asyncio.get_running_loop().create_server(self.gate, self._host, self._port,
                                                                      backlog=self._backlog, reuse_address=True)
