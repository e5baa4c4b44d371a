"""The manual's walk-through "Your own subscriber kind, in ten minutes"
(docs/subscribers/own-kind.md), followed as written: its files are taken from the page itself, pip builds and installs
the package, hookbus finds the kind by its entry point, and the message arrives
at a real local HTTP server standing in for Mattermost."""

from __future__ import annotations

import importlib.util
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hookbus.subscribers

from .conftest import Receiver, Site, http_ready, serving_receiver, wait_for
from .test_process import run_cli

PAGE = Path(__file__).parent.parent / "docs" / "subscribers" / "own-kind.md"


def walkthrough() -> str:
    text = PAGE.read_text()
    section = text.split("# Your own subscriber kind, in ten minutes", 1)[1]
    return section.split("\n## How this is tested", 1)[0]


def blocks(section: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def test_the_walkthrough_has_its_files_and_commands() -> None:
    found = blocks(walkthrough())
    named = [body.splitlines()[0] for _, body in found if body.startswith("# ")]
    assert named == ["# hookbus-mattermost/hookbus_mattermost.py", "# hookbus-mattermost/pyproject.toml", "# hookbus.toml",
                     "# subscribers/mattermost.py", "# tests/test_mattermost.py"]
    commands = [line for lang, body in found if lang == "sh" for line in body.splitlines()]
    assert "pip install ./hookbus-mattermost" in commands
    assert any(c.startswith("hookbus emit ") for c in commands)


def install_walkthrough(found: list[tuple[str, str]], tmp_path: Path) -> Path:
    """1. Write the walk-through's files exactly as the page shows them; 2. `pip install
    ./hookbus-mattermost`, into a folder of its own rather than the shared test environment
    (and with the build tools already installed, so it works offline). Return that folder."""
    for _, body in found:
        first = body.splitlines()[0]
        if first.startswith("# hookbus-mattermost/"):
            path = tmp_path / first[2:]
            path.parent.mkdir(exist_ok=True)
            path.write_text(body)
    target = tmp_path / "site-packages"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", "--target", str(target),
         "./hookbus-mattermost"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    return target


async def test_following_the_walkthrough_delivers_a_message(site: Site, procs: Any, receiver: Receiver, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    found = blocks(walkthrough())
    target = install_walkthrough(found, tmp_path)  # steps 1 and 2
    assert (target / "hookbus_mattermost-0.1.0.dist-info" / "entry_points.txt").read_text().count("mattermost = ") == 1
    monkeypatch.setenv("PYTHONPATH", str(target))  # that folder is now part of the environment hookbus runs in

    # 3. the subscriber table from the page, after this test's own [bus] and [http]
    config_block = next(body for _, body in found if body.startswith("# hookbus.toml"))
    site.configure([])
    site.config.write_text(site.config.read_text() + "\n" + config_block)

    # 4. check it, run it, send it an event (the page's emit line)
    monkeypatch.setenv("MATTERMOST_WEBHOOK_URL", receiver.url)
    check = await run_cli("check-config", "--config", str(site.config))
    assert check.returncode == 0, check.stderr
    assert "team-chat (mattermost)" in check.stdout
    serve = procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    emit_line = next(line for lang, body in found if lang == "sh" for line in body.splitlines()
                     if line.startswith("hookbus emit "))
    sent = await run_cli(*shlex.split(emit_line)[1:], "--config", str(site.config))
    assert sent.returncode == 0, sent.stderr
    await wait_for(lambda: receiver.received, 15, "the message at the Mattermost stand-in")
    assert receiver.received[0]["body"] == {"text": "nightly: backup.job.finished failed"}
    assert "secret-token-123" not in serve.output()  # the webhook URL's path is a secret


async def test_a_mistake_in_the_new_kinds_config_names_the_key(site: Site, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What the walk-through promises about errors, for a kind found by entry point."""
    monkeypatch.setenv("PYTHONPATH", str(install_walkthrough(blocks(walkthrough()), tmp_path)))
    site.configure([{"name": "team-chat", "kind": "mattermost", "url": "https://chat.example.com/hooks/k", "colour": "red"}])
    check = await run_cli("check-config", "--config", str(site.config))
    assert check.returncode == 2 and "subscribers[0] (team-chat).colour: unknown key" in check.stderr


async def test_the_in_tree_notifier_and_its_test_pass_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-tree way: `subscribers/mattermost.py` found by its file name alone, and
    `tests/test_mattermost.py` run as written, each test with a fresh receiver."""
    files = {body.splitlines()[0][2:]: body for _, body in blocks(walkthrough())
             if body.startswith(("# subscribers/", "# tests/"))}
    (tmp_path / "mattermost.py").write_text(files["subscribers/mattermost.py"])
    (tmp_path / "test_mattermost.py").write_text(files["tests/test_mattermost.py"])
    monkeypatch.setattr(hookbus.subscribers, "__path__", [*hookbus.subscribers.__path__, str(tmp_path)])
    # Loaded as a module of this folder, so its `from .conftest import …` is this suite's conftest.
    spec = importlib.util.spec_from_file_location(f"{__package__}.test_mattermost", tmp_path / "test_mattermost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        tests = [fn for name, fn in vars(module).items() if name.startswith("test_") and inspect.iscoroutinefunction(fn)]
        assert len(tests) == 2
        for test in tests:
            assert list(inspect.signature(test).parameters) == ["receiver"], test.__name__
            async with serving_receiver() as receiver:
                await test(receiver)
    finally:
        sys.modules.pop("hookbus.subscribers.mattermost", None)
