"""The handler timeout: a call to a subscriber's `handle()` (or `handle_many()`,
or a replay) that runs past `handler_timeout()` is cancelled and counts as a
failed attempt that timed out.

One watchdog looks over a table of the calls in progress: an asyncio.timeout
(or a timer) per call was a quarter of a busy subscriber's time. As in
asyncio.timeout, Task.uncancel tells the watchdog's cancellation from anyone
else's (a shutdown is not a timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

DEADLINE_CHECK = 0.05  # seconds between looks at handler calls past their timeout


class Deadlines:
    def __init__(self, timeout: Callable[[], float]) -> None:
        self.timeout = timeout  # seconds a call may run: the subscriber's handler_timeout
        self._due: dict[asyncio.Task[Any], float] = {}  # handler calls in progress → when they time out
        self._expired: set[asyncio.Task[Any]] = set()  # ... and those the watchdog has cancelled

    async def timed(self, call: Awaitable[None]) -> None:
        """Await a handler call; past the timeout it is cancelled and TimeoutError raised."""
        task = asyncio.current_task()
        assert task is not None
        self._due[task] = time.monotonic() + self.timeout()
        try:
            await call
        except asyncio.CancelledError:
            if self._take_back(task) and task.cancelling() == 0:
                raise TimeoutError from None
            raise  # (also) cancelled by someone else: a shutdown is not a timeout
        finally:
            del self._due[task]
            self._take_back(task)  # the call returned, or raised something else, after the watchdog cancelled it

    def _take_back(self, task: asyncio.Task[Any]) -> bool:
        """Undo the watchdog's cancellation of `task`, if it made one; say whether it did."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    async def watch(self) -> None:
        """The watchdog: cancel the calls past their time, until cancelled itself."""
        while True:
            await asyncio.sleep(DEADLINE_CHECK)
            now = time.monotonic()
            for task, deadline in list(self._due.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
