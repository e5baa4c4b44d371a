"""The README's two commands are what a new user runs; CI must run the same."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_readme_opens_with_the_run_and_the_test_command() -> None:
    run, test = readme_commands()[:2]
    assert run.endswith("hookbus serve") and "pip install ." in run
    assert "pip install -e '.[test]'" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
