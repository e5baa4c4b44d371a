"""Work that runs on one node at a time (DESIGN §12): a subscriber's delivery,
the checks' evaluation, retention. Each is held under a claim in the store
(`Store.claim`), taken by whichever node asks first once it is free or expired.

Never two at once: the claim is stored for SHARE of `[bus] lease`, by the
store's clock, and renewed every TICK of it. A holder that has not renewed
since a moment t0 stops its work by t0 + STOP of the lease (by its own
monotonic clock, which only measures spans), well before the claim could
expire and be taken: a node cut off from the store stops delivering on its
own. A node that dies is followed within SHARE + TICK of the lease. A node
restarted on the same host takes back at once what its dead process held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from hookbus.bus.events.host import host_name
from hookbus.bus.secrets import scrub
from hookbus.bus.store.base import Store
from hookbus.bus.store.journal import holder_host_pid, pid_alive, runner_name

log = logging.getLogger("hookbus.leases")

SHARE = 0.7  # the claim's life, of [bus] lease
TICK = 0.1  # renewing, and asking for a free claim, this often
STOP = 0.5  # a holder that could not renew stops this long after its last renewal began
RESTART_S = (0.5, 30.0)  # work that failed starts again after 0.5 s, doubling to 30 s while it keeps failing
RAN_S = 30.0  # work that ran this long before failing starts again at once


class Lease:
    """One named claim of this node, and the work it guards."""

    def __init__(self, store: Store, name: str, node: str, lease: float, holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.node = node
        self.lease = lease
        self.holder = holder or runner_name()
        self.held = False

    async def hold(self, work: Callable[[], Coroutine[Any, Any, None]], *,
                   limit: Callable[[float], None] | None = None,
                   idle: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run `work` while the claim is held, until cancelled; start it again when it ends
        while held. Before work is cancelled, `limit(s)` says how long it may still take to
        stop: 0 when the claim could not be renewed, else what is left of the claim (a stop
        must not outlive it: another node may take over then). `idle` runs every tick while
        another holds it."""
        loop = asyncio.get_running_loop()
        task: asyncio.Task[None] | None = None
        valid_until = 0.0
        restart_at = started = 0.0
        failures = 0
        await self._take_back()
        try:
            while True:
                began = loop.time()
                if await self._claim(valid_until - began if task is not None else self.lease * TICK * 2):
                    valid_until = began + self.lease * STOP
                    if not self.held:
                        log.info("node %s runs %s", self.node, self.name)
                    self.held = True
                    if task is not None and task.done():
                        failures = 0 if loop.time() - started >= RAN_S else failures + 1
                        delay = min(RESTART_S[1], RESTART_S[0] * 2 ** failures)
                        if not task.cancelled() and task.exception() is not None:
                            log.error("%s stopped on node %s: %s; again in %g s", self.name, self.node,
                                      scrub(str(task.exception())), delay)
                        restart_at = loop.time() + delay
                        task = None
                    if task is None and restart_at <= loop.time() < valid_until:  # a late answer starts nothing
                        task, started = asyncio.create_task(work(), name=self.name), loop.time()
                else:
                    self.held = task is not None and loop.time() < valid_until
                    if task is None and idle is not None:
                        await idle()
                wake_at = began + self.lease * TICK  # the next renewal or request, or the claim's last moment
                await asyncio.sleep(max(0.0, (min(wake_at, valid_until) if task is not None else wake_at) - loop.time()))
                if task is not None and loop.time() >= valid_until:
                    log.warning("node %s stops %s: its claim could not be renewed in time", self.node, self.name)
                    if limit is not None:
                        limit(0.0)
                    await _cancel(task)
                    task, self.held = None, False
        finally:
            if task is not None:
                if limit is not None:
                    limit(max(0.0, valid_until - loop.time()))
                await _cancel(task)
            if self.held:
                self.held = False
                with contextlib.suppress(Exception):  # the claim then expires by itself
                    async with asyncio.timeout(2.0):
                        await self.store.release(self.name, self.holder)

    async def _claim(self, patience: float) -> bool:
        """Take or renew the claim; False when another holds it, or the store did not answer in time."""
        try:
            async with asyncio.timeout(max(0.05, patience)):
                return await self.store.claim(self.name, self.holder, self.node, self.lease * SHARE)
        except TimeoutError:
            log.warning("node %s: the store did not answer the claim of %s in time", self.node, self.name)
        except Exception as exc:  # the store down or failing over: not held, try again next tick
            log.warning("node %s: cannot claim %s: %s", self.node, self.name, exc)
        return False

    async def _take_back(self) -> None:
        """A claim of this node held by a process of this host that is gone (this node killed
        and restarted) is released: there is no one to wait for."""
        try:
            claims = await asyncio.to_thread(self.store.claims)
        except Exception:
            return
        for claim in claims:
            if claim.name == self.name and claim.node == self.node and claim.holder != self.holder:
                host, pid = holder_host_pid(claim.holder)
                # (its pid may be ours now: in a container, hookbus is pid 1 after every restart)
                if host == host_name() and (pid == os.getpid() or not pid_alive(pid)):
                    with contextlib.suppress(Exception):
                        await self.store.release(self.name, claim.holder)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def beat(store: Store, node: str, holder: str, lease: float) -> None:
    """Say every tick that this node is alive (`hookbus status` lists the nodes)."""
    started_at = time.time()
    while True:
        try:
            async with asyncio.timeout(lease * SHARE):
                await store.beat(node, holder, started_at)
        except Exception as exc:
            log.warning("node %s: heartbeat not stored: %s", node, exc)
        await asyncio.sleep(lease * TICK)
