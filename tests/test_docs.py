"""The manual: it builds with `mkdocs build --strict`, and what a user copies from it works.

The rule for fenced blocks in README.md and docs/**/*.md (docs/contributing.md says the same):
- every ```toml block is a whole hookbus configuration that `hookbus check-config` accepts
  (run from the repository's root, with a placeholder value for each `env:NAME` it reads);
- a ```toml block with `<!-- fragment -->` on the line above it is part of a configuration,
  another tool's file, or a configuration that needs what its page sets up first: it must
  parse as TOML;
- a ```sh block with `<!-- runnable -->` on the line above it runs with `bash -e` in a temp
  folder, against a `hookbus serve` started there on free ports with the page's first whole
  toml block as its configuration (`HOOKBUS_CONFIG` names it; `127.0.0.1:8765` in the block
  becomes its address). A page's runnable blocks run in order; each must exit 0 within 20 s,
  and is run again until it does (so a block may wait for what the one before it started).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hookbus import cli

from .conftest import Proc, free_port, http_ready, wait_for

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<marker><!-- (?P<mark>[a-z]+) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
MARKS = {"fragment", "runnable"}
# Placeholders for the `env:` values the examples read: each must be valid where it is used.
ENV = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/placeholder1",
       "NTFY_URL": "ntfys://ntfy.sh/my-backups", "TELEGRAM_URL": "tgram://123456789:abcdefghij/42",
       "ALERT_APPRISE_URL": "json://localhost/alerts", "HC_PING_URL": "https://hc-ping.com/5f0a1c2e-9a7b-4c3d-8e1f-123456789abc",
       "OPS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
       "HOOKBUS_STORE": "postgresql://hookbus@db1/hookbus"}
PLACEHOLDER = "https://example.com/hookbus-docs-placeholder"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    mark: str | None
    body: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("lang")) + 1
        found.append(Block(page, line, match["lang"], match["mark"], match["body"]))
    return found


ALL = [block for page in PAGES for block in blocks(page)]
TOML = [b for b in ALL if b.lang == "toml"]
RUNNABLE_PAGES = sorted({b.page for b in ALL if b.mark == "runnable"})


def test_markers_are_known_and_sit_on_the_blocks_they_mean() -> None:
    assert len(TOML) >= 30 and RUNNABLE_PAGES
    for block in ALL:
        assert block.mark in MARKS | {None}, f"{block}: unknown marker {block.mark!r}"
        assert block.mark != "fragment" or block.lang == "toml", f"{block}: fragments are toml blocks"
        assert block.mark != "runnable" or block.lang == "sh", f"{block}: only sh blocks run"
    for page in PAGES:  # a fence with text after it swallows what follows, up to the next fence
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert not line.startswith("```") or re.fullmatch(r"```[a-z]*", line.rstrip()), f"{page}:{number}: {line}"


# -- mkdocs --------------------------------------------------------------------------------------

def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_the_manual_builds_in_strict_mode(tmp_path: Path) -> None:
    built = mkdocs_build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    for page in ("index.html", "borgitory/index.html", "subscribers/own-kind/index.html", "repo/bench/RESULTS/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # A link out of docs/ into the repository is pointed at the site's copy of that file.
    operations = (tmp_path / "site" / "operations" / "index.html").read_text()
    assert 'href="../repo/config/systemd/hookbus-run%40.timer"' in operations


def test_the_readmes_links_reach_files_and_every_tool_and_kind_has_its_page() -> None:
    """mkdocs checks the manual's links; the README, read on the repository's own file view, is checked here."""
    readme = (ROOT / "README.md").read_text()
    for url in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", readme):
        if "://" not in url:
            assert (ROOT / url).exists(), f"README.md links to {url}, which does not exist"
    for page in ("borgmatic", "restic", "backrest", "borgitory", "netcfgbu", "runitor", "configuration", "operations",
                 "security", "performance", "checks", "jobs", "http-api", "page", "subscribers/own-kind"):
        assert f"](docs/{page}.md)" in readme, page
    kinds = [p.stem for p in (ROOT / "subscribers").glob("*.py") if not p.stem.startswith("_")]
    assert len(kinds) >= 9
    for kind in kinds:
        assert f"](docs/subscribers/{kind}.md)" in readme, kind


@pytest.mark.parametrize("breakage", ["link", "anchor", "repository file", "nav page"])
def test_a_broken_link_or_a_missing_page_fails_the_build(tmp_path: Path, breakage: str) -> None:
    """The strict build is the check: each kind of breakage, put into a copy of the manual, fails it."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    for entry in ROOT.iterdir():  # the rest of the repository, which the manual links into, as it is
        if entry.name not in ("docs", "mkdocs.yml", ".git", ".venv"):
            (copy / entry.name).symlink_to(entry)
    good = mkdocs_build(copy, tmp_path / "good")
    assert good.returncode == 0, good.stdout + good.stderr
    page = copy / "docs" / "operations.md"
    if breakage == "nav page":
        config = copy / "mkdocs.yml"
        config.write_text(config.read_text().replace("operations.md", "operation.md"))
    else:
        link = {"link": "[x](no-such-page.md)", "anchor": "[x](checks.md#no-such-section)",
                "repository file": "[x](../config/systemd/no-such.service)"}[breakage]
        page.write_text(page.read_text() + f"\n{link}\n")
    broken = mkdocs_build(copy, tmp_path / "broken")
    assert broken.returncode != 0 and "Aborted" in broken.stdout + broken.stderr


