"""This machine's name, as event sources (`hookbus://db1/jobs/nightly`), job data
(`host`) and the journal's leases give it."""

from __future__ import annotations

import socket

__all__ = ["host_name"]


def host_name() -> str:
    return socket.gethostname()
