"""File modes (DESIGN §13): what hookbus keeps is its user's alone, and what it
runs or trusts as a secret must not be open to every user.

- `private_umask()`: once in long-running commands and `run`, so that every
  file hookbus creates (journal, spool, jsonl, state) is 0600 and folders 0700;
- `private_dir(path)`: data_dir made 0700, and what an older version left under
  it with looser modes tightened, with one log line;
- `refuse_readable_secret` / `refuse_writable`: the check, with a message that
  names the file and says why and how to fix it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("hookbus.files")

KEYS_FOLDER = "keys"  # under data_dir: the CURVE keys hookbus sets up

PRIVATE_UMASK = 0o077


_inherited = {"umask": -1}  # the umask hookbus was started with (-1: unchanged), for the commands it runs


def private_umask() -> None:
    _inherited["umask"] = os.umask(PRIVATE_UMASK)


def inherited_umask() -> int:
    """The umask the commands hookbus runs get: the one it was started with, not its own 077
    (a backup tool's repository or a hook's report keeps the modes its user expects)."""
    return _inherited["umask"]


def private_dir(path: Path) -> None:
    """Create path (0700) if needed; tighten it and everything under it to owner-only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened: list[str] = []
    for entry in [path, *path.rglob("*")]:
        if entry.relative_to(path).parts[:1] == (KEYS_FOLDER,):
            continue  # keys found open may have been read already: the broker refuses them (bus/credentials.py)
        try:
            mode = stat.S_IMODE(entry.lstat().st_mode)
        except OSError:
            continue  # gone meanwhile
        if entry.is_symlink() or not mode & 0o077:
            continue
        entry.chmod(mode & 0o700)
        tightened.append(f"{entry} {mode:04o}")
    if tightened:
        log.warning("files: %d path(s) under %s were readable by other users; now owner-only: %s",
                    len(tightened), path, ", ".join(tightened[:10]) + (" …" if len(tightened) > 10 else ""))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def refuse_readable_secret(path: Path, key: str) -> None:
    """Raise ValueError when a secret key file can be read by users other than its owner."""
    try:
        mode = mode_of(path)
    except OSError:
        return  # reading it fails with its own message
    if mode & 0o044:
        raise ValueError(f"{key}: {path} holds a secret key and is readable by other users (mode {mode:04o}); "
                         f"refused: run chmod 600 {path}")


def refuse_writable(path: Path, what: str) -> None:
    """Raise ValueError when path can be written by every user: anyone could put code there."""
    try:
        mode = mode_of(path)
    except OSError:
        return
    if mode & 0o002:
        raise ValueError(f"{what}: {path} is writable by every user (mode {mode:04o}), so anyone could make "
                         f"hookbus run their code as its user; refused: run chmod o-w {path}")
