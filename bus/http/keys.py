"""What the application hands the HTTP handlers: the broker, the listener's
settings, the signed-message cache, the inbound adapters by name and the checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from hookbus.bus.checks.engine import CheckEngine
from hookbus.bus.events.event import Event
from hookbus.bus.http.replay import ReplayCache
from hookbus.bus.settings import HttpSettings
from hookbus.bus.transport.broker import Broker

# An inbound adapter: the tool's request → canonical events; an EventError names the bad field.
Adapter = Callable[[web.Request], Awaitable[list[Event]]]

BROKER = web.AppKey("broker", Broker)
SETTINGS = web.AppKey("settings", HttpSettings)
REPLAYS = web.AppKey("replays", ReplayCache)
INBOUND = web.AppKey("inbound", Mapping[str, Adapter])
CHECKS = web.AppKey("checks", CheckEngine)
