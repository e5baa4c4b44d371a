"""What the application hands the HTTP handlers: the broker, the listener's
settings, the signed-message cache and the inbound adapters by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

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
