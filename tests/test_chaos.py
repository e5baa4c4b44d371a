"""The fault scenarios of `python -m bench.chaos`, in their short form: real
processes, SIGKILLs, a target that is down, throttling or stalled, a full disk,
skewed clocks. Whatever happens, nothing accepted is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_chaos_short_loses_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.chaos", "--short", "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"broker-kill", "subscriber-crash-loop", "target-down", "target-429", "stalled-target",
                         "disk-full", "clock-skew"}
    for name, row in rows.items():
        if row["note"].startswith("skipped"):
            assert os.geteuid() != 0, f"{name} was skipped although this runs as root: {row['note']}"
            continue
        assert row["lost"] == 0, row
        assert row["delivered"] == row["accepted"] > 0, row
    assert rows["broker-kill"]["accepted"] == rows["broker-kill"]["sent"]
    assert rows["broker-kill"]["duplicates"] == 0  # the jsonl file never holds a seq twice
    assert (rows["clock-skew"]["accepted"], rows["clock-skew"]["refused"]) == (50, 50)
    assert all(reason.startswith("401 webhook-timestamp") for reason in rows["clock-skew"]["refusals"])
    assert "at most 5 in any 2 s" in rows["target-429"]["note"], rows["target-429"]  # Retry-After honoured per lane
    if not rows["disk-full"]["note"].startswith("skipped"):
        assert rows["disk-full"]["refused"] > 0  # the full disk was really hit, and answered 503
