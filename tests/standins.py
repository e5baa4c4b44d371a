"""Local HTTP servers standing in for Slack, Healthchecks and an Apprise json:// target.

Each records every request (method, path, query, headers, body, arrival time) and
answers by a rule per path, so one server can play a working webhook, one that
answers 429 with Retry-After, and one whose channel is archived.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from .conftest import local_site


class MockResponse(aiohttp.ClientResponse):
    """For aioresponses: 0.7.x builds a ClientResponse without the `stream_writer`
    that aiohttp 3.14 requires (pnuckowski/aioresponses#289)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)

Answer = tuple[int, str, dict[str, str]]


@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class StandIn:
    """Rules: path prefix → function(hit, n-th hit on that prefix) → (status, body, headers)."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    rules: dict[str, Callable[[Hit, int], Answer]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer

    def on(self, prefix: str, rule: Callable[[Hit, int], Answer]) -> str:
        self.rules[prefix] = rule
        return self.url + prefix

    def to(self, prefix: str, ok_only: bool = False) -> list[Hit]:
        return [h for h in self.hits if h.path.startswith(prefix) and (not ok_only or 200 <= h.status < 300)]

    async def handle(self, request: web.Request) -> web.Response:
        hit = Hit(request.method, request.path, dict(request.query), dict(request.headers), await request.read(),
                  time.monotonic())
        prefix = max((p for p in self.rules if hit.path.startswith(p)), key=len, default=None)
        n = len(self.to(prefix)) if prefix is not None else 0
        status, body, headers = self.rules[prefix](hit, n) if prefix is not None else (200, "OK", {})
        hit.status = status
        self.hits.append(hit)
        return web.Response(status=status, text=body, headers={**self.headers, **headers})


def ok(body: str = "ok") -> Callable[[Hit, int], Answer]:
    return lambda hit, n: (200, body, {})


def always(status: int, body: str, headers: dict[str, str] | None = None) -> Callable[[Hit, int], Answer]:
    return lambda hit, n: (status, body, headers or {})


def first_then_ok(status: int, body: str, headers: dict[str, str]) -> Callable[[Hit, int], Answer]:
    """Answer `status` to the first request, 200 to the rest."""
    return lambda hit, n: (status, body, headers) if n == 0 else (200, "ok", {})


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    async with local_site(app) as url:
        server.url = url
        yield server
