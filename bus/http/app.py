"""The HTTP side assembled: CloudEvents ingest, the journal and bus API, health
and metrics, behind one guard (guard.py).

Every bad request gets a 4xx with a JSON body `{"error": …, "field": …}`
naming what is wrong; a 202 means the event is on disk. The application adds
what lives above this layer (the tools' adapters, the ping API) through
`inbound` and `extra_routes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web

from hookbus.bus.checks.engine import CheckEngine
from hookbus.bus.http import api, checks, connections, fdlimit, history, ingest, trail
from hookbus.bus.http.guard import guard
from hookbus.bus.http.keys import BROKER, CHECKS, INBOUND, REPLAYS, SETTINGS, Adapter
from hookbus.bus.http.replay import ReplayCache
from hookbus.bus.http.ui import routes as ui
from hookbus.bus.settings import HttpSettings
from hookbus.bus.transport.broker import Broker

log = logging.getLogger("hookbus.http")

Routes = Callable[[web.Application], None]


def create_app(settings: HttpSettings, broker: Broker, inbound: Mapping[str, Adapter] | None = None,
               extra_routes: Iterable[Routes] = (), engine: CheckEngine | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[guard])
    app[SETTINGS] = settings
    app[BROKER] = broker
    app[REPLAYS] = ReplayCache(settings.hmac_tolerance)
    app[INBOUND] = dict(inbound or {})
    app.router.add_post("/events", ingest.post_events)
    app.router.add_post("/ingest/{adapter}", ingest.ingest_adapter)
    app.router.add_get("/api/events", api.get_events)
    app.router.add_get("/api/subscribers", api.get_subscribers)
    history.add_routes(app, broker.journal)  # GET /api/jobs, /api/jobs/{job_id}
    app.router.add_get("/api/events/{seq}/deliveries", trail.get_deliveries)
    app.router.add_get("/api/dead-letters", api.get_dead_letters)
    app.router.add_post("/api/dead-letters/{id}/retry", api.retry_dead_letter)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/openapi.json", api.openapi)
    if engine is not None:
        app[CHECKS] = engine
        checks.add_routes(app)  # /api/checks, /api/silences, /badge/{key}.svg
    for add_routes in extra_routes:
        add_routes(app)
    if settings.ui:
        ui.add_routes(app)  # the operator's page: /, /jobs, /checks, /events, /subscribers, /silences (DESIGN §11)
    return app


async def start_http(app: web.Application) -> web.AppRunner:
    """Listen where the app's settings say, behind the connection gate."""
    settings = app[SETTINGS]
    # Idle keep-alive connections close after IDLE_TIMEOUT (aiohttp's default is an hour).
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=connections.IDLE_TIMEOUT)
    await runner.setup()
    assert runner.server is not None
    limit, backlog = fdlimit.http_sizes()
    gate = connections.ConnectionGate(runner.server, limit)
    site = connections.GatedSite(runner, settings.host, settings.port, gate, backlog)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"http.listen {settings.listen}: cannot listen: {exc.strerror}") from None
    log.info("http: listening on http://%s (at most %d connections)", settings.listen, limit)
    return runner
