"""The HTTP side: CloudEvents ingest, the journal and bus API, health and metrics.

Every bad request gets a 4xx with a JSON body `{"error": …, "field": …}`
naming what is wrong; a 202 means the event is on disk.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from hookbus.bus.http import connections, fdlimit
from hookbus.bus import signing
from hookbus.bus.transport.broker import Broker
from hookbus.config import Config
from hookbus.bus.settings import HttpSettings
from hookbus.bus.events.event import Event, EventError, EventTooLarge, as_stored, compile_globs, parse_event
from hookbus.bus.store.journal import JournalError
from hookbus.bus.http.openapi import OPENAPI
from hookbus.bus.http.replay import ReplayCache

log = logging.getLogger("hookbus.http")

BROKER = web.AppKey("broker", Broker)
CONFIG = web.AppKey("config", Config)
REPLAYS = web.AppKey("replays", ReplayCache)
OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
# healthchecks-style pings cannot carry a token (borgmatic, runitor, Backrest send none):
# the check's key in the path is the credential, as on healthchecks.io.
OPEN_PREFIXES = ("/ping/",)
INGEST_ROUTES = frozenset({"/events", "/ingest/{adapter}"})  # all an HMAC secret may post to

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
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


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request passes here once (one middleware, not one per concern: each
    is a coroutine layer on every request): read the body within its deadline,
    authenticate, and turn every refusal into a JSON 4xx; an unexpected error is
    logged and answered without internals."""
    try:
        body = await read_body_in_time(request)
        verdict = authenticate(request, body)
        if isinstance(verdict, signing.Signed):  # a signed message is handled once (replay.py)
            return await request.app[REPLAYS].once(verdict.msg_id, body, verdict.timestamp, lambda: handler(request))
        if verdict is not None:
            return verdict
        return await handler(request)
    except BadRequest as exc:
        return problem(exc.status, exc.error, exc.field)
    except EventError as exc:  # over max_event_bytes even after cutting (413), or a verdict on a field
        return problem(413 if isinstance(exc, EventTooLarge) else 400, str(exc), exc.field)
    except web.HTTPRequestEntityTooLarge:
        # aiohttp's exception does not keep the limit; the config does.
        limit = request.app[CONFIG].http.max_body_bytes
        return problem(413, f"request body is larger than {limit} bytes (http.max_body_bytes)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem(exc.status, exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods are allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except JournalError as exc:
        response = problem(503, f"not accepted: {exc}; try again")
        response.headers["Retry-After"] = "5"
        return response
    except sqlite3.DatabaseError as exc:  # a damaged journal (disk image malformed): the server's trouble, said so
        log.error("journal error answering %s %s: %s", request.method, request.path, exc)
        return problem(503, f"the journal cannot be read: {exc}")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return problem(500, "internal error; see the server log")


async def read_body_in_time(request: web.Request) -> bytes:
    """Read the whole body first, within a deadline: a client that trickles its
    body must not hold a connection and its memory open indefinitely. aiohttp
    keeps it; handlers read it again at no cost."""
    if not request.body_exists:
        return b""
    if request.content.is_eof():
        return await request.read()  # all of it is here already (the usual small POST): no deadline needed
    limit = request.app[CONFIG].http.body_timeout
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise BadRequest(408, f"request body not received within {limit:g}s (http.body_timeout)", "body") from None


def authenticate(request: web.Request, body: bytes) -> web.Response | signing.Signed | None:
    """Return None for an accepted token (or a request that needs none), the
    message for an accepted signature over its body, else a 401 saying why."""
    settings = request.app[CONFIG].http
    if not (settings.tokens or settings.hmac_secrets) or request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
        return None
    reasons = []
    if settings.tokens:
        header = request.headers.get("Authorization", "")
        if not header:
            reasons.append("missing Authorization: Bearer token")
        elif not header.startswith("Bearer "):
            reasons.append("Authorization must be 'Bearer <token>'")
        elif any(hmac.compare_digest(header[7:].strip().encode(), t.encode()) for t in settings.tokens):
            return None
        else:
            reasons.append("bearer token not accepted")
    if settings.hmac_secrets:
        signed = check_signature(request, body, settings)
        if isinstance(signed, signing.Signed):
            return signed
        reasons.append(signed)
    return problem(401, "; ".join(reasons), "Authorization")


def check_signature(request: web.Request, body: bytes, settings: HttpSettings) -> signing.Signed | str:
    """Return the verified message, or why the request's signature is not accepted."""
    if not is_ingest(request):
        # DESIGN §13. Standard Webhooks signs id, timestamp and body, not the method
        # or path: a signature good for POST /events would be as good for the API.
        return "an HMAC signature authorises only POST /events and /ingest/*; this needs a bearer token"
    if "webhook-signature" not in request.headers:
        return "missing webhook-signature"
    headers = request.headers
    try:
        return signing.verify(settings.hmac_secrets, headers.get("webhook-id"), headers.get("webhook-timestamp"),
                              headers.get("webhook-signature"), body, settings.hmac_tolerance)
    except signing.SignatureError as exc:
        return str(exc)


def is_ingest(request: web.Request) -> bool:
    """Whether the request was routed to an ingest endpoint (by its route, not by
    a path prefix that dot segments or encodings could dress up)."""
    route = request.match_info.route.resource
    return request.method == "POST" and route is not None and route.canonical in INGEST_ROUTES


# -- ingest -------------------------------------------------------------------

def decode_json(body: bytes) -> Any:
    if not body:
        raise BadRequest(400, "request body is empty", "body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"request body is not valid JSON: {exc}", "body") from None


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
                              f"application/cloudevents-batch+json (or ce-* headers), not {content_type or 'none'}", "Content-Type")
    return await accept(request, events)


async def accept(request: web.Request, events: list[Event]) -> web.Response:
    """Commit events; answer 202 with their seqs once they are on disk."""
    accepted = await request.app[BROKER].ingest(events)  # an EventError is answered by guard()
    return ok({"accepted": [{"id": a.id, "seq": a.seq, **({"duplicate": True} if a.duplicate else {})} for a in accepted]}, 202)


async def ingest_adapter(request: web.Request) -> web.Response:
    name = request.match_info["adapter"]
    from hookbus.adapters import inbound

    adapter = inbound.get(name)
    if adapter is None:
        raise BadRequest(404, f"unknown adapter {name!r}; known: {', '.join(inbound.names()) or 'none yet'}", "adapter")
    try:
        events = await adapter(request)
    except EventError as exc:  # the adapter's verdict on the tool's payload names the field
        raise BadRequest(400, str(exc), exc.field) from None
    return await accept(request, events)


# -- reading --------------------------------------------------------------------

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


async def get_events(request: web.Request) -> web.Response:
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, 1000)
    pattern = request.query.get("type")
    matcher = compile_globs([pattern]).match if pattern else None
    journal = request.app[BROKER].journal
    stored, scanned = await asyncio.to_thread(journal.read, after, limit, matcher)
    events = [{**orjson.loads(e.body), "seq": e.seq} for e in stored]
    return ok({"events": events, "next_after": scanned, "head": journal.last_seq})


