"""The `hookbus` command.

The application (hookbus.app) and the adapters are imported by the commands that
use them: `hookbus emit` and `hookbus status`, run from hooks, start in 0.3 s
instead of 0.5.

Exit status: 0 done; 1 refused or failed; 2 bad usage or configuration;
3 the broker could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import orjson
import zmq.asyncio

from hookbus import __version__
from hookbus.bus.checks.schedule import describe
from hookbus.bus.events.event import EventError, compile_globs, new_event, new_id, parse_event
from hookbus.bus.events.host import host_name
from hookbus.bus.events.times import format_duration_short, now_rfc3339, rfc3339
from hookbus.bus.filemodes import private_umask
from hookbus.bus.logs import setup_logging
from hookbus.bus.notify.templates import SAMPLES
from hookbus.bus.secrets import mark_database_url, resolve_value, scrub
from hookbus.bus.settings import Check, ConfigError
from hookbus.bus.store.base import JournalError
from hookbus.bus.store.opener import store_location
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import BrokerRefused, BrokerUnavailable, ControlClient
from hookbus.bus.transport.credentials import ENV, grant
from hookbus.config import Config, find_config_path, load_config
from hookbus.subscribers import DeliveryError, create

log = logging.getLogger("hookbus")

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
LONG_RUNNING = ("serve", "broker", "subscriber", "run")


def fail(message: str, code: int) -> NoReturn:
    print(f"hookbus: {scrub(message)}", file=sys.stderr)
    raise SystemExit(code)


# -- commands ------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from hookbus.app import data_dir_lock, serve

    with data_dir_lock(config):
        asyncio.run(serve(config, broker=True, http=True, subscribers=[s.name for s in config.subscribers]))
    return 0


def cmd_broker(args: argparse.Namespace, config: Config) -> int:
    from hookbus.app import data_dir_lock, serve

    with data_dir_lock(config):
        asyncio.run(serve(config, broker=True, http=not args.no_http, subscribers=[]))
    return 0


def cmd_subscriber(args: argparse.Namespace, config: Config) -> int:
    from hookbus.app import serve

    for name in args.names:
        config.subscriber(name)
    failures = asyncio.run(serve(config, broker=False, http=False, subscribers=args.names))
    if failures and len(failures) == len(args.names):  # nothing left running: say why, exit non-zero
        fail("; ".join(failures), EXIT_FAILED)
    return 0


async def _request(config: Config, command: bytes, payload: Any, timeout: float) -> tuple[dict[str, Any], list[bytes]]:
    client = ControlClient(config.bus, zmq.asyncio.Context())
    try:
        return await client.request(command, payload, timeout=timeout)
    finally:
        client.close()
        client.ctx.term()


def control(config: Config, command: bytes, payload: Any, timeout: float) -> dict[str, Any]:
    try:
        info, _ = asyncio.run(_request(config, command, payload, timeout))
    except BrokerUnavailable as exc:
        fail(f"{exc}; is `hookbus serve` or `hookbus broker` running? (bus.control)", EXIT_UNREACHABLE)
    except BrokerRefused as exc:
        fail(str(exc), EXIT_FAILED)
    return info


def cmd_emit(args: argparse.Namespace, config: Config) -> int:
    if args.adapter:
        from hookbus.adapters import registry

        try:
            events = registry.events_from(args.adapter, args)
        except (EventError, ValueError) as exc:
            fail(str(exc), EXIT_USAGE)
    else:
        try:
            data = orjson.loads(args.data) if args.data is not None else None
        except orjson.JSONDecodeError as exc:
            fail(f"--data is not valid JSON: {exc}", EXIT_USAGE)
        source = args.source or f"hookbus-emit://{host_name()}"
        try:
            events = [parse_event(new_event(args.type, data, source=source, subject=args.subject, id_=args.id).to_dict())]
        except EventError as exc:
            fail(str(exc), EXIT_USAGE)

    async def publish() -> list[dict[str, Any]]:
        client = ControlClient(config.bus, zmq.asyncio.Context())
        try:
            return await client.publish([e.to_json() for e in events], timeout=args.timeout)
        finally:
            client.close()
            client.ctx.term()

    try:
        accepted = asyncio.run(publish())
    except BrokerUnavailable as exc:
        fail(f"not accepted: {exc} (bus.control); nothing was sent", EXIT_UNREACHABLE)
    except BrokerRefused as exc:
        fail(f"refused: {exc}", EXIT_FAILED)
    for item in accepted:
        print(orjson.dumps(item).decode())
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    status = control(config, protocol.STATUS, {}, args.timeout)
    if args.json:
        print(scrub(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode()))
        return 0
    print(f"journal head: seq {status['head']}  ({status['events_retained']} events retained)")
    print_nodes(status)
    print(f"{'subscriber':<20} {'up':<4} {'cursor':>10} {'lag':>8} {'retrying':>9} {'dead':>6}  {'node':<16} delivered")
    for s in status["subscribers"]:
        print(f"{s['name']:<20} {'yes' if s['connected'] else 'no':<4} {s['cursor']:>10} {s['lag']:>8} "
              f"{s['retries_in_flight']:>9} {s['dead_letters']:>6}  {s.get('node') or '-':<16} "
              f"{s['stats'].get('delivered', '-')}")
    if status["dead_letters"]:
        print("\ndead letters (replay with `hookbus replay --dead-letters`):")
        for d in status["dead_letters"]:
            print(f"  #{d['id']:<5} {d['subscriber']:<16} seq {d['seq']:<8} after {d['attempts']} attempt(s): "
                  f"{scrub(d['error'])}")
    return 0


def print_nodes(status: dict[str, Any]) -> None:
    """The nodes of the bus, and who runs the singleton work (checks, retention)."""
    work = status.get("work", {})
    for n in status.get("nodes", []):
        runs = sorted(name for name, node in work.items() if node == n["name"] and not name.startswith("subscriber:"))
        print(f"node {n['name']:<16} {'alive' if n['alive'] else 'DOWN':<6} last heartbeat {n['last_heartbeat_s']} s ago"
              + ("  (answering)" if n["name"] == status.get("node") else "") + (f"  runs {', '.join(runs)}" if runs else ""))


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    if args.from_seq is not None:
        if not args.subscriber:
            fail("--from needs --subscriber NAME", EXIT_USAGE)
        config.subscriber(args.subscriber)
        info = control(config, protocol.REPLAY, {"subscriber": args.subscriber, "from_seq": args.from_seq}, args.timeout)
        print(f"{args.subscriber}: will deliver again from seq {info['from_seq']}")
        return 0
    if not args.dead_letters and not args.id:
        fail("say what to replay: --dead-letters [--subscriber NAME] [--id N…], or --subscriber NAME --from SEQ", EXIT_USAGE)
    info = control(config, protocol.REPLAY, {"dead_letters": True, "subscriber": args.subscriber, "ids": args.id}, args.timeout)
    print(f"queued {info['queued']} dead letter(s) for redelivery")
    return 0


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from hookbus.app import run_job

    return run_job(config, args.job, job_type=args.job_type, job_id=args.job_id, publish_timeout=args.timeout)


def sample_for(patterns: list[str], wanted: str | None) -> Any:
    """The sample event `hookbus test` sends: --type, else backup.job.finished when the
    subscriber takes it, else the first sample it takes. Fresh id and time, so a receiver
    neither drops it as a repeat nor as too old."""
    if wanted is not None and wanted not in SAMPLES:
        fail(f"--type: no sample {wanted!r}; samples: {', '.join(SAMPLES)}", EXIT_USAGE)
    takes = compile_globs(patterns).match
    types = [wanted] if wanted else [t for t in ["backup.job.finished", *SAMPLES] if takes(t)]
    if not types:
        fail(f"no sample event matches this subscriber's events ({', '.join(patterns)}); pass --type TYPE", EXIT_USAGE)
    sample = SAMPLES[types[0]]
    return dataclasses.replace(sample, id=f"test-{new_id()}", time=now_rfc3339(), seq=None, data=_as_of_now(sample.data))


def _as_of_now(data: Any) -> Any:
    """The sample's own times (finished_at, stop, …) moved to now, keeping its duration:
    a receiver that refuses stale results (healthchecks' max_age) must not refuse a test. A time
    the sample leaves null (a missed check's started_at) stays null."""
    if not isinstance(data, dict):
        return data
    now = datetime.now(UTC)
    duration = timedelta(seconds=float(data.get("duration_s") or 0))
    stamp = {"finished_at": now, "stop": now, "started_at": now - duration, "start": now - duration}
    return {**data, **{k: rfc3339(v, "seconds") for k, v in stamp.items() if data.get(k) is not None}}


def cmd_test(args: argparse.Namespace, config: Config) -> int:
    sub_config = config.subscriber(args.name)
    subscriber = create(sub_config)
    event = subscriber.sample(
        sample_for(sub_config.events if sub_config.events is not None else subscriber.default_events, args.type))
    try:
        preview = subscriber.preview(event)
    except DeliveryError as exc:
        fail(f"{args.name}: the sample {event.type} event: {exc}", EXIT_FAILED)
    print(f"{args.name} ({sub_config.kind}), sample {event.type}:\n")
    print(scrub(preview))

    async def send() -> None:
        await subscriber.start()
        try:
            async with asyncio.timeout(sub_config.timeout * 2):
                await subscriber.handle(event)
                await subscriber.flush()
        finally:
            await subscriber.close()

    try:
        asyncio.run(send())
    except DeliveryError as exc:
        fail(f"{args.name}: sending failed: {exc}", EXIT_FAILED)
    except TimeoutError:
        fail(f"{args.name}: sending failed: no answer within {sub_config.timeout * 2:.0f}s", EXIT_FAILED)
    print(f"\nsent to {args.name}")
    return 0


def cmd_grant(args: argparse.Namespace, config: Config) -> int:
    dest = Path(args.to)
    try:
        public = grant(config.bus, args.role, dest, args.user)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except PermissionError as exc:
        fail(f"{exc}" + (" (--user needs root)" if args.user else ""), EXIT_FAILED)
    owner = f", owned by {args.user}" if args.user else ""
    print(f"wrote a {args.role} credential to {dest} (mode 0600{owner}).\n"
          f"That user points hookbus at it: {ENV}={dest} (or [bus] credential = \"{dest}\").\n"
          f"To take the right back, delete {public}.")
    return 0


def http_api(config: Config, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """Ask the running hookbus's HTTP API (http.listen, the first of http.tokens); return the JSON answer.
    Exit 3 when it cannot be reached, 1 with its message when it refuses."""
    if not config.http.enabled:
        fail("this command uses the HTTP API, and http.listen is off", EXIT_USAGE)
    host = "127.0.0.1" if config.http.host in ("0.0.0.0", "") else ("::1" if config.http.host == "::" else config.http.host)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{config.http.port}{path}"
    headers = {"Content-Type": "application/json"}
    if config.http.tokens:
        headers["Authorization"] = f"Bearer {config.http.tokens[0]}"
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        # Not through an HTTP_PROXY: the request carries a token for this host's listener.
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=timeout) as answer:
            return orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            error = orjson.loads(exc.read()).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        fail(error or f"HTTP {exc.code} from {url}", EXIT_FAILED)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"http://{config.http.listen} cannot be reached ({reason}); is `hookbus serve` running? (http.listen)",
             EXIT_UNREACHABLE)


def cmd_checks(args: argparse.Namespace, config: Config) -> int:
    if args.action in ("pause", "resume"):
        if not args.name:
            fail(f"checks {args.action} needs the check's NAME", EXIT_USAGE)
        answer = http_api(config, "POST", f"/api/checks/{urllib.parse.quote(args.name, safe='')}/{args.action}")
        state = answer["check"]["status"]
        print(f"{args.name}: {state}" + ("" if answer["changed"] else f" (it already was {state})"))
        return 0
    checks = http_api(config, "GET", "/api/checks")["checks"]
    if args.json:
        print(orjson.dumps(checks, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not checks:
        print("no checks configured ([[checks]], or a [[jobs]] table with a schedule)")
        return 0
    for c in checks:
        state = c["status"] + (f" ({c['reason']})" if c["reason"] else "") + (", silenced" if c["silenced"] else "")
        print(f"{c['name']:<20} {state:<28} last seen {_when(c['last_seen']):<20} next due {_when(c['next_due']):<20} "
              f"{c['schedule']}")
    return 0


def _when(value: str | None) -> str:
    return value[:16].replace("T", " ") + " UTC" if value else "-"


def cmd_silence(args: argparse.Namespace, config: Config) -> int:
    if args.action == "add":
        if not (args.check or args.job or args.type):
            fail("silence add needs --check C, --job J or --type T", EXIT_USAGE)
        if not args.duration:
            fail('silence add needs --for, e.g. --for 2h', EXIT_USAGE)
        body = {"check": args.check, "job": args.job, "type": args.type, "for": args.duration, "comment": args.comment}
        silence = http_api(config, "POST", "/api/silences", {k: v for k, v in body.items() if v is not None})["silence"]
        print(f"silence {silence['id']}: {_what(silence)} until {_when(_iso(silence['ends_at']))}")
        return 0
    if args.action == "end":
        if args.id is None:
            fail("silence end needs the silence's ID (hookbus silence list)", EXIT_USAGE)
        http_api(config, "DELETE", f"/api/silences/{args.id}")
        print(f"silence {args.id}: ended")
        return 0
    silences = http_api(config, "GET", "/api/silences")["silences"]
    for s in silences:
        print(f"#{s['id']:<4} {'active' if s['active'] else 'ended ':<7} {_what(s):<40} until {_when(_iso(s['ends_at']))}"
              + (f"  {s['comment']}" if s["comment"] else ""))
    if not silences:
        print("no silences")
    return 0


def _what(silence: dict[str, Any]) -> str:
    return ", ".join(f"{key} {silence[key]}" for key in ("check", "job", "type") if silence.get(key))


def _iso(epoch: float) -> str:
    return rfc3339(datetime.fromtimestamp(epoch, UTC))


def _check_details(check: Check) -> str:
    """What `check-config` says of a check after its schedule: job, repository, limits, keys."""
    parts = [] if check.job == check.name else [f"job {check.job}"]
    if check.repository:
        parts.append(f"repository {check.repository}")
    if check.schedule is not None or check.period is not None:
        parts.append(f"grace {format_duration_short(check.grace)}")
    if check.max_runtime is not None:
        parts.append(f"max runtime {format_duration_short(check.max_runtime)}")
    if check.down_after_failures > 1:
        parts.append(f"down after {check.down_after_failures} failed runs")
    if check.repeat is not None:
        parts.append(f"reminder every {format_duration_short(check.repeat)}")
    parts += [what for what, value in (("ping key", check.key), ("badge key", check.badge_key)) if value]
    return f" ({', '.join(parts)})" if parts else ""


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    for sub in config.subscribers:
        create(sub)
    print(f"{config.source}: OK — {len(config.subscribers)} subscriber(s): "
          + ", ".join(f"{s.name} ({s.kind})" for s in config.subscribers))
    if config.jobs:
        print(f"{len(config.jobs)} job(s) for `hookbus run`: " + ", ".join(
            f"{j.name} ({len(j.pre_hooks)} pre-hook(s), {len(j.post_hooks)} post-hook(s))" for j in config.jobs))
    if config.sources:
        print(f"{len(config.sources)} source(s) followed by `hookbus serve`: " + ", ".join(
            f"{s.name} ({s.kind}, {scrub(s.url)}" + (f", database {s.database}" if s.database else "") + ")"
            for s in config.sources))
    if config.checks:
        print(f"{len(config.checks)} check(s):")
        for c in config.checks:
            print(f"  {c.name}: {describe(c)}" + _check_details(c))
    print(f"journal {store_location(config.bus)}; control {' or '.join(config.bus.controls)}; "
          f"publish {config.bus.publish}; "
          f"http {'http://' + config.http.listen if config.http.enabled else 'off'}")
    print(f"CURVE keys {config.bus.data_dir / 'keys'} (set up at the first start; `hookbus grant publish --to FILE` "
          "for another user)" + (f"; clients authorized in {config.bus.curve_authorized_keys}"
                                 if config.bus.curve_authorized_keys else ""))
    return 0


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    """Copy the SQLite journal of data_dir into a fresh PostgreSQL database (the broker stopped)."""
    url = resolve_value(args.to, "--to")
    if not url.startswith(("postgresql://", "postgres://")):
        fail("--to: must be a PostgreSQL URL such as postgresql://hookbus@db1/hookbus (or env:NAME, file:PATH)", EXIT_USAGE)
    mark_database_url(url)
    source = config.bus.data_dir / "journal.db"
    # Lazily: the PostgreSQL driver is no part of the other commands' start.
    from hookbus.app import data_dir_lock
    from hookbus.bus.store.migrate import copy_journal
    from hookbus.bus.store.postgres import redacted

    with data_dir_lock(config):  # no broker may write the journal while it is copied
        counts = copy_journal(source, url)
    print(f"copied {source} to {redacted(url)}: " + ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in counts.items()))
    print("now set [bus] store to that URL (env:NAME or file:PATH keep the password out of the file) and start hookbus")
    return 0


LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _global_options(default: Any) -> argparse.ArgumentParser:
    """--config and --log-level, taken before the command or after it. The top-level parser
    owns them (default None); each command's copy has `default` SUPPRESS, so a command that
    is not given them leaves the value from before the command as it is, and one given after
    the command replaces it: the later one wins."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--config", metavar="F", default=default,
                         help="config file (else $HOOKBUS_CONFIG, else ./hookbus.toml, else defaults)")
    options.add_argument("--log-level", choices=LOG_LEVELS, default=default,
                         help="DEBUG, INFO, WARNING or ERROR (else $HOOKBUS_LOG_LEVEL, else INFO)")
    return options


def log_level(args: argparse.Namespace) -> str:
    """--log-level, else $HOOKBUS_LOG_LEVEL when it names a level, else INFO."""
    from_env = os.environ.get("HOOKBUS_LOG_LEVEL", "").upper()
    return str(args.log_level or (from_env if from_env in LOG_LEVELS else "INFO"))


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="hookbus", description="The event bus that backup tools report to.",
                                     parents=[_global_options(None)])
    parser.add_argument("--version", action="version", version=f"hookbus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="broker, HTTP listener and all subscribers in one process")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("broker", parents=[common], help="the broker and the HTTP endpoint, without subscribers")
    p.add_argument("--no-http", action="store_true", help="do not serve HTTP")
    p.set_defaults(func=cmd_broker)
    p = sub.add_parser("subscriber", parents=[common], help="run the named subscribers against a running broker")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_subscriber)

    p = sub.add_parser("emit", parents=[common], help="publish one event; exit 0 once it is durably accepted")
    p.add_argument("type", nargs="?", metavar="TYPE", help="event type, e.g. backup.job.finished")
    p.add_argument("--data", help="the event's data as JSON")
    p.add_argument("--source", help="the event's source (default hookbus-emit://HOST)")
    p.add_argument("--subject", help="the event's subject (e.g. the repository)")
    p.add_argument("--id", help="the event's id (default: a new ULID); a repeat of source+id is not stored twice")
    p.add_argument("--from", dest="adapter", metavar="ADAPTER", help="build the event from a tool's environment/output")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker's ack (default 30)")
    tool = p.add_argument_group("with --from (borgmatic, borgitory, backrest, restic; see docs/<tool>.md)")
    tool.add_argument("--state", choices=["start", "finish", "fail"], help="what the hook reports (borgmatic, borgitory)")
    tool.add_argument("--job", help="the job's name")
    tool.add_argument("--repository", help="the repository (borgmatic: {repository})")
    tool.add_argument("--error", help="the error text (borgmatic: --error={error})")
    tool.add_argument("--output", help="the failed command's output (borgmatic: --output={output})")
    tool.add_argument("--exit-status", type=int, metavar="N", help="the tool's exit status (restic: $?)")
    p.set_defaults(func=cmd_emit)

    p = sub.add_parser("status", parents=[common], help="subscribers, cursors, lag, retries, dead letters")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("replay", parents=[common], help="replay dead letters, or a subscriber from a sequence number")
    p.add_argument("--dead-letters", action="store_true", help="redeliver dead letters (all, or those of --subscriber / --id)")
    p.add_argument("--id", type=int, action="append", help="one dead letter by id (repeatable)")
    p.add_argument("--subscriber", metavar="NAME")
    p.add_argument("--from", dest="from_seq", type=int, metavar="SEQ", help="deliver to --subscriber again from this seq")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("run", parents=[common], help="run a configured job: pre-hooks, backup, prune, post-hooks, notification")
    p.add_argument("job", metavar="JOB", help="the name of a [[jobs]] table")
    p.add_argument("--job-type", choices=["manual", "scheduled"], default="manual",
                   help="recorded in the events and given to hooks as HOOKBUS_JOB_TYPE (default manual)")
    p.add_argument("--job-id", help="the job's id (default: a new ULID)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the broker at the end before leaving events in the spool (default 10)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("test", parents=[common], help="render a sample event for one subscriber, show it, send it")
    p.add_argument("name", metavar="NAME", help="the subscriber's name")
    p.add_argument("--type", metavar="TYPE", help="which sample event (default: backup.job.finished if it takes it)")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("grant", parents=[common], help="write a credential that lets another local user publish (or operate)")
    p.add_argument("role", choices=["publish", "operate"],
                   help="publish: emit, run, the spool; operate: also subscribers, status, replay")
    p.add_argument("--to", required=True, metavar="FILE", help="where to write it (mode 0600)")
    p.add_argument("--user", metavar="NAME", help="make NAME the file's owner (run as root)")
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser("checks", parents=[common], help="each check: state, last seen, next due; pause or resume one")
    p.add_argument("action", nargs="?", choices=["list", "pause", "resume"], default="list")
    p.add_argument("name", nargs="?", metavar="NAME", help="the check to pause or resume")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_checks)

    p = sub.add_parser("silence", parents=[common], help="hold notifications during maintenance: add, list, end")
    p.add_argument("action", choices=["add", "list", "end"])
    p.add_argument("id", nargs="?", type=int, metavar="ID", help="the silence to end")
    p.add_argument("--check", metavar="C", help="a check's name")
    p.add_argument("--job", metavar="J", help="a job's name")
    p.add_argument("--type", metavar="T", help="an event type glob, e.g. 'backup.check.*'")
    p.add_argument("--for", dest="duration", metavar="DURATION", help='how long, e.g. 2h, 30m, 1d, "1h30m"')
    p.add_argument("--comment", help="why (shown in hookbus silence list)")
    p.set_defaults(func=cmd_silence)

    p = sub.add_parser("migrate", parents=[common], help="copy the SQLite journal into a fresh PostgreSQL database")
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/db (or env:NAME, file:PATH)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("check-config", parents=[common], help="validate the configuration")
    p.set_defaults(func=cmd_check_config)
    return parser


def load_for(command: str, path: Path | None) -> Config:
    """The configuration a command needs: `run`, only its job's and its gates' part (a notifier's
    missing secret must not stop a backup); every other command, all of it."""
    if command == "run":
        from hookbus.app import run_needs

        return load_config(path, subscribers=run_needs, http=False)
    return load_config(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(log_level(args))
    if args.command == "emit" and not args.type and not args.adapter:
        fail("emit needs TYPE (or --from ADAPTER)", EXIT_USAGE)
    if args.command in LONG_RUNNING:
        private_umask()  # every file it creates (journal, spool, jsonl, state) is its user's alone (§13)
    try:
        config = load_for(args.command, find_config_path(args.config))
        return int(args.func(args, config))
    except ConfigError as exc:
        fail(f"configuration error:\n{exc}", EXIT_USAGE)
    except (OSError, JournalError) as exc:
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
