"""Ingest: CloudEvents in structured, batch and binary mode (`POST /events`)
and each tool's own payload (`POST /ingest/{adapter}`). A 202 means the events
are on disk."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from hookbus.bus.events.event import Event, EventError, as_stored, parse_event
from hookbus.bus.http.answers import BadRequest, decode_json, ok
from hookbus.bus.http.keys import BROKER, INBOUND


def _parse(obj: Any, prefix: str = "") -> Event:
    try:
        return parse_event(obj)
    except EventError as exc:
        field = f"{prefix}.{exc.field}" if prefix and exc.field != "event" else (prefix or exc.field)
        raise BadRequest(400, f"{field}: {exc.message}", field) from None


def _surrogates(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


async def binary_event(request: web.Request) -> Event:
    """CloudEvents binary mode: attributes in ce-* headers, the body is the data."""
    attrs: dict[str, Any] = {k[3:].lower(): v for k, v in request.headers.items() if k.lower().startswith("ce-")}
    for name, value in attrs.items():
        if _surrogates(value):  # aiohttp keeps bytes that are not UTF-8 as surrogates
            raise BadRequest(400, f"{name}: header ce-{name} is not valid UTF-8", name)
    body = await request.read()
    content_type = request.content_type
    if body:
        if content_type == "application/json" or content_type.endswith("+json"):
            try:
                attrs["data"] = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(400, f"body is not valid JSON: {exc}", "data") from None
        elif content_type.startswith("text/"):
            attrs["data"] = body.decode(errors="replace")
        else:
            raise BadRequest(415, f"binary-mode data must be JSON or text, not {content_type}", "Content-Type")
        attrs["datacontenttype"] = content_type
    return _parse(attrs)


async def post_events(request: web.Request) -> web.Response:
    content_type = request.content_type
    if "ce-specversion" in request.headers:
        events = [await binary_event(request)]
    elif content_type in ("application/cloudevents+json", "application/json"):
        body = await request.read()  # read already by guard(): aiohttp keeps it
        obj = decode_json(body)
        if isinstance(obj, list):
            raise BadRequest(400, "a JSON array is a batch: send it as application/cloudevents-batch+json", "body")
        event = _parse(obj)
        event.stored = as_stored(body)
        events = [event]
    elif content_type == "application/cloudevents-batch+json":
        obj = decode_json(await request.read())
        if not isinstance(obj, list):
            raise BadRequest(400, "a batch must be a JSON array of events", "body")
        if not obj:
            raise BadRequest(400, "a batch must hold at least one event", "body")
        events = [_parse(item, f"[{i}]") for i, item in enumerate(obj)]
    else:
        raise BadRequest(415, "Content-Type must be application/cloudevents+json, application/json or "
                              f"application/cloudevents-batch+json (or ce-* headers), not {content_type or 'none'}",
                              "Content-Type")
    return await accept(request, events)


async def accept(request: web.Request, events: list[Event]) -> web.Response:
    """Commit events; answer 202 with their seqs once they are on disk."""
    accepted = await request.app[BROKER].ingest(events)  # an EventError is answered by guard()
    return ok({"accepted": [{"id": a.id, "seq": a.seq, **({"duplicate": True} if a.duplicate else {})} for a in accepted]}, 202)


async def ingest_adapter(request: web.Request) -> web.Response:
    name = request.match_info["adapter"]
    adapters = request.app[INBOUND]
    adapter = adapters.get(name)
    if adapter is None:
        raise BadRequest(404, f"unknown adapter {name!r}; known: {', '.join(adapters) or 'none yet'}", "adapter")
    try:
        events = await adapter(request)
    except EventError as exc:  # the adapter's verdict on the tool's payload names the field
        raise BadRequest(400, str(exc), exc.field) from None
    return await accept(request, events)
