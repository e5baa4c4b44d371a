"""`hookbus emit --from ADAPTER`: build events from a tool's environment or output.

Each adapter is a module `adapters/<tool>.py` exposing
`from_cli(args) -> list[Event]`, reading what that tool hands a hook: borgmatic
its interpolated `{repository}`/`{error}`/`{output}` (as options), Borgitory
its `BORGITORY_*` environment, Backrest the hook's JSON and restic its
`--json` output (on stdin). A ValueError or EventError says what is missing.
"""

from __future__ import annotations

import argparse
import importlib

from hookbus.bus.events.event import Event, EventError

ADAPTERS: tuple[str, ...] = ("borgmatic", "borgitory", "backrest", "restic")


def events_from(name: str, args: argparse.Namespace) -> list[Event]:
    """Return the events a tool's hook context describes; raise ValueError for an unknown adapter."""
    if name not in ADAPTERS:
        raise ValueError(f"--from: unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
    module = importlib.import_module(f"hookbus.adapters.{name}")
    try:
        events: list[Event] = module.from_cli(args)
    except EventError as exc:
        raise ValueError(f"--from {name}: {exc}") from None
    return events