# -- toml blocks -----------------------------------------------------------------------------------

@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The command line in this process, without its logging set-up (it would replace pytest's handlers)."""
    monkeypatch.setattr(cli, "setup_logging", lambda level: None)
    return cli.main


@pytest.mark.parametrize("block", TOML, ids=str)
def test_every_toml_block_is_a_config_check_config_accepts(block: Block, tmp_path: Path, main: Any,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    parsed = tomllib.loads(block.body)  # a fragment only has to be TOML
    if block.mark == "fragment":
        assert parsed, f"{block}: an empty fragment"
        return
    for name in re.findall(r"env:([A-Z_][A-Z0-9_]*)", block.body):
        monkeypatch.setenv(name, ENV.get(name, PLACEHOLDER))
    config = tmp_path / "hookbus.toml"
    config.write_text(block.body)
    monkeypatch.chdir(ROOT)  # paths in the examples are the repository's (config/ansible/…)
    try:
        code = main(["check-config", "--config", str(config)])
    except SystemExit as exit_:
        code = exit_.code
    assert code in (0, None), f"{block}: {capsys.readouterr().err}"


# -- runnable sh blocks ----------------------------------------------------------------------------

def first_config(page: Path) -> str:
    return next((b.body for b in blocks(page) if b.lang == "toml" and b.mark is None), "")


def run_until_it_passes(script: str, cwd: Path, env: dict[str, str], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} exited {done.returncode}:\n{script}\n{done.stdout}{done.stderr}")
        time.sleep(0.2)


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
async def test_every_runnable_sh_block_runs(page: Path, tmp_path: Path) -> None:
    config = first_config(page)
    assert not re.search(r"^\[(bus|http)\]", config, re.M), f"{page}: the test sets [bus] and [http] itself"
    http_port = free_port()
    (tmp_path / "hookbus.toml").write_text(
        f'[bus]\ncontrol = "tcp://127.0.0.1:{free_port()}"\npublish = "tcp://127.0.0.1:{free_port()}"\nheartbeat = 0.5\n\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n\n{config}')
    bindir = str(Path(sys.executable).parent)  # this environment's `hookbus`
    env = {**os.environ, "HOOKBUS_CONFIG": str(tmp_path / "hookbus.toml"), "PATH": f"{bindir}:{os.environ['PATH']}"}
    serve = Proc(["serve"], tmp_path / "serve.log", tmp_path).start()
    try:
        await wait_for(lambda: http_ready(f"http://127.0.0.1:{http_port}"), 20, "hookbus serve to listen")
        for block in (b for b in blocks(page) if b.mark == "runnable"):
            script = block.body.replace("127.0.0.1:8765", f"127.0.0.1:{http_port}")
            run_until_it_passes(script, tmp_path, env, str(block))
    finally:
        serve.stop()
    assert "Traceback" not in serve.output(), serve.output()
