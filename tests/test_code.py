"""The code's own checks, run by the suite so that the README's test command runs them:
ruff's rules (pyproject [tool.ruff]) and mypy --strict (.ci/typecheck)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # The virtual environment's ruff and mypy first, as if it were activated.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_ruff_finds_nothing() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = run(str(ROOT / ".ci" / "typecheck"))
    assert result.returncode == 0, result.stdout + result.stderr
