"""Live pages for the benchmarks: N server-sent-event streams of `GET /events/stream`,
held open in a process of their own (so their CPU is not the server's), each
counting the events it receives. Like a browser, a stream that the server ends
(a page that fell behind is dropped) is opened again; those re-opens are counted.

    python -m bench._sse URL N

Prints `READY` once every stream has its first bytes, then on each SIGUSR1 one
line `SSE_COUNTS {"events": [...], "reopened": [...], "errors": n}` with the
totals so far per stream. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp

MARK = b"\nevent: event\n"  # each event's message starts with this line, after the blank line that ends the one before


async def page(session: aiohttp.ClientSession, url: str, i: int, events: list[int], reopened: list[int],
               errors: list[int], ready: asyncio.Event, opened: list[int]) -> None:
    first = True
    while True:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                if resp.status != 200:
                    errors[0] += 1
                    await asyncio.sleep(0.5)
                    continue
                tail = b""
                async for chunk in resp.content.iter_any():  # counted in C: a line loop would be the bottleneck
                    if first:
                        first = False
                        opened[0] += 1
                        if opened[0] == len(events):
                            ready.set()
                    data = tail + chunk
                    events[i] += data.count(MARK)
                    tail = data[-(len(MARK) - 1):]
        except (aiohttp.ClientError, TimeoutError):
            errors[0] += 1
        reopened[i] += 1  # the server ended the stream: a browser comes back (retry: 2000)
        await asyncio.sleep(0.05)


async def main(url: str, n: int) -> None:
    events = [0] * n
    reopened = [0] * n
    errors = [0]
    opened = [0]
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def report() -> None:
        print("SSE_COUNTS " + json.dumps({"events": events, "reopened": reopened, "errors": errors[0]}), flush=True)

    loop.add_signal_handler(signal.SIGUSR1, report)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(page(session, url, i, events, reopened, errors, ready, opened)) for i in range(n)]
        await ready.wait()
        print("READY", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
