"""`hookbus emit --from ADAPTER`: build events from a tool's environment or output."""

from __future__ import annotations

import argparse

from hookbus.bus.event import Event

ADAPTERS: tuple[str, ...] = ()


def events_from(name: str, args: argparse.Namespace) -> list[Event]:
    """Return the events a tool's hook context describes; raise ValueError for an unknown adapter."""
    raise ValueError(f"--from: unknown adapter {name!r}; known: {', '.join(ADAPTERS) or 'none yet'}")
