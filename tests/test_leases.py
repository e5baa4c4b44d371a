"""Claims (bus/store/leases.py) on a real journal: one holder at a time, a holder
cut off from the store stops before anyone else can take over, a clean stop
hands over at once, a node restarted on the same host takes its claims back."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from hookbus.bus.events.host import host_name
from hookbus.bus.store.journal import Journal
from hookbus.bus.store.leases import SHARE, STOP, Lease

from .conftest import wait_for

LEASE = 1.0


class CutOff:
    """A node's view of the store that stops answering claims when `cut` is set (a partition)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.cut = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)

    async def claim(self, name: str, holder: str, node: str, ttl: float) -> bool:
        if self.cut.is_set():
            await asyncio.Event().wait()  # no answer, ever
        return await self.journal.claim(name, holder, node, ttl)


def work_log(log: list[tuple[str, str, float]], node: str) -> Any:
    async def work() -> None:
        log.append((node, "start", time.monotonic()))
        try:
            await asyncio.Event().wait()
        finally:
            log.append((node, "stop", time.monotonic()))
    return work


async def test_a_holder_cut_off_from_the_store_stops_before_another_node_takes_over(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        a_store = CutOff(journal)
        log: list[tuple[str, str, float]] = []
        lost: list[float] = []
        a = Lease(a_store, "subscriber:audit", "a", LEASE)  # type: ignore[arg-type]
        b = Lease(journal, "subscriber:audit", "b", LEASE)
        ta = asyncio.create_task(a.hold(work_log(log, "a"), limit=lambda s: lost.append(time.monotonic())))
        await wait_for(lambda: a.held, 5, "a to hold the claim")
        tb = asyncio.create_task(b.hold(work_log(log, "b")))
        await asyncio.sleep(3 * LEASE)
        assert [e[:2] for e in log] == [("a", "start")] and not b.held  # b waits while a renews
        cut_at = time.monotonic()
        a_store.cut.set()
        await wait_for(lambda: len(log) == 3, 5 * LEASE, "a to stop and b to start")
        _, (n2, e2, a_stopped), (n3, e3, b_started) = log
        assert (n2, e2, n3, e3) == ("a", "stop", "b", "start")
        assert lost and a_stopped - cut_at <= STOP * LEASE + 0.1  # a stopped on its own, without an answer …
        assert b_started - a_stopped >= (SHARE - STOP) * LEASE - 0.15  # … well before b could take the claim
        assert b_started - cut_at <= LEASE  # and b took over within the lease
        for task in (ta, tb):
            task.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
    finally:
        journal.close()


async def test_a_clean_stop_hands_over_at_once_and_a_restart_takes_back_its_dead_process_claims(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        log: list[tuple[str, str, float]] = []
        a = Lease(journal, "checks", "a", 10.0)
        b = Lease(journal, "checks", "b", 10.0)
        ta = asyncio.create_task(a.hold(work_log(log, "a")))
        await wait_for(lambda: a.held, 5, "a to hold the claim")
        tb = asyncio.create_task(b.hold(work_log(log, "b")))
        await asyncio.sleep(0.5)
        stopped = time.monotonic()
        ta.cancel()  # SIGTERM: the claim is given back
        await asyncio.gather(ta, return_exceptions=True)
        await wait_for(lambda: b.held, 5, "b to take over")
        assert time.monotonic() - stopped <= 2.0  # a tenth of the lease, not the lease
        # b's process dies (its claim is left, held by a pid that no longer exists on this host) …
        tb.cancel()
        await asyncio.gather(tb, return_exceptions=True)
        assert await journal.claim("checks", f"{host_name()} pid 999999999 (dead)", "b", 10.0)
        restarted = Lease(journal, "checks", "b", 10.0)
        tr = asyncio.create_task(restarted.hold(work_log(log, "b again")))
        # … and b, restarted on the same host, takes it back without waiting for it to run out.
        await wait_for(lambda: restarted.held, 3, "the restarted b to take its claim back")
        tr.cancel()
        await asyncio.gather(tr, return_exceptions=True)
        # In a container the restarted process has the dead one's pid (1): still its own claim to take back.
        assert await journal.claim("checks", f"{host_name()} pid {os.getpid()} (before the restart)", "b", 10.0)
        again = Lease(journal, "checks", "b", 10.0)
        ta2 = asyncio.create_task(again.hold(work_log(log, "b in a container")))
        await wait_for(lambda: again.held, 3, "b, same pid, to take its claim back")
        ta2.cancel()
        await asyncio.gather(ta2, return_exceptions=True)
    finally:
        journal.close()


async def test_a_stop_drains_no_longer_than_the_claim_lasts(tmp_path: Path) -> None:
    """Stopped (SIGTERM) just after a renewal, a holder's deliveries in progress may finish only
    while its claim lasts: the next node can take over when it runs out."""
    journal = Journal(tmp_path / "journal.db")
    try:
        grace = [5.0]  # as a subscriber runner's drain on a stop
        ended: list[float] = []

        async def work() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(grace[0])  # deliveries in progress, finishing
                ended.append(time.monotonic())
                raise

        lease = Lease(journal, "subscriber:audit", "a", LEASE)
        holding = asyncio.create_task(lease.hold(work, limit=lambda s: grace.__setitem__(0, min(grace[0], s))))
        await wait_for(lambda: lease.held, 5, "the claim held")
        stopped = time.monotonic()
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        assert ended and ended[0] - stopped <= LEASE * STOP + 0.05, ended[0] - stopped
    finally:
        journal.close()
