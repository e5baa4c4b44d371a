"""The delivery trail as the API and the page show it: per event, per
subscriber, each attempt with its time, outcome, the receiver's status and a
short, scrubbed reason (bus/store/trail.py keeps it; runners report it).

`trail_for(journal, seqs)` is the one shaping of it: `GET
/api/events/{seq}/deliveries`, the `events` of `GET /api/jobs/{job_id}` and
the job's page all use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from hookbus.bus.http.answers import BadRequest, ok
from hookbus.bus.http.keys import BROKER
from hookbus.bus.store.base import Delivery, Store

MAX_SEQS = 5000  # events per trail_for call; a job's are far fewer


async def trail_for(journal: Store, seqs: Iterable[int], subscriber: str | None = None) -> dict[int, list[dict[str, Any]]]:
    """The trail of each of those events (of one subscriber, if given), from a thread.

    Returns {seq: [{"subscriber": name, "outcome": the last attempt's outcome,
    "attempts": [{"attempt", "at", "outcome", "status", "reason", "node"}, …]}, …]}:
    every seq asked for is a key (an empty list: nobody was told, or not yet);
    subscribers by name, attempts oldest first. `outcome` is delivered, failed
    (the last attempt failed and a retry is due), dead (dead-lettered) or silenced;
    `attempt` is 0 for silenced, `at` is epoch seconds, `status` the receiver's
    answer (an HTTP status, a command's exit status) or None.
    """
    wanted = sorted(set(seqs))[:MAX_SEQS]
    records = await asyncio.to_thread(journal.deliveries, wanted, subscriber) if wanted else []
    return shape(wanted, records)


def shape(seqs: list[int], records: list[Delivery]) -> dict[int, list[dict[str, Any]]]:
    """Records (by seq, subscriber, time) grouped per event and subscriber."""
    out: dict[int, list[dict[str, Any]]] = {seq: [] for seq in seqs}
    current: dict[str, Any] | None = None
    for r in records:
        entries = out.setdefault(r.seq, [])
        if current is None or not entries or entries[-1] is not current or current["subscriber"] != r.subscriber:
            current = {"subscriber": r.subscriber, "outcome": r.outcome, "attempts": []}
            entries.append(current)
        current["attempts"].append({"attempt": r.attempt, "at": r.at, "outcome": r.outcome, "status": r.status,
                                    "reason": r.reason, "node": r.node})
        current["outcome"] = r.outcome
    return out


def seq_param(request: web.Request) -> int:
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        raise BadRequest(400, "seq must be an integer", "seq") from None
    if not 1 <= seq <= 2**62:
        raise BadRequest(400, f"seq must be between 1 and {2**62}", "seq")
    return seq


async def get_deliveries(request: web.Request) -> web.Response:
    """GET /api/events/{seq}/deliveries[?subscriber=name]"""
    seq = seq_param(request)
    journal = request.app[BROKER].journal
    stored = await asyncio.to_thread(journal.get, seq)
    if stored is None:
        raise BadRequest(404, f"no event {seq} in the journal", "seq")
    trail = await trail_for(journal, [seq], request.query.get("subscriber"))
    return ok({"seq": seq, "type": stored.type, "deliveries": trail[seq]})
