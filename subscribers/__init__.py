"""Subscriber kinds: one module per kind (`subscribers/<kind>.py`), found by
name, or by entry point for a kind installed as a package of its own. Imports
any layer of `hookbus.bus` and the adapters' outbound HTTP client."""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from hookbus.bus.delivery.subscriber import DeliveryContext, DeliveryError, Subscriber, SubscriberConfig
from hookbus.bus.events.event import compile_globs
from hookbus.bus.settings import ConfigError, describe_errors

__all__ = [
    "DeliveryContext",
    "DeliveryError",
    "Subscriber",
    "SubscriberConfig",
    "create",
    "load_kind",
    "load_subscriber_config",
    "subscriber_label",
]

ENTRY_POINT_GROUP = "hookbus.subscribers"


def load_kind(kind: str) -> type[Subscriber]:
    """Return the Subscriber class of a kind; raise ConfigError if there is none
    or it does not have the interface."""
    obj: Any = None
    if kind.isidentifier() and importlib.util.find_spec(f"{__name__}.{kind}") is not None:
        obj = getattr(importlib.import_module(f"{__name__}.{kind}"), "SUBSCRIBER", None)
    else:
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
            obj = ep.load()
            break
    if obj is None:
        raise ConfigError(f"unknown subscriber kind {kind!r}")
    if not (isinstance(obj, type) and issubclass(obj, Subscriber)):
        raise ConfigError(f"subscriber kind {kind!r} does not provide a Subscriber subclass as SUBSCRIBER")
    if not issubclass(obj.Config, SubscriberConfig):
        raise ConfigError(f"subscriber kind {kind!r}: Config must subclass SubscriberConfig")
    return obj


def subscriber_label(table: Any, index: int) -> str:
    """`subscribers[1] (ops)`: how errors name a [[subscribers]] table (its name when it has one)."""
    where = f"subscribers[{index}]"
    if isinstance(table, dict) and isinstance(table.get("name"), str):
        where += f" ({table['name']})"
    return where


def load_subscriber_config(table: Any, index: int) -> SubscriberConfig:
    """Validate one [[subscribers]] table with its kind's model."""
    where = subscriber_label(table, index)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    kind = table.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"{where}.kind: required, the subscriber kind (e.g. jsonl, webhook)")
    try:
        cls = load_kind(kind)
    except ConfigError as exc:
        raise ConfigError(f"{where}.kind: {exc}") from None
    try:
        config = cls.Config.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, where)) from None
    for i, pattern in enumerate(config.events or []):
        if not pattern or any(c in pattern for c in " \t\n"):
            raise ConfigError(f"{where}.events[{i}]: {pattern!r} is not a glob over event types")
    compile_globs(config.events or [])
    try:
        cls.check(config)  # e.g. templates rendered against sample events
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    return config


def create(config: SubscriberConfig) -> Subscriber:
    return load_kind(config.kind)(config)
