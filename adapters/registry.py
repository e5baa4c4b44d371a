"""The adapters, found by scanning this package (no list to keep by hand).

A module `adapters/<tool>.py` with `async def ingest(request) -> list[Event]`
serves `POST /ingest/<tool>`; one with `def from_cli(args) -> list[Event]`
serves `hookbus emit --from <tool>`, reading what that tool hands a hook:
borgmatic its interpolated `{repository}`/`{error}`/`{output}` (as options),
Borgitory its `BORGITORY_*` environment, Backrest the hook's JSON and restic
its `--json` output (on stdin). Either raises EventError naming the bad field.
One with `async def follow(settings, ingest)` is a `[[sources]]` kind: it
watches a running tool and hands what it sees to `ingest` until cancelled.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Coroutine
from types import ModuleType
from typing import TYPE_CHECKING, Any

from hookbus.bus.events.event import Event, EventError
from hookbus.bus.settings import SourceSettings

if TYPE_CHECKING:  # the HTTP side is not imported for the configuration's sake (start-up time)
    from hookbus.bus.http.keys import Adapter

FromCli = Callable[[argparse.Namespace], list[Event]]
Ingest = Callable[[list[Event]], Awaitable[object]]  # commits events (Broker.ingest)
Follow = Callable[[SourceSettings, Ingest], Coroutine[Any, Any, None]]
PACKAGE = __name__.rpartition(".")[0]


def _modules() -> list[ModuleType]:
    package = importlib.import_module(PACKAGE)
    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__) if not info.ispkg)
    return [importlib.import_module(f"{PACKAGE}.{name}") for name in names]


@functools.cache
def ingest_handlers() -> dict[str, Adapter]:
    """Each tool's `POST /ingest/{name}` handler, by name."""
    return {m.__name__.rpartition(".")[2]: m.ingest for m in _modules() if callable(getattr(m, "ingest", None))}


@functools.cache
def cli_readers() -> dict[str, FromCli]:
    """Each tool's `emit --from {name}` reader, by name."""
    return {m.__name__.rpartition(".")[2]: m.from_cli for m in _modules() if callable(getattr(m, "from_cli", None))}


@functools.cache
def followers() -> dict[str, Follow]:
    """Each `[[sources]]` kind's follower, by name."""
    return {m.__name__.rpartition(".")[2]: m.follow for m in _modules() if callable(getattr(m, "follow", None))}


def events_from(name: str, args: argparse.Namespace) -> list[Event]:
    """Return the events a tool's hook context describes; raise ValueError saying what is wrong."""
    readers = cli_readers()
    if name not in readers:
        raise ValueError(f"--from: unknown adapter {name!r}; known: {', '.join(readers)}")
    try:
        return readers[name](args)
    except EventError as exc:
        raise ValueError(f"--from {name}: {exc}") from None
