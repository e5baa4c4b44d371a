"""Standard Webhooks replay protection: a signed message is handled once.

The signature binds `webhook-id`, `webhook-timestamp` and the body, and a
timestamp is good for `hmac_tolerance` seconds: within that window, the same
signed request sent again (by the sender retrying, or by anyone who saw it)
would be valid again. So each message (its webhook-id and a digest of its
body) is remembered until its timestamp goes stale, and a repeat gets the
first answer again instead of being handled. The body is part of the key so
that a sender reusing an id for a new message (against the standard) has it
handled, not silently answered with the old one; a replay always has the
same body, as the signature binds it to the id.

Why the first answer and not a 401: a sender retries a message with the same
webhook-id when the answer was lost or late (Standard Webhooks calls the id an
idempotency key). A 401 would have it retry until it gives up and marks the
endpoint failed, though the message was taken; the first answer says it is
done, as a duplicate event gets its first seq, and nothing is done twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

# ~65k ids in one tolerance window is ~200 signed requests a second for 300 s;
# beyond it the oldest is forgotten early (memory stays bounded: ids are at most
# signing.MAX_ID_CHARS long).
MAX_ENTRIES = 65_536


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


class ReplayCache:
    """Remembers each message until `timestamp + tolerance`, with its first 2xx answer."""

    def __init__(self, tolerance: float, max_entries: int = MAX_ENTRIES) -> None:
        self.tolerance, self.max_entries = tolerance, max_entries
        # In arrival order, which is nearly expiry order: stale ones leave from the front.
        self._seen: OrderedDict[tuple[str, bytes], tuple[float, asyncio.Future[Answer | None]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def once(self, msg_id: str, body: bytes, timestamp: int,
                   handle: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Answer a signed request: handle it the first time, give the first answer
        to a repeat. An answer that is not a 2xx (or an error) is not remembered:
        the sender's retry is handled afresh."""
        self._forget_stale(time.time())
        key = (msg_id, hashlib.blake2b(body, digest_size=16).digest())
        entry = self._seen.get(key)
        if entry is not None:
            answer = await asyncio.shield(entry[1])  # a repeat while the first is in flight waits for it
            return answer.response() if answer is not None else await self.once(msg_id, body, timestamp, handle)
        pending: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self._remember(key, timestamp + self.tolerance, pending)
        answer = None
        try:
            response = await handle()
            sent = response.body if isinstance(response, web.Response) else None
            if 200 <= response.status < 300 and isinstance(sent, bytes):
                answer = Answer(response.status, sent, response.content_type)
            return response
        finally:
            if answer is None and self._seen.get(key, (0, None))[1] is pending:
                del self._seen[key]
            pending.set_result(answer)

    def _remember(self, key: tuple[str, bytes], expires: float, pending: asyncio.Future[Answer | None]) -> None:
        self._seen[key] = (expires, pending)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def _forget_stale(self, now: float) -> None:
        while self._seen:
            expires, pending = next(iter(self._seen.values()))
            if expires >= now or not pending.done():
                return
            self._seen.popitem(last=False)