async def get_subscribers(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(request.app[BROKER].status)
    return ok({"head": status["head"], "subscribers": status["subscribers"]})


async def get_dead_letters(request: web.Request) -> web.Response:
    state = request.query.get("state", "dead")
    if state not in ("dead", "replaying", "delivered", "all"):
        raise BadRequest(400, "state must be dead, replaying, delivered or all", "state")
    journal = request.app[BROKER].journal
    letters = await asyncio.to_thread(journal.dead_letters, request.query.get("subscriber"), None if state == "all" else state)
    return ok({"dead_letters": [
        {"id": d.id, "subscriber": d.subscriber, "seq": d.seq, "attempts": d.attempts, "error": d.error,
         "created_at": d.created_at, "state": d.state} for d in letters]})


async def retry_dead_letter(request: web.Request) -> web.Response:
    try:
        dead_id = int(request.match_info["id"])
    except ValueError:
        raise BadRequest(400, "dead letter id must be an integer", "id") from None
    if not 0 < dead_id < 2**63:
        raise BadRequest(404, f"no dead letter {dead_id}", "id")
    queued = await request.app[BROKER].journal.mark_replay([dead_id], None)
    if not queued:
        raise BadRequest(404, f"no dead letter {dead_id} waiting for a retry", "id")
    return ok({"queued": queued}, 202)


async def healthz(request: web.Request) -> web.Response:
    return ok({"status": "ok", "head": request.app[BROKER].journal.last_seq})


def label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped (text format 0.0.4),
    so that a cursor's name (any HELLO can make one) cannot write lines of its own."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(request.app[BROKER].status)
    lines = [
        "# HELP hookbus_journal_head_seq Highest sequence number in the journal.",
        "# TYPE hookbus_journal_head_seq gauge",
        f"hookbus_journal_head_seq {status['head']}",
        "# HELP hookbus_journal_events Events retained in the journal.",
        "# TYPE hookbus_journal_events gauge",
        f"hookbus_journal_events {status['events_retained']}",
    ]
    for name, value in status["counters"].items():
        lines += [f"# TYPE hookbus_events_{name}_total counter", f"hookbus_events_{name}_total {value}"]
    gauges = {"cursor": "Last seq the subscriber finished.", "lag": "Events between the head and the cursor.",
              "retries_in_flight": "Events waiting for a retry.", "dead_letters": "Dead letters not yet replayed."}
    for key, help_text in gauges.items():
        lines += [f"# HELP hookbus_subscriber_{key} {help_text}", f"# TYPE hookbus_subscriber_{key} gauge"]
        lines += [f'hookbus_subscriber_{key}{{subscriber="{label(s["name"])}"}} {s[key]}' for s in status["subscribers"]]
    lines += ["# TYPE hookbus_subscriber_up gauge"]
    lines += [f'hookbus_subscriber_up{{subscriber="{label(s["name"])}"}} {int(s["connected"])}' for s in status["subscribers"]]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    return ok(OPENAPI)


def create_app(config: Config, broker: Broker) -> web.Application:
    app = web.Application(client_max_size=config.http.max_body_bytes, middlewares=[guard])
    app[CONFIG] = config
    app[BROKER] = broker
    app[REPLAYS] = ReplayCache(config.http.hmac_tolerance)
    app.router.add_post("/events", post_events)
    app.router.add_post("/ingest/{adapter}", ingest_adapter)
    app.router.add_get("/api/events", get_events)
    app.router.add_get("/api/subscribers", get_subscribers)
    from hookbus.bus.http import history as jobhistory  # here: it uses this module's answers

    jobhistory.add_routes(app, broker.journal)  # GET /api/jobs, /api/jobs/{job_id}
    app.router.add_get("/api/dead-letters", get_dead_letters)
    app.router.add_post("/api/dead-letters/{id}/retry", retry_dead_letter)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    from hookbus.adapters import ping

    ping.add_routes(app, config, broker)  # GET/HEAD/POST /ping/{key}[/start|/fail|/log|/{0-255}]
    return app


async def start_http(config: Config, broker: Broker) -> web.AppRunner:
    # Idle keep-alive connections close after IDLE_TIMEOUT (aiohttp's default is an hour).
    runner = web.AppRunner(create_app(config, broker), access_log=None, handle_signals=False,
                           keepalive_timeout=connections.IDLE_TIMEOUT)
    await runner.setup()
    assert runner.server is not None
    limit, backlog = fdlimit.http_sizes()
    gate = connections.ConnectionGate(runner.server, limit)
    site = connections.GatedSite(runner, config.http.host, config.http.port, gate, backlog)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"http.listen {config.http.listen}: cannot listen: {exc.strerror}") from None
    log.info("http: listening on http://%s (at most %d connections)", config.http.listen, limit)
    return runner
