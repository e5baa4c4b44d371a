"""Standard Webhooks signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature`.

The signed content is `{id}.{timestamp}.{body}`, HMAC-SHA256, base64, sent as
`v1,<signature>` (several, space-separated, while secrets rotate). Secrets are
written `whsec_<base64>`; any other string is used as raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import NamedTuple

# Standard Webhooks asks for 24-64 random bytes; fewer than 16 is a typo, not a key.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 16, 256
# Seconds since the epoch: 10 digits until 2286. int() would take '１７', '1_7', ' 17'
# and, for 309 digits and more, overflow the float comparison.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
MAX_ID_CHARS = 256  # ids are remembered for replay protection (replay.py): bounded


class Signed(NamedTuple):
    """A message whose signature was verified."""

    msg_id: str
    timestamp: int


class SignatureError(ValueError):
    """A missing, stale or wrong signature; the message says which."""


def secret_bytes(secret: str) -> bytes:
    """Return a secret's key. Raise ValueError (quoting no part of the secret) for an
    empty one, or a `whsec_` one that is not base64 of MIN_SECRET_BYTES to MAX_SECRET_BYTES."""
    if not secret.startswith("whsec_"):
        if not secret:
            raise ValueError("an empty secret would let anyone sign")
        return secret.encode()
    try:
        key = base64.b64decode(secret[6:], validate=True)
    except ValueError:
        raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"a whsec_ secret must be base64 of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
                         f"not {len(key)}")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` header value for a body."""
    content = f"{msg_id}.{timestamp}.".encode(errors="surrogateescape") + body  # the id's bytes as sent
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": sign(secret, msg_id, timestamp, body)}


def verify(secrets: list[str], msg_id: str | None, timestamp: str | None, signature: str | None, body: bytes,
           tolerance: float = 300.0, now: float | None = None) -> Signed:
    """Return the verified message's id and timestamp. Raise SignatureError unless
    one of the signatures matches one of the secrets and the timestamp is within
    `tolerance` seconds of now."""
    if not (msg_id and timestamp and signature):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(msg_id) > MAX_ID_CHARS:
        raise SignatureError(f"webhook-id is longer than {MAX_ID_CHARS} characters")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("webhook-timestamp must be seconds since the epoch: 1 to 12 ASCII digits")
    ts = int(timestamp)
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        raise SignatureError(f"webhook-timestamp is more than {tolerance:.0f}s away from this server's clock")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a verdict).
    offered = [part[3:].encode(errors="surrogateescape") for part in signature.split() if part.startswith("v1,")]
    for secret in secrets:
        expected = sign(secret, msg_id, ts, body)[3:].encode()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return Signed(msg_id, ts)
    raise SignatureError("webhook-signature does not match")
