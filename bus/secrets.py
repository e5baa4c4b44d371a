"""Secrets out of events, dead letters and printed text (DESIGN §13).

One place decides what a secret looks like:

- keys named like a credential (`password`, `ssh_pass`, `authpass`, `privpass`,
  `pwd`, `token`, `api_key`, `snmp_auth`, `community`, …) are dropped, at any depth;
- `login: "user:pass"` keeps the user;
- in any text: `scheme://user:pass@host`, `Authorization: Basic/Bearer …`,
  `curl -u user:pass`, `password=…` lose the secret part;
- configured secrets (`env:`/`file:` values, tokens, webhook URLs: `remember`)
  are hidden as they are, base64-encoded (alone or inside `user:secret`), and
  as any leading part of 8 characters or more (`${TOKEN:0:12}`).

`clean_event` (bus/events) is the cheap entry for every event from any way in: one regex
over the event's JSON bytes decides whether anything needs a closer look.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from hookbus.bus.settings import ConfigError

MASK = "***"


# A key naming a credential. "pass" but not "passed"/"passes"/"passing" (validation counts).
SECRET_KEY = re.compile(
    r"pass(?!ed|es|ing)|pwd|secret|token|credential|community|cookie|private.?key|priv.?key|ssh.?key|api.?key"
    r"|auth.?key|snmp.*(?:auth|priv)|^(?:key|psk|pw|enable|auth|authorization)$",
    re.IGNORECASE,
)


_LOGIN_KEY = re.compile(r"^login$", re.IGNORECASE)


# Credentials inside free text. Each keeps what names the thing and masks the secret.
_TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"([a-z][a-z0-9+.-]*://[^\s/@:'\"]*):[^\s/@'\"]*@", re.IGNORECASE), rf"\1:{MASK}@"),
    (re.compile(r"\b(authorization|proxy-authorization)(\s*[:=]\s*)(basic|bearer|token|digest|negotiate)\s+[^\s'\"]+",
                re.IGNORECASE), rf"\1\2\3 {MASK}"),
    (re.compile(r"((?:^|\s)(?:-u|--user|--proxy-user)\s+['\"]?[^\s:'\"]+):[^\s'\"]+", re.IGNORECASE), rf"\1:{MASK}"),
    # name=value (query strings, environments, command lines), "name": "value", and password: value;
    # not "secret_key: must be …" in an error naming a key.
    (re.compile(r"\b([a-z_]*(?:password|passwd|pass(?!ed|es|ing)|pwd|secret|token|api_?key|community)[a-z_]*)"
                r"(\s*=\s*|[\"']\s*:\s*|(?<=password):\s*|(?<=passwd):\s*)"
                r"(?!\*\*\*)(\"[^\"]*\"|'[^']*'|[^\s&,;'\"]+)", re.IGNORECASE), rf"\1\2{MASK}"),
    (re.compile(r"\b(login\s*[=:]\s*['\"]?[^\s:'\"]+):[^\s'\"]+", re.IGNORECASE), rf"\1:{MASK}"),
)


# The cheap look at an event's JSON (lowered): a credential-named key, a credential
# pattern or userinfo (@) must show one of these. `in` on bytes is a C search; a regex
# alternation of the same words costs ten times as much per event.
_HINTS = (b"pass", b"pwd", b"secret", b"token", b"credential", b"communit", b"cookie", b"key", b"auth", b"login",
          b"priv", b'"psk"', b'"pw"', b'"enable"', b"-u ", b"@")


PREFIX_MIN = 8  # a leading part of a secret this long or longer is hidden too


class _Known:
    """The configured secrets and the one regex that finds any of their forms
    (rebuilt when the set changes; tests clear it between cases)."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self._built = -1  # how many secrets the regexes were built for
        self.heads: dict[str, list[str]] = {}  # first PREFIX_MIN chars → secrets starting so
        self.text: re.Pattern[str] | None = None

    def add(self, secret: str) -> None:
        if secret not in self.secrets:
            self.secrets.add(secret)
            self._built = -1

    def discard(self, secret: str) -> None:
        if secret in self.secrets:
            self.secrets.discard(secret)
            self._built = -1

    def _ensure(self) -> None:
        if self._built == len(self.secrets):
            return
        needles: set[str] = set()
        self.heads = {}
        for value in self.secrets:
            needles.update(base64_forms(value))
            if "://" in value or value.startswith("/"):  # URLs share their first characters: whole only
                needles.add(value)
                needles.update(_url_tails(value))
                continue
            needles.add(value[:PREFIX_MIN])
            self.heads.setdefault(value[:PREFIX_MIN], []).append(value)
        ordered = sorted(needles, key=len, reverse=True)
        self.text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._built = len(self.secrets)

    def hide(self, text: str) -> str:
        self._ensure()
        if self.text is None:
            return text
        parts: list[str] = []
        pos = 0
        for match in self.text.finditer(text):
            start = match.start()
            if start < pos:
                continue
            end = match.end()
            for secret in self.heads.get(match.group(), ()):  # a prefix: as much of the secret as is there
                end = max(end, start + _common_prefix(text, start, secret))
            parts += (text[pos:start], MASK)
            pos = end
        if not parts:
            return text
        parts.append(text[pos:])
        return "".join(parts)


