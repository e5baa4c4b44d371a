"""CURVE across hosts: a client whose key is authorized talks to the broker;
one with an unknown key is refused (its requests are never answered)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import zmq.asyncio
import zmq.auth

from hookbus.bus.delivery.runner import SubscriberRunner
from hookbus.bus.events.event import Event
from hookbus.bus.settings import BusSettings
from hookbus.bus.store.journal import Journal
from hookbus.bus.transport.broker import Broker
from hookbus.bus.transport.client import BrokerUnavailable, ControlClient
from hookbus.config import build_config
from hookbus.subscribers import Subscriber, SubscriberConfig

from .conftest import cloudevent, free_port


class Collect(Subscriber):
    def __init__(self, config: SubscriberConfig) -> None:
        super().__init__(config)
        self.events: list[Event] = []

    async def handle(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    zmq.auth.create_certificates(str(tmp_path), "broker")
    (tmp_path / "authorized").mkdir()
    zmq.auth.create_certificates(str(tmp_path / "authorized"), "good")
    zmq.auth.create_certificates(str(tmp_path), "stranger")
    for secret in [*tmp_path.glob("*.key_secret"), *tmp_path.glob("authorized/*.key_secret")]:
        secret.chmod(0o600)  # created 0644, which hookbus refuses (§13)
    return tmp_path


def public_key(cert: Path) -> str:
    public, _ = zmq.auth.load_certificate(str(cert))
    return public.decode()


async def test_authorized_client_publishes_and_subscribes_unknown_key_refused(tmp_path: Path, keys: Path) -> None:
    control, publish = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = build_config({"bus": {
        "data_dir": str(tmp_path / "var"), "control": control, "publish": publish, "heartbeat": 0.2,
        "curve_secret_key": f"file:{keys / 'broker.key_secret'}", "curve_authorized_keys": str(keys / "authorized"),
    }, "subscribers": []}, "test")
    journal = Journal(tmp_path / "var" / "journal.db")
    ctx = zmq.asyncio.Context()
    broker = Broker(config, journal, ctx)
    await broker.start()
    server_key = public_key(keys / "broker.key")

    def client_bus(cert: Path) -> BusSettings:
        return BusSettings(control=control, publish=publish, heartbeat=0.2, curve_public_key=server_key,
                           curve_client_key=cert.read_text())

    good_bus = client_bus(keys / "authorized" / "good.key_secret")
    sub_config = SubscriberConfig(name="collect", kind="collect")
    collector = Collect(sub_config)
    runner = SubscriberRunner(sub_config, collector, good_bus, ctx)
    run = asyncio.create_task(runner.run())
    good = ControlClient(good_bus, ctx)
    stranger = ControlClient(client_bus(keys / "stranger.key_secret"), ctx)
    plain = ControlClient(BusSettings(control=control, publish=publish), ctx)
    try:
        accepted = await good.publish([orjson.dumps(cloudevent(1))], timeout=10)
        assert accepted == [{"id": "ev-1", "seq": 1, "duplicate": False}]
        async with asyncio.timeout(10):
            while not collector.events:
                await asyncio.sleep(0.02)
        assert collector.events[0].id == "ev-1"
        for outsider in (stranger, plain):
            with pytest.raises(BrokerUnavailable):
                await outsider.publish([orjson.dumps(cloudevent(2))], timeout=1.5)
        assert journal.last_seq == 1
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        for client in (good, stranger, plain):
            client.close()
        await broker.stop()
        journal.close()
        ctx.destroy(linger=0)
