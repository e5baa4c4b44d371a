"""plugins: netcfgbu-compatible Python plugins.

Every `*.py` in `plugins_dir` (or `$HOOKBUS_PLUGINS_DIR`) is loaded at start;
every subclass of `Plugin` in it is called:

| event                        | call                                             |
|------------------------------|--------------------------------------------------|
| backup.device.succeeded      | backup_success(record=device, result=True)        |
| backup.device.failed         | backup_failed(record=device, result=error)        |
| backup.report                | report(report)                                    |
| backup.vcs.saved             | git_report(success, tag_name)                     |
| backup.job.finished          | backup_success / backup_failed(record=job, …)     |

A plugin written for netcfgbu starts with `from netcfgbu import Plugin`; when
netcfgbu is not installed, the loader provides that import while it loads the
plugin files. Its methods take no `self` (netcfgbu calls them on the class);
methods with `self`, static and class methods, and `async def` work too. Each
call has a time limit; sync ones run in their own thread, off the event loop.
A plugin that raises or hangs is named in the error and does not stop the
others: all calls for an event run, then the failures are reported together
(a dead letter and `hookbus.delivery.failed`), never retried, since retrying
would call the plugins that did succeed a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import os
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import model_validator

from hookbus.bus.delivery.subscriber import DeliveryError, Subscriber, SubscriberConfig, in_daemon_thread
from hookbus.bus.events.event import Event
from hookbus.bus.events.times import parse_time
from hookbus.bus.events.vocabulary import FAILED_OUTCOMES
from hookbus.bus.filemodes import refuse_writable
from hookbus.bus.settings import ConfigError

log = logging.getLogger("hookbus.subscriber.plugins")

# Each hook and the arguments netcfgbu passes to it.
HOOKS: dict[str, tuple[str, ...]] = {
    "backup_success": ("record", "result"),
    "backup_failed": ("record", "result"),
    "report": ("report",),
    "git_report": ("success", "tag_name"),
}


class PluginsConfig(SubscriberConfig):
    plugins_dir: Path | None = None

    @model_validator(mode="after")
    def _dir(self) -> PluginsConfig:
        folder = self.plugins_dir or (Path(os.environ["HOOKBUS_PLUGINS_DIR"]) if os.environ.get("HOOKBUS_PLUGINS_DIR") else None)
        if folder is None:
            raise ValueError("plugins_dir: required (or set the environment variable HOOKBUS_PLUGINS_DIR)")
        if not folder.is_dir():
            raise ValueError(f"plugins_dir: {folder} is not a directory")
        check_writable(folder)
        object.__setattr__(self, "plugins_dir", folder)  # frozen model: settle the default once
        return self


def check_writable(folder: Path) -> None:
    """Plugins run as hookbus's user: a folder or file anyone can write is refused (§13)."""
    refuse_writable(folder, "plugins_dir")
    for path in sorted(folder.glob("*.py")):
        refuse_writable(path, "plugins_dir")


# -- the `netcfgbu` import, for plugins written for netcfgbu --------------------------------------

class Plugin:
    """What `from netcfgbu import Plugin` gives a plugin when netcfgbu is not installed."""

    name: str | None = None

    # netcfgbu's own signatures: no self, as netcfgbu calls them on the class.
    def report(report):  # type: ignore[no-untyped-def]
        pass

    def backup_success(rec: dict, res: bool):  # type: ignore[no-untyped-def,type-arg,misc]
        pass

    def backup_failed(rec: dict, exc: str):  # type: ignore[no-untyped-def,type-arg,misc]
        pass

    def git_report(success: bool, tag_name: str):  # type: ignore[no-untyped-def,misc]
        pass


_LOADING = threading.Lock()


def _shim() -> dict[str, types.ModuleType]:
    package = types.ModuleType("netcfgbu", "hookbus's stand-in for netcfgbu: just `Plugin`")
    plugins = types.ModuleType("netcfgbu.plugins")
    package.Plugin = plugins.Plugin = Plugin  # type: ignore[attr-defined]
    package.plugins = plugins  # type: ignore[attr-defined]
    package.__path__ = []  # a package, so `from netcfgbu.plugins import Plugin` works as well
    return {"netcfgbu": package, "netcfgbu.plugins": plugins}


