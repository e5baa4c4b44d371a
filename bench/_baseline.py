"""Raw baselines, each run as its own process by the benchmarks.

    python -m bench._baseline ingest  --port P            # aiohttp: parse JSON with orjson, answer 202
    python -m bench._baseline forward --port P --to URL   # same, and POST the event on to URL
    python -m bench._baseline proxy   --xsub P --xpub Q   # zmq.proxy XSUB/XPUB, high-water marks off

All of them bind 127.0.0.1 only and stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # aiohttp is imported where a server is made: the proxy mode does without it
    from aiohttp import web

HOST = "127.0.0.1"


def _is_event(obj: object) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("id"), str) and isinstance(obj.get("source"), str)


async def _serve(app: web.Application, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)  # as hookbus's own HTTP server
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def ingest_app() -> web.Application:
    """POST /events → orjson.loads → 202 with an `accepted` body like hookbus's."""
    from aiohttp import web

    seq = 0

    async def post_events(request: web.Request) -> web.Response:
        nonlocal seq
        obj = orjson.loads(await request.read())
        if not _is_event(obj):
            return web.Response(status=400, body=b'{"error":"not an event"}', content_type="application/json")
        seq += 1
        return web.Response(status=202, body=orjson.dumps({"accepted": [{"id": obj["id"], "seq": seq}]}),
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/events", post_events)
    return app


async def ingest(port: int) -> None:
    await _serve(ingest_app(), port)


async def forward(port: int, to: str) -> None:
    """POST /events → orjson.loads → 202, and the event POSTed on to `to` in the
    background (the minimum a webhook fan-out without a journal does)."""
    import aiohttp
    from aiohttp import web

    session: aiohttp.ClientSession | None = None
    pending: set[asyncio.Task[None]] = set()

    async def send(body: bytes) -> None:
        assert session is not None
        try:
            async with session.post(to, data=body, headers={"Content-Type": "application/cloudevents+json"}) as resp:
                await resp.read()
        except aiohttp.ClientError as exc:
            print(f"forward failed: {exc}", file=sys.stderr)

    async def post_events(request: web.Request) -> web.Response:
        body = await request.read()
        obj = orjson.loads(body)
        if not _is_event(obj):
            return web.Response(status=400, body=b'{"error":"not an event"}', content_type="application/json")
        task = asyncio.create_task(send(body))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return web.Response(status=202, body=orjson.dumps({"accepted": [{"id": obj["id"]}]}),
                            content_type="application/json")

    async def on_startup(app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def on_cleanup(app: web.Application) -> None:
        if session is not None:
            await session.close()

    app = web.Application()
    app.router.add_post("/events", post_events)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    await _serve(app, port)


def proxy(xsub_port: int, xpub_port: int) -> None:
    """A plain XSUB/XPUB forwarder with the high-water marks off (0 = no limit).
    zmq.proxy runs in a thread; the main thread waits for SIGTERM/SIGINT."""
    import os
    import threading

    import zmq

    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for sock in (xsub, xpub):
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.linger = 0
    xsub.bind(f"tcp://{HOST}:{xsub_port}")
    xpub.bind(f"tcp://{HOST}:{xpub_port}")
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # the proxy thread inherits the mask
    threading.Thread(target=zmq.proxy, args=(xsub, xpub), daemon=True, name="proxy").start()
    signal.sigwait(stop_signals)
    os._exit(0)  # the proxy thread is inside a C call; nothing to flush


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._baseline")
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("ingest")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("forward")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--to", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--xsub", type=int, required=True)
    p.add_argument("--xpub", type=int, required=True)
    args = parser.parse_args()
    if args.mode == "ingest":
        asyncio.run(ingest(args.port))
    elif args.mode == "forward":
        if not args.to.startswith(f"http://{HOST}:"):
            parser.error(f"--to must be an http://{HOST}:PORT URL")
        asyncio.run(forward(args.port, args.to))
    else:
        proxy(args.xsub, args.xpub)


if __name__ == "__main__":
    main()
