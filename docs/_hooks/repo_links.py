"""mkdocs hook: links from the manual to files of the repository outside docs/.

A page links to such a file by its path in the repository (`../bench/RESULTS.md`,
`../config/systemd/hookbus-run@.timer`), so the link also works where the Markdown
is read as it is (a repository browser). The built site gets a copy of each such
file under `repo/` and the link is pointed at it; a link to a file that does not
exist is a warning, which fails `mkdocs build --strict` like any broken link.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.repo_links")
LINK = re.compile(r"\]\((?P<url>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
PREFIX = "repo"


def _outside(src_uri: str, url: str) -> str | None:
    """The repository path a page's relative link points to, when it leaves docs/; else None."""
    if "://" in url or url.startswith(("/", "mailto:")):
        return None
    target = posixpath.normpath(posixpath.join("docs", posixpath.dirname(src_uri), url))
    return None if target.startswith(("docs/", "../")) or target == "docs" else target


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    root = Path(config.docs_dir).parent
    for page in list(files.documentation_pages()):
        for match in LINK.finditer(Path(page.abs_src_path or "").read_text(encoding="utf-8")):
            target = _outside(page.src_uri, match["url"])
            if target is None:
                continue
            if not (root / target).is_file():
                log.warning("Doc file '%s' links to '%s', which is not a file of the repository", page.src_uri, target)
            elif files.get_file_from_path(f"{PREFIX}/{target}") is None:
                files.append(File.generated(config, f"{PREFIX}/{target}", abs_src_path=str(root / target)))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    def point(match: re.Match[str]) -> str:
        target = _outside(page.file.src_uri, match["url"])
        if target is None:
            return match[0]
        url = posixpath.relpath(f"{PREFIX}/{target}", posixpath.dirname(page.file.src_uri) or ".")
        return f"]({url}{match['anchor'] or ''})"

    return LINK.sub(point, markdown)