@contextlib.contextmanager
def netcfgbu_import() -> Iterator[type]:
    """While loading plugin files, make `from netcfgbu import Plugin` work, with
    the real netcfgbu when it is installed; yield the Plugin base class to look for."""
    if importlib.util.find_spec("netcfgbu") is not None:
        from netcfgbu.plugins import Plugin as RealPlugin

        yield RealPlugin
        return
    saved = {name: sys.modules.get(name) for name in ("netcfgbu", "netcfgbu.plugins")}
    sys.modules.update(_shim())
    try:
        yield Plugin
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# -- loading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """How to call one hook of one plugin."""

    plugin: str  # `ScienceLogic (sciencelogic.py)`
    hook: str
    target: Any  # the bound or plain callable
    is_async: bool


def _callable(cls: type, hook: str, arity: int, label: str) -> tuple[Any, bool] | None:
    """Return (callable, needs_instance) for a hook the class defines itself, or
    None when it only inherits the do-nothing one. Raise ConfigError when its
    arguments do not fit."""
    for klass in cls.__mro__:
        if hook in vars(klass):
            raw = vars(klass)[hook]
            break
    else:
        return None
    if klass.__module__ in ("netcfgbu.plugins", __name__) and klass.__name__ == "Plugin":
        return None  # the base class's empty hook
    if isinstance(raw, (staticmethod, classmethod)):
        fn = getattr(cls, hook)
        needs_instance = False
    elif inspect.isfunction(raw):
        fn, needs_instance = raw, None
    else:
        raise ConfigError(f"plugin {label}: {hook} is not a function")
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())
    required = [p for p in params if p.default is p.empty]
    if needs_instance is None:  # a plain function: netcfgbu style (no self) or a method with self
        if params and params[0].name == "self" and (len(params) - 1 >= arity or varargs) and len(required) - 1 <= arity:
            needs_instance = True
        elif (len(params) >= arity or varargs) and len(required) <= arity:
            needs_instance = False
        else:
            want = ", ".join(HOOKS[hook])
            raise ConfigError(f"plugin {label}: {hook} must take ({want}), with or without self; "
                              f"it takes ({', '.join(p.name for p in params)})")
    elif not ((len(params) >= arity or varargs) and len(required) <= arity):
        raise ConfigError(f"plugin {label}: {hook} must take ({', '.join(HOOKS[hook])})")
    return fn, bool(needs_instance)


def load_plugins(folder: Path) -> list[Call]:
    """Import every *.py in folder and return the calls of every Plugin subclass.
    Raise ConfigError naming the file or the plugin at fault."""
    calls: list[Call] = []
    try:  # again at load: the modes may have changed since the config was read
        check_writable(folder)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with _LOADING, netcfgbu_import() as base:
        for path in sorted(folder.glob("*.py")):
            module_name = f"hookbus_plugins_{abs(hash(str(folder))):x}_{path.stem}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"plugins_dir: cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # a plugin file's own error: name the file, not a traceback
                raise ConfigError(f"plugins_dir: {path.name} failed to load: {type(exc).__name__}: {exc}") from None
            for cls in vars(module).values():
                if not (isinstance(cls, type) and issubclass(cls, base) and cls is not base
                        and cls.__module__ == module_name):
                    continue
                label = f"{getattr(cls, 'name', None) or cls.__name__} ({path.name})"
                calls += _plugin_calls(cls, label)
    return calls


def _plugin_calls(cls: type, label: str) -> list[Call]:
    found = {hook: _callable(cls, hook, len(args), label) for hook, args in HOOKS.items()}
    instance = None
    if any(f is not None and f[1] for f in found.values()):
        try:
            instance = cls()
        except Exception as exc:
            raise ConfigError(f"plugin {label}: cannot be created without arguments: {exc}") from None
    calls = []
    for hook, got in found.items():
        if got is None:
            continue
        fn, needs_instance = got
        target = types.MethodType(fn, instance) if needs_instance else fn
        calls.append(Call(label, hook, target, inspect.iscoroutinefunction(fn)))
    return calls


# -- what each event becomes ------------------------------------------------------------------

