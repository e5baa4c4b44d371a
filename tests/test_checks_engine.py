"""The checks' engine against a real journal, with a clock of the test's own:
the announcement of a change is published once even when hookbus dies between
publishing it and saving the checks' state (the window a kill -9 rarely hits)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hookbus.bus.checks.engine import CheckEngine, Publish, report_as_run
from hookbus.bus.events.event import Event, new_event
from hookbus.bus.settings import Check
from hookbus.bus.store.base import Accepted, JournalError
from hookbus.bus.store.journal import Journal


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def publisher(journal: Journal) -> Publish:
    async def publish(events: list[Event]) -> list[Accepted]:
        return await journal.append([(e, e.to_json()) for e in events])
    return publish


def downs(journal: Journal) -> list[str]:
    stored, _ = journal.read(0, 1000, lambda t: t == "backup.check.down")
    return [orjson.loads(s.body)["id"] for s in stored]


async def test_a_death_between_publishing_and_saving_publishes_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        check = Check(job="nightly", period=60, grace=10)
        run = new_event("backup.job.finished", {"job_id": "j-1", "job": "nightly", "outcome": "success"},
                        source="test://tool")
        await journal.append([(run, run.to_json())])
        (stored,), _ = journal.read(0, 10)
        clock = Clock(stored.at + 100)  # past due (60 s) and grace (10 s)

        first = CheckEngine([check], journal, publisher(journal), clock)
        await first.load()

        async def die(*_: object) -> None:
            raise JournalError("killed before the state was saved")

        first.store = _Failing(journal, die)  # type: ignore[assignment]
        with pytest.raises(JournalError):
            await first.step()
        assert len(downs(journal)) == 1  # published, state not saved

        second = CheckEngine([check], journal, publisher(journal), clock)  # the restart
        await second.load()
        await second.step()
        clock.now += 1000
        await second.step()
        assert len(downs(journal)) == 1
        assert second.describe("nightly")["status"] == "down"
    finally:
        journal.close()


class _Failing:
    """The journal, except that saving the checks fails."""

    def __init__(self, journal: Journal, save: object) -> None:
        self._journal = journal
        self.save_checks = save

    def __getattr__(self, name: str) -> object:
        return getattr(self._journal, name)


async def test_a_run_far_from_the_jobs_median_is_an_anomaly_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        durations = [3600, 3500, 3700, 3650, 3550, 4]  # the sixth "succeeded" in four seconds
        for n, duration in enumerate(durations):
            run = new_event("backup.job.finished", {"job_id": f"j-{n}", "job": "dump", "outcome": "success",
                                                    "duration_s": duration, "stats": {"data_added": 10**9}},
                            source="test://tool")
            await journal.append([(run, run.to_json())])
        engine = CheckEngine([], journal, publisher(journal), Clock(0))
        await engine.load()
        await engine.step()
        again = CheckEngine([], journal, publisher(journal), Clock(0))  # evaluated again from the saved seq
        await again.load()
        await again.step()
        stored, _ = journal.read(0, 1000, lambda t: t == "backup.job.anomaly")
        (anomaly,) = [orjson.loads(s.body) for s in stored]
        assert anomaly["id"] == "j-5/anomaly/duration_s"
        assert anomaly["data"] == {"job_id": "j-5", "job": "dump", "repository": None, "metric": "duration_s",
                                   "value": 4.0, "median": 3600.0, "runs": 5}
    finally:
        journal.close()


def test_a_netcfgbu_report_reads_as_a_run_of_its_job() -> None:
    assert report_as_run({"ok": 12, "fail": 0}) == {"ok": 12, "fail": 0, "job": "netcfgbu", "outcome": "success",
                                                        "error": None}
    assert report_as_run({"ok": 10, "fail": 2, "job": "core-switches"})["outcome"] == "warning"
    assert report_as_run({"ok": 10, "fail": 2})["error"] == "2 of 12 device(s) not backed up"
    assert report_as_run({"ok": 0, "fail": 3})["outcome"] == "failed"
    assert report_as_run({"ok": 0, "fail": 0})["outcome"] == "failed"  # nothing was backed up
    assert report_as_run({"ok": 10, "fail": 2, "job": "core-switches"})["job"] == "core-switches"
