"""hookbus for netcfgbu: copy this one file into netcfgbu's plugins directory.

netcfgbu (0.8, Python 3.8) loads every *.py in its plugins directory and calls
the `Plugin` subclasses it finds, on the class, without `self`, synchronously
from inside its asyncio loop:

    backup_success(record, result)   a device was backed up (result is True), or
                                      netcfgbu says so with a result that is not
                                      True: that is a failure
    backup_failed(record, exc)       a device failed
    report(report)                   end of `netcfgbu backup`
    git_report(success, tag_name)    end of `netcfgbu vcs save`

This plugin turns them into CloudEvents (`backup.device.succeeded`,
`backup.device.failed`, `backup.report`, `backup.vcs.saved`) that share one
`job_id` per netcfgbu run, and posts them to hookbus's `POST /events`.

Set up by the environment:
    HOOKBUS_URL            hookbus's HTTP address (default http://127.0.0.1:8765); several
                           nodes of one bus separated by commas
                           (http://hb1:8765,http://hb2:8765): tried in turn
    HOOKBUS_TOKEN          its bearer token, if http.tokens is set
    HOOKBUS_SPOOL          spool file (default ~/.local/state/hookbus/netcfgbu-spool.jsonl)
    HOOKBUS_TIMEOUT        seconds per HTTP request (default 5)
    HOOKBUS_FLUSH_TIMEOUT  seconds netcfgbu may wait at exit for the last events (default 10)

It never holds netcfgbu up: a call only puts the event on a queue and returns.
A background thread writes each event to the spool file, then sends the spool;
what hookbus has accepted leaves the spool. When hookbus cannot be reached the
events stay in the spool and go with the next run (or the next retry of this
one), with the same ids, so hookbus stores each once. Passwords and other
credentials in the inventory record are never sent.

Standard library only; Python 3.8 or newer.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

try:
    import fcntl
except ImportError:  # pragma: no cover - netcfgbu runs on POSIX systems
    fcntl = None  # type: ignore[assignment]

if __name__.startswith("hookbus."):
    # Imported by hookbus itself, for the mapping below (/ingest/netcfgbu): it must not
    # register as a plugin there, or it would send hookbus's own events back to it.
    Plugin = object
else:
    try:
        from netcfgbu import Plugin  # type: ignore[no-redef]
    except ImportError:  # run outside netcfgbu (a test, a syntax check)
        Plugin = object  # type: ignore[assignment,misc,no-redef]

SOURCE = "netcfgbu://" + socket.gethostname()
# Keys of an inventory record that hold credentials: never leave the host. This file
# runs alone inside netcfgbu, so it carries the rule's text; a test holds it equal to
# hookbus's own (bus/redact.py SECRET_KEY), which also redacts free text on arrival.
SECRET_KEY = re.compile(
    r"pass(?!ed|es|ing)|pwd|secret|token|credential|community|cookie|private.?key|priv.?key|ssh.?key|api.?key"
    r"|auth.?key|snmp.*(?:auth|priv)|^(?:key|psk|pw|enable|auth|authorization)$",
    re.IGNORECASE,
)
# scheme://user:password@host in a record's values or a failure's text
URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://[^\s/@:'\"]*):[^\s/@'\"]*@", re.IGNORECASE)
BATCH = 200  # events per request
REFUSED_FOR_GOOD = (400, 413, 415, 422)  # hookbus will never take this event: drop it, say so


def is_secret(key: object) -> bool:
    return bool(SECRET_KEY.search(str(key)))


def clean_text(text: str) -> str:
    return URL_USERINFO.sub(r"\1:***@", text)


def jsonable(value: object) -> object:
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _login(k, jsonable(v)) for k, v in value.items() if not is_secret(k)}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    return str(value)


def _login(key: object, value: object) -> object:
    """`login: "user:password"` keeps the user."""
    if str(key).lower() == "login" and isinstance(value, str) and ":" in value:
        return value.partition(":")[0] + ":***"
    return value


def clean_record(record: object) -> dict:
    """The inventory record without passwords or other credentials."""
    if not isinstance(record, dict):
        return {"host": str(record)}
    return jsonable(record)  # type: ignore[return-value]


def err_reason(exc: object) -> str:
    """The failure as netcfgbu's report words it (netcfgbu.cli.report.err_reason)."""
    if isinstance(exc, str):
        return exc
    if exc is False or exc is None:
        return "backup did not succeed"
    if type(exc).__name__ == "TimeoutError":  # asyncio's (3.8-3.10) or the builtin one
        return "TIMEOUT" + (str(exc.args) if getattr(exc, "args", None) else "")  # type: ignore[attr-defined]
    if type(exc) is OSError and getattr(exc, "errno", None):
        import errno

        return errno.errorcode.get(exc.errno or 0, str(exc))
    if isinstance(exc, BaseException):
        return "%s: %s" % (type(exc).__name__, exc)
    return str(exc)