class Record(dict):  # type: ignore[type-arg]
    """A dict that also answers attribute access (`rec["host"]` and `rec.host`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Report(Record):
    """netcfgbu's report, from `backup.report`: the event's fields, plus the
    attributes a netcfgbu plugin reads (`task_results`, `start_ts`, `duration`, …)."""

    TIME_FORMAT = "%Y-%b-%d %I:%M:%S %p"

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        # As netcfgbu has them: a time without an offset stays naive.
        self.start_ts = parse_time(str(data["start"]), assume_tz=None) if data.get("start") else None
        self.stop_ts = parse_time(str(data["stop"]), assume_tz=None) if data.get("stop") else None
        self.duration = float(data.get("duration_s") or 0.0)
        failures = [(Record(host=f.get("host"), **{k: v for k, v in f.items() if k != "host"}), f.get("error"))
                    for f in data.get("failures") or [] if isinstance(f, dict)]
        self.task_results: dict[bool, list[Any]] = {True: [], False: failures}

    @property
    def start_time(self) -> str:
        return self.start_ts.strftime(self.TIME_FORMAT) if self.start_ts else ""

    @property
    def stop_time(self) -> str:
        return self.stop_ts.strftime(self.TIME_FORMAT) if self.stop_ts else ""


def calls_for(event: Event) -> list[tuple[str, tuple[Any, ...]]]:
    """Given an event, return the hooks to call and their arguments."""
    data = event.fields
    device = Record(data.get("device") or {})
    if event.type == "backup.device.succeeded":
        return [("backup_success", (device, True))]
    if event.type == "backup.device.failed":
        return [("backup_failed", (device, data.get("error") or "failed"))]
    if event.type == "backup.report":
        return [("report", (Report(data),))]
    if event.type == "backup.vcs.saved":
        return [("git_report", (bool(data.get("success")), data.get("tag_name")))]
    if event.type == "backup.job.finished":
        job = Record(data)
        if data.get("outcome") in FAILED_OUTCOMES:
            return [("backup_failed", (job, data.get("error") or data.get("reason") or data.get("outcome")))]
        return [("backup_success", (job, True))]
    return []




class PluginsSubscriber(Subscriber):
    Config = PluginsConfig
    default_events = ["backup.device.*", "backup.report", "backup.vcs.saved", "backup.job.finished"]
    config: PluginsConfig

    def __init__(self, config: PluginsConfig) -> None:
        super().__init__(config)
        self.calls: list[Call] = []

    @property
    def call_limit(self) -> float:
        return float(self.config.timeout)

    def handler_timeout(self) -> float:
        # Each call has `timeout`; they run side by side, so the handler needs a little more.
        return self.call_limit + 5.0

    async def start(self) -> None:
        assert self.config.plugins_dir is not None
        self.calls = await asyncio.to_thread(load_plugins, self.config.plugins_dir)
        names = sorted({c.plugin for c in self.calls})
        log.info("plugins %s: %d plugin(s) from %s: %s", self.name, len(names), self.config.plugins_dir,
                 ", ".join(names) or "none")

    def preview(self, event: Event) -> str:
        hooks = [hook for hook, _ in calls_for(event)]
        if not hooks:
            raise DeliveryError(f"plugins have no hook for {event.type}: nothing would be called")
        return f"would call {', '.join(hooks)} of every Plugin subclass in {self.config.plugins_dir}"

    async def _call(self, call: Call, args: tuple[Any, ...]) -> str | None:
        """Make one call; return None, or what went wrong, naming the plugin."""
        try:
            async with asyncio.timeout(self.call_limit):
                if call.is_async:
                    await call.target(*args)
                else:
                    await in_daemon_thread(call.target, *args, name="hookbus-plugin")
        except TimeoutError:
            return f"plugin {call.plugin}: {call.hook} did not return within {self.call_limit:g}s"
        except Exception as exc:
            return f"plugin {call.plugin}: {call.hook} raised {type(exc).__name__}: {exc}"
        return None

    async def handle(self, event: Event) -> None:
        pending = [self._call(call, args) for hook, args in calls_for(event) for call in self.calls if call.hook == hook]
        problems = [p for p in await asyncio.gather(*pending) if p]
        for problem in problems:
            log.error("plugins %s: seq %s: %s", self.name, event.seq, problem)
        if problems:
            raise DeliveryError("; ".join(problems), permanent=True)


SUBSCRIBER = PluginsSubscriber
