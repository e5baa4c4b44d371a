"""Frames spoken between the broker's ROUTER and its DEALER clients.

A request is `[command, request_id, *args]`; the reply is
`[OK|ERR, request_id, json, *bodies]`. Every command is idempotent, so a
client that hears nothing can simply send it again.
"""

from __future__ import annotations

PUB = b"PUB"  # bodies… → [{"id", "seq", "duplicate"}]
FETCH = b"FETCH"  # {"after", "limit", "events"} → {"seqs", "scanned_to", "head"}, bodies…
HELLO = b"HELLO"  # {"name"} → {"cursor", "epoch", "head", "retries"}
ACK = b"ACK"  # {"name", "cursor", "epoch"} → {"ok"}
RETRY = b"RETRY"  # {"name", "seq", "attempts", "next_at", "error"} (attempts 0 clears)
DEAD = b"DEAD"  # {"name", "seq", "attempts", "error"} → {"dead_letter"}
PING = b"PING"  # {"name", "stats"} → {"head", "epoch", "cursor", "replays"}
REPLAYS = b"REPLAYS"  # {"name"} → {"items": [{"id", "seq", "attempts"}]}, bodies…
REPLAYED = b"REPLAYED"  # {"id", "ok", "error"}
STATUS = b"STATUS"  # {} → status
REPLAY = b"REPLAY"  # {"dead_letters", "subscriber", "ids", "from_seq"} → {"queued"}
TRAIL = b"TRAIL"  # {"name", "runner", "records": [[seq, attempt, at, outcome, status, reason]…],
#                   "delivered": [[first_seq, last_seq, at, status]…]} → {"recorded"}

OK = b"OK"
ERR = b"ERR"

HEARTBEAT_TOPIC = b"\x00hb"  # XPUB: [topic, head seq]; no event type starts with NUL


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def seq_from(frame: bytes) -> int:
    return int.from_bytes(frame, "big")


def max_frame_bytes(max_event_bytes: int) -> int:
    """The largest frame the broker's control socket takes (ZMQ_MAXMSGSIZE; a
    larger one drops the connection): an event body up to 4 × [bus]
    max_event_bytes, which the broker cuts to fit, and 1 MiB at least."""
    return max(4 * max_event_bytes, 1 << 20)