def rfc3339(moment: object) -> object:
    if not isinstance(moment, datetime):
        return moment
    aware = moment if moment.tzinfo else moment.astimezone()  # netcfgbu keeps local wall-clock times
    return aware.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def device_data(job_id: str, record: object, result: object, ok: bool) -> dict:
    device = clean_record(record)
    error = None if ok else clean_text(err_reason(result))
    return {"job_id": job_id, "host": device.get("host"), "device": device, "error": error}


def report_data(job_id: str, report: object) -> dict:
    """netcfgbu's Report (task_results[True/False] lists of (record, result)) as backup.report data."""
    results = getattr(report, "task_results", None) or {}
    good = list(results.get(True, []))
    bad = list(results.get(False, []))
    failures = []
    for rec, exc in bad:
        rec = rec if isinstance(rec, dict) else {"host": str(rec)}
        failures.append({"host": rec.get("host"), "os_name": rec.get("os_name"), "error": clean_text(err_reason(exc))})
    duration = None
    try:
        duration = round(float(report.duration), 3)  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        pass
    return {"job_id": job_id, "total": len(good) + len(bad), "ok": len(good), "fail": len(bad),
            "start": rfc3339(getattr(report, "start_ts", None)), "stop": rfc3339(getattr(report, "stop_ts", None)),
            "duration_s": duration, "failures": failures}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_spool() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hookbus", "netcfgbu-spool.jsonl")


def warn(message: str) -> None:
    try:
        sys.stderr.write("hookbus plugin: %s\n" % message)
    except Exception:
        pass


class Spool:
    """Events on disk, one JSON line each, until hookbus has accepted them.

    A lock file next to it (flock) keeps two netcfgbu runs, and this run's
    sender and its exit, from rewriting it under each other.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _locked(self):  # type: ignore[no-untyped-def]
        spool = self

        class Locked:
            def __enter__(self) -> None:
                spool._lock.acquire()
                self.fd = None
                try:
                    os.makedirs(os.path.dirname(spool.path) or ".", exist_ok=True)
                    self.fd = open(spool.path + ".lock", "a")
                    if fcntl is not None:
                        fcntl.flock(self.fd, fcntl.LOCK_EX)
                except BaseException:
                    if self.fd is not None:
                        self.fd.close()
                    spool._lock.release()
                    raise

            def __exit__(self, *exc: object) -> None:
                try:
                    if self.fd is not None:
                        self.fd.close()  # releases the flock
                finally:
                    spool._lock.release()

        return Locked()

    def append(self, events: list) -> None:
        lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
        with self._locked(), open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def read(self, limit: int) -> list:
        with self._locked():
            return self._read_all()[:limit]

    def _read_all(self) -> list:
        events = []
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue  # a line torn by a crash: the rest is still good
        except FileNotFoundError:
            pass
        return events

    def remove(self, ids: set) -> None:
        """Drop the events with these ids (others may have been added meanwhile)."""
        with self._locked():
            keep = [e for e in self._read_all() if e.get("id") not in ids]
            if not keep:
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                return
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in keep))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)


def event_urls(setting: str) -> list:
    """HOOKBUS_URL's addresses (comma-separated: the nodes of one bus), each ending in /events."""
    urls = []
    for base in setting.split(","):
        base = base.strip().rstrip("/")
        if base:
            urls.append(base if base.endswith("/events") else base + "/events")
    return urls or ["http://127.0.0.1:8765/events"]


