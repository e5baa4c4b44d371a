"""Standard Webhooks signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature`.

The signed content is `{id}.{timestamp}.{body}`, HMAC-SHA256, base64, sent as
`v1,<signature>` (several, space-separated, while secrets rotate). Secrets are
written `whsec_<base64>`; any other string is used as raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


class SignatureError(ValueError):
    """A missing, stale or wrong signature; the message says which."""


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except ValueError:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` header value for a body."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": sign(secret, msg_id, timestamp, body)}


def verify(secrets: list[str], msg_id: str | None, timestamp: str | None, signature: str | None, body: bytes,
           tolerance: float = 300.0, now: float | None = None) -> None:
    """Raise SignatureError unless one of the signatures matches one of the secrets
    and the timestamp is within `tolerance` seconds of now."""
    if not (msg_id and timestamp and signature):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp must be an integer (seconds since the epoch)") from None
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        raise SignatureError(f"webhook-timestamp is more than {tolerance:.0f}s away from this server's clock")
    offered = [part.split(",", 1)[1] for part in signature.split() if part.startswith("v1,")]
    for secret in secrets:
        expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return
    raise SignatureError("webhook-signature does not match")
