"""How the HTTP side answers: a JSON body `{"error": …, "field": …}` for every
refusal, and the request parameters every handler reads the same way."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class BadRequest(Exception):
    """A refusal: answered with `status` and a body naming the field at fault."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


def problem(status: int, error: str, field: str | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if field:
        body["field"] = field
    body.update(extra)
    return web.json_response(body, status=status, dumps=lambda o: orjson.dumps(o).decode())


def ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def decode_json(body: bytes) -> Any:
    if not body:
        raise BadRequest(400, "request body is empty", "body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"request body is not valid JSON: {exc}", "body") from None


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(400, f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise BadRequest(400, f"{name} must be between {low} and {high}", name)
    return value


def id_param(request: web.Request, what: str) -> int:
    """The path's `{id}`: 400 when it is not an integer, 404 when no row could have it."""
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise BadRequest(400, f"{what} id must be an integer", "id") from None
    if not 0 < value < 2**63:
        raise BadRequest(404, f"no {what} {value}", "id")
    return value
