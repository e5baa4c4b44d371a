"""The page's first byte with a long history (issue "The operator's page"): a
journal holding 10,000 jobs (a `backup.job.started` and a `backup.job.finished`
with seven tasks each) and 80,000 `backup.log` events, 100,000 events in all,
under a real `hookbus serve`; then the time to the first byte (status line and
headers received) of `/`, `/jobs`, `/jobs?page=40`, `/events` and one job's
page. The first request of `/` is cold: the job history reads the journal
once; the rest are warm (median of --rounds requests each).

    python -m bench.page [--jobs 10000] [--events 100000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hookbus.bus.events.event import new_event
from hookbus.bus.store.journal import Journal

from ._common import free_port

TASKS = [{"index": i, "name": n, "kind": k, "phase": p, "status": "completed", "message": "exit status 0",
          "exit_code": 0, "duration_s": 1.5, "output_tail": "line\n" * 20}
         for i, (n, k, p) in enumerate([("Database Dump", "hook", "pre"), ("Stop Services", "hook", "pre"),
                                        ("backup", "backup", "main"), ("prune", "prune", "main"),
                                        ("Restart Services", "hook", "post"), ("Health Check", "hook", "post"),
                                        ("notification", "notification", "post")])]


async def fill(journal: Journal, jobs: int, events: int) -> None:
    logs = events - 2 * jobs
    batch = []
    for i in range(jobs):
        job = {"job_id": f"j-{i}", "job": f"job-{i % 50}", "repository": "Repo"}
        batch.append(new_event("backup.job.started", {**job, "tasks": TASKS}, source="bench://page"))
        outcome = "failed" if i % 17 == 0 else "success"
        batch.append(new_event("backup.job.finished", {**job, "outcome": outcome, "tasks": TASKS, "duration_s": 90},
                               source="bench://page"))
        for _ in range(logs // jobs):
            batch.append(new_event("backup.log", {**job, "message": "progress " * 10}, source="bench://page"))
        if len(batch) >= 5000:
            await journal.append([(e, e.to_json()) for e in batch])
            batch = []
    if batch:
        await journal.append([(e, e.to_json()) for e in batch])


def first_byte(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    began = time.perf_counter()
    conn.request("GET", path, headers={"Accept": "text/html"})
    resp = conn.getresponse()
    took = time.perf_counter() - began
    assert resp.status == 200, (path, resp.status, resp.read()[:200])
    resp.read()
    conn.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "var").mkdir(mode=0o700)
        journal = Journal(root / "var" / "journal.db", synchronous="OFF")
        began = time.perf_counter()
        asyncio.run(fill(journal, args.jobs, args.events))
        print(f"journal: {journal.event_count():,} events in {time.perf_counter() - began:.1f} s")
        journal.close()
        port = free_port()
        config = root / "hookbus.toml"
        config.write_text(f'[bus]\ndata_dir = "{root / "var"}"\ncontrol = "tcp://127.0.0.1:{free_port()}"\n'
                          f'publish = "tcp://127.0.0.1:{free_port()}"\n\n[http]\nlisten = "127.0.0.1:{port}"\n')
        proc = subprocess.Popen([sys.executable, "-m", "hookbus.cli", "serve", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    first_byte(port, "/healthz")
                    break
                except (OSError, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            print(f"/ cold (job history read from the journal): {first_byte(port, '/') * 1000:.0f} ms")
            for path in ("/", "/jobs", "/jobs?page=40", f"/jobs/j-{args.jobs - 1}", "/events", "/events?type=backup.job.*"):
                times = [first_byte(port, path) for _ in range(args.rounds)]
                print(f"{path}: median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
