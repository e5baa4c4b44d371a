"""Telling the broker what became of deliveries (RETRY, DEAD, REPLAYED)."""

from __future__ import annotations

import logging
from typing import Any

from hookbus.bus.transport.client import BrokerUnavailable, ControlClient

log = logging.getLogger("hookbus.subscriber")


async def tell(client: ControlClient, name: str, command: bytes, payload: dict[str, Any],
               timeout: float | None = 5.0) -> dict[str, Any] | None:
    """Send a command for subscriber `name`; return the answer, or None when the broker
    did not answer within `timeout`. With timeout=None keep trying until the broker has it."""
    while True:
        try:
            info, _ = await client.request(command, payload, timeout=timeout or 30.0)
            return info
        except BrokerUnavailable as exc:
            if timeout is not None:
                log.debug("subscriber %s: %s", name, exc)
                return None
            log.warning("subscriber %s: %s; will keep trying", name, exc)