_known = _Known()


TOKEN_SEGMENT_MIN = 16  # a URL's path segment this long is taken for a token of its own


def _url_tails(url: str) -> set[str]:
    """The parts of a secret URL a receiver may echo without the rest (a 404 naming its
    path): the path with its query, and each path or query segment long enough to be a token."""
    _, _, rest = url.partition("://")
    tail = rest[rest.find("/"):] if "/" in rest else ""
    parts = {tail} if len(tail) >= PREFIX_MIN else set()
    parts.update(seg for seg in re.split(r"[/?&=#]", tail) if len(seg) >= TOKEN_SEGMENT_MIN)
    return parts


def _common_prefix(text: str, start: int, secret: str) -> int:
    n = 0
    limit = min(len(secret), len(text) - start)
    while n < limit and text[start + n] == secret[n]:
        n += 1
    return n


def base64_forms(secret: str) -> set[str]:
    """The runs of base64 text that encode `secret` wherever it sits in the encoded
    bytes (three alignments, standard and URL-safe alphabets), 8 characters or more."""
    raw = secret.encode()
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        middle = encoded[(8 * offset + 5) // 6: (8 * (offset + len(raw))) // 6]
        if len(middle) >= PREFIX_MIN:
            forms.add(middle)
            forms.add(middle.replace("+", "-").replace("/", "_"))
    return forms


def remember(secret: str) -> None:
    """Hide this configured secret (and its base64 and leading parts) from now on."""
    _known.add(secret)


def known_secrets() -> set[str]:
    return _known.secrets


def redact_text(text: str) -> str:
    """Return text with credentials (patterns and configured secrets) masked."""
    text = _known.hide(text)
    for pattern, replacement in _TEXT_RULES:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: object) -> bool:
    return bool(SECRET_KEY.search(str(key)))


def redact_data(value: Any) -> Any:
    """Return JSON-like data without secret-named keys, credentials masked in strings."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if is_secret_key(key):
                continue
            if isinstance(item, str) and _LOGIN_KEY.match(str(key)):
                user, sep, _ = item.partition(":")
                item = f"{user}:{MASK}" if sep else item
            out[key] = redact_data(item)
        return out
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value


def may_hold_secret(raw: bytes) -> bool:
    """The cheap look: False means the bytes hold nothing `redact_data` would change
    by a key's name or a credential pattern. Configured secrets are looked for only
    past this look (one more search per event would cost as much as the look itself):
    the ways they reach events (a hook's `curl -v`, `-u user:$TOKEN`, a URL) pass it."""
    low = raw.lower()
    return any(hint in low for hint in _HINTS)


# -- configured secrets: `env:NAME` and `file:PATH` values --

def resolve_value(value: str, key: str) -> str:
    """Given a config string, return it with `env:NAME` / `file:PATH` read in."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{key}: environment variable {name} is not set")
        secret = os.environ[name]
    elif value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    else:
        return value
    mark_secret(secret)
    return secret


def _resolve_tree(node: Any, key: str) -> Any:
    if isinstance(node, str):
        return resolve_value(node, key)
    if isinstance(node, list):
        return [_resolve_tree(v, f"{key}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: _resolve_tree(v, f"{key}.{k}" if key else k) for k, v in node.items()}
    return node


def mark_database_url(url: str) -> None:
    """A database URL's secret is its password: remember that alone. (Read from env:/file:,
    the whole URL was remembered, and with it its host and database names, which would then be
    masked in every message that names where the store is.)"""
    _known.discard(url)
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:  # not a URL that can be split: keep hiding all of it
        remember(url)
        return
    if password:
        mark_secret(password)
        mark_secret(urllib.parse.unquote(password))


def mark_secret(value: str | None) -> None:
    """Remember a value that must never be printed (tokens given inline, URL paths)."""
    if value and len(value) >= 4:
        remember(value)


def scrub(text: str) -> str:
    """Return text with every known secret (and its base64 and leading parts) and
    every credential-shaped part (URL user:password, Authorization headers,
    password=…) replaced by ***."""
    return redact_text(text)