class Forwarder:
    """Queue → spool → hookbus, on a background thread."""

    def __init__(self) -> None:
        self.urls = event_urls(os.environ.get("HOOKBUS_URL", ""))
        self.url = self.urls[0]  # the one that answered last: tried first
        self.token = os.environ.get("HOOKBUS_TOKEN") or None
        self.timeout = float(os.environ.get("HOOKBUS_TIMEOUT", "5"))
        self.flush_timeout = float(os.environ.get("HOOKBUS_FLUSH_TIMEOUT", "10"))
        self.spool = Spool(os.environ.get("HOOKBUS_SPOOL") or default_spool())
        self.job_id = "netcfgbu-%s-%s" % (datetime.now().strftime("%Y%m%dT%H%M%S"), uuid.uuid4().hex[:8])
        self.queue: queue.Queue = queue.Queue()
        self.count = 0
        self.stopping = threading.Event()
        self._warned: set = set()
        self._failures = 0
        # A daemon thread: netcfgbu's exit never waits for it beyond close() below.
        self.thread = threading.Thread(target=self._run, name="hookbus-forwarder", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def emit(self, type_: str, data: dict) -> None:
        """Called from netcfgbu's loop: build the event and queue it; no I/O here."""
        self.count += 1
        self.queue.put({"specversion": "1.0", "id": "%s-%d" % (self.job_id, self.count), "source": SOURCE,
                        "type": type_, "time": now(), "datacontenttype": "application/json", "data": data})

    # -- the background thread ---------------------------------------------------------

    def _take(self, wait: float) -> list:
        events: list = []
        try:
            item = self.queue.get(timeout=wait)
        except queue.Empty:
            return events
        events.append(item)
        while True:
            try:
                events.append(self.queue.get_nowait())
            except queue.Empty:
                return events

    def _run(self) -> None:
        pending = True  # a spool left by an earlier run goes first
        retry_at = 0.0
        while True:
            events = self._take(0.2)
            if events:
                self._spool(events)
                pending = True
            stopping = self.stopping.is_set()
            if pending and (stopping or time.monotonic() >= retry_at):
                if self._send_spool():
                    pending, self._failures = False, 0
                else:
                    retry_at = time.monotonic() + self._backoff()
            if stopping and self.queue.empty():
                return  # close() spools whatever arrives after this

    def _backoff(self) -> float:
        self._failures += 1
        return min(30.0, 0.5 * 2 ** min(self._failures, 6))

    def _spool(self, events: list) -> None:
        try:
            self.spool.append(events)
        except OSError as exc:
            self._warn_once("spool", "cannot write the spool %s (%s); sending without it" % (self.spool.path, exc))
            self._send(events)

    def _send_spool(self) -> bool:
        """Send what is spooled; True when the spool is empty afterwards."""
        try:
            while True:
                events = self.spool.read(BATCH)
                if not events:
                    return True
                done = self._send(events)
                if not done:
                    return False
                self.spool.remove(done)
        except OSError as exc:
            self._warn_once("spool-read", "cannot read the spool %s (%s)" % (self.spool.path, exc))
            return False

    def _send(self, events: list) -> set:
        """POST a batch; return the ids that hookbus has (accepted, or refused for good)."""
        status = self._post(events)
        if status is not None and 200 <= status < 300:
            return {e.get("id") for e in events}
        if status in REFUSED_FOR_GOOD:
            if len(events) == 1:
                self._warn_once("refused-%s" % events[0].get("id"),
                                "hookbus refused event %s (%s, HTTP %s); dropped"
                                % (events[0].get("id"), events[0].get("type"), status))
                return {events[0].get("id")}
            done: set = set()  # find the one it will not take; keep the rest
            for event in events:
                one = self._send([event])
                if not one:
                    return done
                done |= one
            return done
        return set()

    def _post(self, events: list):  # type: ignore[no-untyped-def]
        """POST to the node that answered last; when it is down or answers 5xx, to the next one in
        turn (another node of the same bus stores the batch as well)."""
        start = self.urls.index(self.url)
        status = None
        for i in range(len(self.urls)):
            self.url = self.urls[(start + i) % len(self.urls)]
            status = self._post_to(events)
            if status is not None and status < 500:
                return status
        return status

    def _post_to(self, events: list):  # type: ignore[no-untyped-def]
        body = json.dumps(events, separators=(",", ":")).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/cloudevents-batch+json",
                                                  "User-Agent": "hookbus-netcfgbu-plugin"})
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                self._warn_once("401", "hookbus answered 401: set HOOKBUS_TOKEN to one of its http.tokens; "
                                       "events stay in %s" % self.spool.path)
            return exc.code
        except (OSError, ValueError) as exc:
            self._warn_once("down", "hookbus at %s cannot be reached (%s); events are kept in %s and sent later"
                            % (self.url.split("//")[-1].split("/")[0].split("@")[-1], getattr(exc, "reason", exc),
                               self.spool.path))
            return None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(message)

    # -- exit ------------------------------------------------------------------------------

    def close(self) -> None:
        """At netcfgbu's exit: let the thread send what is left, within HOOKBUS_FLUSH_TIMEOUT;
        whatever it could not send is in the spool for next time."""
        self.stopping.set()
        self.thread.join(self.flush_timeout)
        left = []
        while True:
            try:
                left.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if left:
            try:
                self.spool.append(left)
            except OSError as exc:
                warn("%d event(s) lost: cannot write the spool %s (%s)" % (len(left), self.spool.path, exc))


