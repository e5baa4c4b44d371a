"""Checks benchmark: evaluating many checks (DESIGN §10; healthchecks.io runs
~80,000), with one schedule of due times for all of them.

A journal in a temp dir holds one good run for each of --checks jobs. Both
sides read those runs from the journal in batches of 1,000, in one process:

- baseline: reads the runs and notes, per job, when the next run is due (a dict
  update): the least any evaluator must do.
- hookbus: `CheckEngine` on the same journal: every check's state, its due
  time in the schedule, the states saved. Then every check falls due at once
  and goes down: one `backup.check.down` each, published to the journal.

It prints the time of each and the ratio baseline/hookbus (higher is better, 1
is the baseline's speed) for the evaluation of the runs, and the time of the
wave in which all checks go down.

    python -m bench.checks [--checks 80000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import orjson

from hookbus.bus.checks.engine import CheckEngine
from hookbus.bus.events.event import Event, new_event
from hookbus.bus.settings import Check
from hookbus.bus.store.base import Accepted
from hookbus.bus.store.journal import Journal

from ._common import add_round_options, banner, print_rounds, run_main

PERIOD, GRACE = 3600.0, 60.0


async def fill(journal: Journal, n: int) -> None:
    for start in range(0, n, 5000):
        batch = [new_event("backup.job.finished", {"job_id": f"j-{i}", "job": f"job-{i}", "outcome": "success",
                                                   "duration_s": 60}, source="bench://checks")
                 for i in range(start, min(n, start + 5000))]
        await journal.append([(e, e.to_json()) for e in batch])


def baseline(journal: Journal) -> float:
    began = time.perf_counter()
    due: dict[str, float] = {}
    after = 0
    while True:
        stored, after = journal.read(after, 1000, lambda t: t == "backup.job.finished")
        if not stored:
            break
        for item in stored:
            due[orjson.loads(item.body)["data"]["job"]] = item.at + PERIOD
    return time.perf_counter() - began


async def hookbus_side(journal: Journal, n: int) -> tuple[float, float, int]:
    checks = [Check(job=f"job-{i}", period=PERIOD, grace=GRACE) for i in range(n)]
    published: list[int] = []

    async def publish(events: list[Event]) -> list[Accepted]:
        published.append(len(events))
        return await journal.append([(e, e.to_json()) for e in events])

    clock = [time.time()]
    engine = CheckEngine(checks, journal, publish, lambda: clock[0])
    began = time.perf_counter()
    await engine.load()
    while not await engine.step():
        pass
    evaluated = time.perf_counter() - began
    clock[0] += PERIOD + GRACE + 1  # every check falls due at once
    began = time.perf_counter()
    while not await engine.step():
        pass
    wave = time.perf_counter() - began
    return evaluated, wave, sum(published)


async def one_round(n: int) -> tuple[float, float, float, int]:
    with tempfile.TemporaryDirectory(prefix="hookbus-bench-checks-") as tmp:
        journal = Journal(Path(tmp) / "journal.db")
        try:
            await fill(journal, n)
            base = baseline(journal)
            evaluated, wave, downs = await hookbus_side(journal, n)
            return base, evaluated, wave, downs
        finally:
            journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=80_000)
    add_round_options(parser, default=3)
    args = parser.parse_args()
    logging.getLogger("hookbus.checks").setLevel(logging.ERROR)  # not one line per check going down
    pairs = []
    for round_ in range(1, args.rounds + 1):
        banner(f"round {round_} of {args.rounds}: {args.checks} checks, one good run each")
        base, evaluated, wave, downs = asyncio.run(one_round(args.checks))
        print(f"baseline: {base:6.2f} s to read the runs and note each job's due time", flush=True)
        print(f" hookbus: {evaluated:6.2f} s to evaluate them ({args.checks / evaluated:,.0f} runs/s); "
              f"all falling due at once: {wave:6.2f} s for {downs} backup.check.down", flush=True)
        pairs.append((args.checks / base, args.checks / evaluated))
    print_rounds(pairs, "runs/s", "evaluating runs: hookbus CheckEngine beside reading them and noting due times",
                 goal=False)


if __name__ == "__main__":
    run_main(main)
