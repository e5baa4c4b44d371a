"""The open-file limit of long-running commands, and what it allows the HTTP server.

Every HTTP connection, ZeroMQ peer, journal and spool file is a descriptor; the
common soft limit of 1024 is gone after a thousand idle connections.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("hookbus")

MAX_CONNECTIONS = 4096  # memory stays bounded too: each connection has its buffers
FD_RESERVE = 256  # descriptors kept for the journal, spool, ZeroMQ, subscribers' own connections
MAX_BACKLOG = 1024


def http_sizes() -> tuple[int, int]:
    """Return (connection limit, listen backlog) for the HTTP server under the
    soft open-file limit in force. asyncio accepts up to `backlog` connections
    before the protocol factory can close any: the limit leaves room for that
    burst and for FD_RESERVE."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS, MAX_BACKLOG
    backlog = max(16, min(MAX_BACKLOG, soft // 8))
    return max(16, min(MAX_CONNECTIONS, soft - backlog - FD_RESERVE)), backlog


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (long-running commands call
    this first); return the soft limit now in force. Log when it is still so low
    that it bounds the HTTP connections below MAX_CONNECTIONS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft == resource.RLIM_INFINITY:
        return target
    limit, _ = http_sizes()
    if limit < MAX_CONNECTIONS:
        log.warning("open-file limit is %d (hard limit %s): at most %d HTTP connections at a time; raise it "
                    "(systemd: LimitNOFILE=65536)", soft, "unlimited" if hard == resource.RLIM_INFINITY else hard, limit)
    return soft