_forwarder = None
_forwarder_lock = threading.Lock()


def forwarder() -> Forwarder:
    """The one forwarder of this netcfgbu run (made when netcfgbu loads this file)."""
    global _forwarder
    if _forwarder is None:
        with _forwarder_lock:
            if _forwarder is None:
                _forwarder = Forwarder()
    return _forwarder


def _safely(fn):  # type: ignore[no-untyped-def]
    """A plugin must never break netcfgbu's run: report and go on."""

    def call(*args):  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except Exception as exc:
            warn("%s failed: %s: %s" % (fn.__name__, type(exc).__name__, exc))

    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    return staticmethod(call)


class Hookbus(Plugin):  # type: ignore[misc,valid-type]
    """Forwards every netcfgbu hook to hookbus (netcfgbu calls these on the class)."""

    name = "hookbus"

    @_safely
    def backup_success(rec, res):
        ok = res is True
        fwd = forwarder()
        fwd.emit("backup.device.succeeded" if ok else "backup.device.failed", device_data(fwd.job_id, rec, res, ok))

    @_safely
    def backup_failed(rec, exc):
        fwd = forwarder()
        fwd.emit("backup.device.failed", device_data(fwd.job_id, rec, exc, False))

    @_safely
    def report(report):
        fwd = forwarder()
        fwd.emit("backup.report", report_data(fwd.job_id, report))

    @_safely
    def git_report(success, tag_name):
        fwd = forwarder()
        fwd.emit("backup.vcs.saved", {"job_id": fwd.job_id, "success": bool(success), "tag_name": tag_name})


if Plugin is not object:
    # Loaded by netcfgbu: start now, not in the first hook call (starting a thread is
    # the slow part), and send what an earlier run left in the spool.
    try:
        forwarder()
    except Exception as exc:
        warn("not started: %s: %s" % (type(exc).__name__, exc))
