"""netcfgbu over HTTP: `POST /ingest/netcfgbu` with one plugin hook call as JSON.

hookbus's own plugin for netcfgbu (adapters/netcfgbu_plugin.py) posts finished
CloudEvents to `/events`. This endpoint is for a plugin of one's own that would
rather send netcfgbu's words and let hookbus map them, with the same mapping
(credentials are dropped from the record here too):

    {"hook": "backup_success", "job_id": "run-1", "record": {"host": "sw1", "os_name": "eos", …}, "result": true}
    {"hook": "backup_failed",  "job_id": "run-1", "record": {…}, "result": "TIMEOUT"}
    {"hook": "report", "job_id": "run-1", "start": "…", "stop": "…", "duration_s": 7.8,
     "ok": [{…record…}], "failed": [{"record": {…}, "error": "TIMEOUT"}]}
    {"hook": "git_report", "job_id": "run-1", "success": true, "tag_name": "20260121_033800"}
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hookbus.adapters import netcfgbu_plugin as mapping
from hookbus.adapters.common import count, json_object, timestamp
from hookbus.adapters.common import field as get
from hookbus.bus.events.event import Event, EventError, new_id
from hookbus.bus.events.times import now_rfc3339

HOOKS = ("backup_success", "backup_failed", "report", "git_report")


def report_data(obj: dict[str, Any], job_id: str) -> dict[str, Any]:
    ok = get(obj, "ok", list, default=[])
    failed = get(obj, "failed", list, default=[])
    for i, rec in enumerate(ok):
        if not isinstance(rec, dict):
            raise EventError(f"ok[{i}]", "must be an inventory record (an object)")
    failures = []
    for i, item in enumerate(failed):
        if not isinstance(item, dict):
            raise EventError(f"failed[{i}]", "must be an object with record and error")
        rec = get(item, "record", dict, where=f"failed[{i}]", required=True)
        error = get(item, "error", str, where=f"failed[{i}]") or "backup failed"
        failures.append({"host": rec.get("host"), "os_name": rec.get("os_name"), "error": error})
    duration = get(obj, "duration_s", float)
    total = count(obj, "total")
    return {"job_id": job_id, "total": total if total is not None else len(ok) + len(failed), "ok": len(ok),
            "fail": len(failed), "start": timestamp(obj, "start"), "stop": timestamp(obj, "stop"),
            "duration_s": duration, "failures": failures}


def events(obj: dict[str, Any], source: str) -> list[Event]:
    hook = get(obj, "hook", str, required=True)
    if hook not in HOOKS:
        raise EventError("hook", f"must be one of {', '.join(HOOKS)}, not {hook[:40]!r}")
    job_id = get(obj, "job_id", str, required=True)
    if hook in ("backup_success", "backup_failed"):
        record = get(obj, "record", dict, required=True)
        if not isinstance(record.get("host"), str):
            raise EventError("record.host", "required: the device's host name")
        result = obj.get("result")
        ok = hook == "backup_success" and result is True  # netcfgbu: a result that is not True is a failure
        type_ = "backup.device.succeeded" if ok else "backup.device.failed"
        data = mapping.device_data(job_id, record, result if result is not None else False, ok)
    elif hook == "report":
        type_, data = "backup.report", report_data(obj, job_id)
    else:
        type_ = "backup.vcs.saved"
        data = {"job_id": job_id, "success": get(obj, "success", bool, required=True),
                "tag_name": get(obj, "tag_name", str)}
    return [Event(id=new_id(), source=source, type=type_, time=now_rfc3339(), data=data)]


async def ingest(request: web.Request) -> list[Event]:
    return events(json_object(await request.read()), f"netcfgbu://{request.remote or 'unknown'}")
