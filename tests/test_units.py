"""Unit tests: event model, journal, configuration, signing, outbound HTTP."""

from __future__ import annotations

import base64
import email.utils
import inspect
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses

from hookbus.adapters.http import USER_AGENT, HttpClient, classify, parse_retry_after, redact_url
from hookbus.bus import signing
from hookbus.bus.delivery.subscriber import DeliveryError
from hookbus.bus.events import event as event_module
from hookbus.bus.events.event import EventError, compile_globs, fit_to_size, new_event, new_id, parse_event
from hookbus.bus.events.text import CUT_MARK
from hookbus.bus.logs import ScrubFilter
from hookbus.bus.secrets import scrub
from hookbus.bus.settings import ConfigError
from hookbus.bus.store.journal import Journal
from hookbus.config import build_config, load_config

# -- events ---------------------------------------------------------------------------------------


def ce(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"specversion": "1.0", "id": "e1", "source": "test://units", "type": "backup.job.finished"}
    obj.update(over)
    return {k: v for k, v in obj.items() if v is not ...}


@pytest.mark.parametrize(("obj", "field"), [
    ([], "event"),
    ("text", "event"),
    (ce(id=...), "id"),
    (ce(source=...), "source"),
    (ce(type=...), "type"),
    (ce(specversion=...), "specversion"),
    (ce(id=None), "id"),
    (ce(id=""), "id"),
    (ce(source=3), "source"),
    (ce(specversion="1.1"), "specversion"),
    (ce(type="backup/job"), "type"),
    (ce(time="2026-11-21 03:38"), "time"),
    (ce(time="2026-11-21"), "time"),
    (ce(time="2026-11-21T25:00:00Z"), "time"),
    (ce(subject=["s"]), "subject"),
    (ce(datacontenttype=1), "datacontenttype"),
    (ce(dataschema=1), "dataschema"),
    (ce(data_base64="AA=="), "data_base64"),
    (ce(**{"UPPER": "x"}), "UPPER"),
    (ce(**{"averyveryverylongextensionname": "x"}), "averyveryverylongextensionname"),
    (ce(ext=[1]), "ext"),
])
def test_parse_event_errors_name_the_field(obj: Any, field: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(obj)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize("when", ["2026-11-21T03:38:00Z", "2026-11-21T03:38:00.123456+01:00",
                                  "2026-11-21t03:38:00z", "2026-11-21T03:38:00.123456789-05:30"])
def test_parse_event_accepts_rfc3339_times(when: str) -> None:
    assert parse_event(ce(time=when)).time == when


def test_parse_event_round_trip_keeps_everything() -> None:
    obj = ce(time="2026-11-21T03:38:00Z", subject="MyRepository", datacontenttype="application/json",
             dataschema="https://example/schema", traceid="abc", retries=2, flag=True, data={"job_id": "j1", "n": [1, 2]})
    event = parse_event(obj)
    assert event.extensions == {"traceid": "abc", "retries": 2, "flag": True, "dataschema": "https://example/schema"}
    assert event.to_dict() == obj
    assert orjson.loads(event.to_json()) == obj
    assert event.job_key == "j1"
    assert parse_event(ce(data="plain")).job_key == "test://units"


def test_new_id_is_a_unique_ulid() -> None:
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    alphabet = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert all(len(i) == 26 and set(i) <= alphabet for i in ids)


def _ulid_ms(ulid: str) -> int:
    value = 0
    for char in ulid[:10]:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    return value  # 10 chars = bits 80..129 of the 130: the 48 bits of milliseconds


def test_new_id_sorts_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([1_700_000_000.000 + i * 0.001 for i in range(0, 3000, 7)])
    monkeypatch.setattr(event_module, "time", SimpleNamespace(time=lambda: next(clock)))  # this module's clock only
    ids = [new_id() for _ in range(400)]
    assert ids == sorted(ids)
    assert _ulid_ms(ids[0]) == 1_700_000_000_000
    assert _ulid_ms(ids[1]) == 1_700_000_000_007


def test_new_event_is_stamped() -> None:
    event = new_event("backup.log", {"message": "hi"}, source="test://units")
    parsed = parse_event(orjson.loads(event.to_json()))
    assert parsed.id == event.id and parsed.time == event.time and parsed.time is not None


def test_fit_to_size_leaves_small_events_alone() -> None:
    event = parse_event(ce(data={"job_id": "j", "output": "short"}))
    assert fit_to_size(event, 4096) == event.to_json()


@pytest.mark.parametrize("filler", ["a", "é", "\"\\\n\t", "\x01", "日本"], ids=["ascii", "utf8", "escapes", "control", "cjk"])
def test_fit_to_size_keeps_the_tail(filler: str) -> None:
    output = filler * 20000 + "\nERROR: the last line is what matters"
    event = parse_event(ce(data={"job_id": "j1", "task": {"name": "backup", "output_tail": output}, "n": 5}))
    body = fit_to_size(event, 4096)
    assert len(body) <= 4096
    data = orjson.loads(body)["data"]
    assert data["job_id"] == "j1" and data["n"] == 5 and data["task"]["name"] == "backup"
    tail = data["task"]["output_tail"]
    assert tail.startswith(CUT_MARK.split("{")[0])
    assert tail.endswith(filler * 10 + "\nERROR: the last line is what matters")
    assert len(body) > 4096 - 256  # cut to fit, not far more than needed


@pytest.mark.parametrize(("front", "back"), [
    ("a" * 6000, "\x01" * 3000),  # cheap text first, costly escapes at the end
    ("\x1b[0m" * 2000, "b" * 3000),  # ANSI colours first
    ("b" * 100, ("\x01" * 30 + "\n\"") * 100),
    ("😀" * 5000, ""),
])
@pytest.mark.parametrize("limit", [4096, 5000, 8192])
def test_fit_to_size_uses_the_budget_with_uneven_escaping(front: str, back: str, limit: int) -> None:
    event = parse_event(ce(data={"out": front + back + "END", "other": "q" * 300}))
    body = fit_to_size(event, limit)
    assert limit - 64 < len(body) <= limit  # one exact cut, not a second one that takes too much
    data = orjson.loads(body)["data"]
    assert data["out"].endswith((front + back)[-200:] + "END")
    assert data["out"].count("[cut:") == 1 and data["other"] == "q" * 300


def test_fit_to_size_cuts_several_strings() -> None:
    event = parse_event(ce(data={"stdout": "o" * 5000 + "OUT-END", "stderr": "e" * 5000 + "ERR-END"}))
    body = fit_to_size(event, 4096)
    data = orjson.loads(body)["data"]
    assert len(body) <= 4096
    assert data["stdout"].endswith("OUT-END") and data["stderr"].endswith("ERR-END")


def test_fit_to_size_cuts_string_data() -> None:
    event = parse_event(ce(data="z" * 10000 + "END"))
    body = fit_to_size(event, 4096)
    assert len(body) <= 4096 and orjson.loads(body)["data"].endswith("zEND")


def test_fit_to_size_refuses_what_cannot_be_cut() -> None:
    event = parse_event(ce(data={"lines": ["x" * 100] * 100}))
    with pytest.raises(EventError) as info:
        fit_to_size(event, 4096)
    assert info.value.field == "data" and "max_event_bytes" in str(info.value)
    big_subject = parse_event(ce(subject="s" * 5000, data={"a": "b"}))
    with pytest.raises(EventError):
        fit_to_size(big_subject, 4096)


def test_compile_globs() -> None:
    match = compile_globs(["backup.job.*", "backup.log"]).match
    assert match("backup.job.finished") and match("backup.log")
    assert not match("backup.task.finished") and not match("backup.logs")
    assert not compile_globs([]).match("anything")


# -- configuration --------------------------------------------------------------------------------


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(raw, "test")
    return str(info.value)


def jsonl(name: str = "audit", **over: Any) -> dict[str, Any]:
    return {"name": name, "kind": "jsonl", "path": "var/events.jsonl", **over}


@pytest.mark.parametrize(("raw", "message"), [
    ({"subscribers": [jsonl(pathx="x")]}, "subscribers[0] (audit).pathx: unknown key"),
    ({"subscribers": [jsonl(), jsonl("ops", retry={"attempts": 3, "jitter": 1})]}, "subscribers[1] (ops).retry.jitter: unknown key"),
    ({"bus": {"datadir": "x"}}, "bus.datadir: unknown key"),
    ({"webhok": {}}, "webhok: unknown key"),
    ({"subscribers": [{"name": "audit", "kind": "jsonl"}]}, "subscribers[0] (audit).path: Field required"),
    ({"subscribers": [jsonl(), jsonl()]}, "subscribers[1].name: 'audit' is used twice"),
    ({"subscribers": [jsonl(kind="nope")]}, "subscribers[0] (audit).kind: unknown subscriber kind 'nope'"),
    ({"subscribers": [jsonl(kind="base")]}, "subscribers[0] (audit).kind: unknown subscriber kind 'base'"),
    ({"subscribers": [jsonl(kind="../jsonl")]}, "subscribers[0] (audit).kind: unknown subscriber kind"),
    ({"subscribers": [{"name": "audit"}]}, "subscribers[0] (audit).kind: required"),
    ({"subscribers": [jsonl(events=["backup job"])]}, "subscribers[0] (audit).events[0]:"),
    ({"subscribers": {"name": "audit"}}, "subscribers: must be an array"),
    ({"bus": {"control": "http://127.0.0.1:7600"}}, "bus.control:"),
    ({"http": {"listen": "8765"}}, "http.listen:"),
    ({"http": {"listen": "0.0.0.0:8765"}}, "http.listen: 0.0.0.0:8765 is not a loopback address"),
    ({"http": {"listen": "192.168.1.5:8765"}}, "set http.tokens or http.hmac_secrets"),
    ({"http": {"listen": "backup-host:8765"}}, "http.listen:"),
    ({"http": {"hmac_secrets": ["whsec_not*base64"]}}, "http.hmac_secrets[0]: Value error, a whsec_ secret must be base64"),
    ({"http": {"hmac_secrets": ["x" * 20, "whsec_c2hvcnQ="]}}, "http.hmac_secrets[1]: Value error, a whsec_ secret must be"),
])
def test_config_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    assert message in config_error(raw)


@pytest.mark.parametrize("http", [
    {"listen": "127.0.0.1:8765"},
    {"listen": "localhost:8765"},
    {"listen": "[::1]:8765"},
    {"listen": "0.0.0.0:8765", "tokens": ["a-long-token"]},
    {"listen": "0.0.0.0:8765", "hmac_secrets": ["whsec_c2VjcmV0LXNpZ25pbmcta2V5LTI0Ynl0ZXM="]},
    {"listen": "0.0.0.0:8765", "enabled": False},
])
def test_config_listen_accepted(http: dict[str, Any]) -> None:
    assert build_config({"http": http}, "test").http.listen == http["listen"]


def test_config_webhook_section_is_read_as_http_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "hookbus.toml"
    path.write_text('[webhook]\nlisten = "127.0.0.1:9876"\ntokens = ["tok-old-name-1"]\n')
    with caplog.at_level(logging.WARNING, logger="hookbus.config"):
        config = load_config(path)
    assert (config.http.listen, config.http.tokens) == ("127.0.0.1:9876", ["tok-old-name-1"])
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "[webhook]" in warning.getMessage() and "[http]" in warning.getMessage() and str(path) in warning.getMessage()


def test_config_with_both_http_and_webhook_sections_is_an_error() -> None:
    message = config_error({"http": {"listen": "127.0.0.1:8765"}, "webhook": {"listen": "127.0.0.1:8766"}})
    assert "[http]" in message and "[webhook]" in message


def test_config_env_and_file_values_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOOKBUS_UNIT_TOKEN", "tok-from-env-4711")
    secret_file = tmp_path / "hmac"
    secret_file.write_text("whsec_ZmlsZS1zZWNyZXQtb2YtMjQtYnl0ZXMh\n")
    config = build_config({
        "http": {"tokens": ["env:HOOKBUS_UNIT_TOKEN", "inline-token"], "hmac_secrets": [f"file:{secret_file}"]},
        "subscribers": [jsonl(path="env:HOOKBUS_UNIT_TOKEN")],
    }, "test")
    assert config.http.tokens == ["tok-from-env-4711", "inline-token"]
    assert config.http.hmac_secrets == ["whsec_ZmlsZS1zZWNyZXQtb2YtMjQtYnl0ZXMh"]  # trailing newline gone
    assert config.subscriber("audit").path == Path("tok-from-env-4711")
    with pytest.raises(ConfigError, match="no subscriber named 'ops'"):
        config.subscriber("ops")


def test_config_missing_env_or_file_names_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HOOKBUS_UNIT_MISSING", raising=False)
    message = config_error({"http": {"tokens": ["x-token", "env:HOOKBUS_UNIT_MISSING"]}})
    assert message == "http.tokens[1]: environment variable HOOKBUS_UNIT_MISSING is not set"
    message = config_error({"subscribers": [{"name": "ops", "kind": "webhook", "url": "env:HOOKBUS_UNIT_MISSING"}]})
    assert message == "subscribers[0] (ops).url: environment variable HOOKBUS_UNIT_MISSING is not set"
    message = config_error({"bus": {"curve_secret_key": f"file:{tmp_path / 'absent.key'}"}})
    assert message.startswith("bus.curve_secret_key: cannot read")


def test_scrub_hides_resolved_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_url = "https://hooks.slack.com/services/T000/B000/unit-scrub-XXXX"
    monkeypatch.setenv("HOOKBUS_UNIT_SECRET", "s3cr3t-unit-token")
    monkeypatch.setenv("HOOKBUS_UNIT_URL", secret_url)
    build_config({"http": {"tokens": ["env:HOOKBUS_UNIT_SECRET"]},
                  "subscribers": [{"name": "ops", "kind": "webhook", "url": "env:HOOKBUS_UNIT_URL"}]}, "test")
    assert scrub("Bearer s3cr3t-unit-token rejected") == "Bearer *** rejected"
    assert secret_url not in scrub(f"POST {secret_url} failed")

    record = logging.LogRecord("hookbus", logging.INFO, __file__, 1, "token %s for %s", ("s3cr3t-unit-token", "ops"), None)
    assert ScrubFilter().filter(record)
    assert record.getMessage() == "token *** for ops"


def test_config_error_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKBUS_UNIT_BADURL", "ftp://user:pa55word@host/tok-987")
    message = config_error({"subscribers": [{"name": "ops", "kind": "webhook", "url": "env:HOOKBUS_UNIT_BADURL"}]})
    assert message.startswith("subscribers[0] (ops).url:")
    assert "pa55word" not in message and "tok-987" not in message


# -- signing --------------------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"unit-test-secret-0123456789abcdef").decode()
BODY = b'{"specversion":"1.0","id":"e1"}'


def test_signature_round_trip() -> None:
    h = signing.headers(SECRET, "msg_1", BODY, now=1_700_000_000)
    assert h["webhook-timestamp"] == "1700000000" and h["webhook-signature"].startswith("v1,")
    signing.verify([SECRET], h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"], BODY, now=1_700_000_100)


def test_signature_matches_the_standard_webhooks_reference() -> None:
    # The example from the Standard Webhooks specification, so other implementations agree.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert signing.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_with_rotated_secrets() -> None:
    old, new = SECRET, "plain-new-secret"
    by_new = signing.headers(new, "m", BODY)
    by_old = signing.headers(old, "m", BODY)
    # The receiver accepts either secret while rotating...
    for h in (by_new, by_old):
        signing.verify([old, new], h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"], BODY)
    # ...and a sender may send both signatures.
    both = f"{by_old['webhook-signature']} {by_new['webhook-signature']}"
    signing.verify([new], "m", by_new["webhook-timestamp"], both, BODY)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify([old], "m", by_new["webhook-timestamp"], by_new["webhook-signature"], BODY)


@pytest.mark.parametrize(("msg_id", "ts_shift", "body", "signature", "words"), [
    ("m", 0, BODY + b" ", None, "does not match"),
    ("other", 0, BODY, None, "does not match"),
    ("m", 1, BODY, None, "does not match"),  # timestamp changed after signing
    ("m", 0, BODY, "v1,AAAA", "does not match"),
    ("m", 0, BODY, "v2,whatever", "does not match"),
    ("m", -301, BODY, None, "webhook-timestamp"),
    ("m", 301, BODY, None, "webhook-timestamp"),
    ("m", 0, BODY, "", "missing"),
    ("", 0, BODY, None, "missing"),
])
def test_signature_tampering_fails(msg_id: str, ts_shift: int, body: bytes, signature: str | None, words: str) -> None:
    now = 1_700_000_000
    h = signing.headers(SECRET, "m", BODY, now=now)
    ts = now + ts_shift
    if ts_shift in (-301, 301):  # signed correctly, but at another time
        h = signing.headers(SECRET, "m", BODY, now=ts)
    with pytest.raises(signing.SignatureError, match=words):
        signing.verify([SECRET], msg_id, str(ts), h["webhook-signature"] if signature is None else signature, body, now=now)


@pytest.mark.parametrize("timestamp", ["yesterday", "9" * 400, "１７００００００００", "1_700_000_000", " 1700000000", "-1", "1e9"])
def test_signature_timestamp_must_be_ascii_digits(timestamp: str) -> None:
    with pytest.raises(signing.SignatureError, match="ASCII digits"):
        signing.verify([SECRET], "m", timestamp, "v1,AAAA", BODY)


def test_signature_with_non_ascii_bytes_is_a_verdict_not_an_error() -> None:
    now = 1_700_000_000
    for msg_id, signature in (("m", "v1,\u00e9\udcff"), ("m-\udcff", "v1,AAAA")):
        with pytest.raises(signing.SignatureError, match="does not match"):
            signing.verify([SECRET], msg_id, str(now), signature, BODY, now=now)


def test_whsec_secret_is_base64() -> None:
    raw = "a-raw-key-of-24-bytes-ok"
    assert signing.sign("whsec_" + base64.b64encode(raw.encode()).decode(), "m", 1, BODY) == signing.sign(raw, "m", 1, BODY)
    with pytest.raises(ValueError, match="base64"):
        signing.secret_bytes("whsec_not base64!")
    for short in ("whsec_", "whsec_" + base64.b64encode(b"raw").decode()):
        with pytest.raises(ValueError, match="16 to 256 bytes"):
            signing.secret_bytes(short)
    with pytest.raises(ValueError, match="empty"):
        signing.secret_bytes("")


# -- outbound HTTP --------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 413, 422])
def test_classify_permanent(status: int) -> None:
    error = classify(status, "channel_is_archived", "https://hooks.example/services/T/B/secret", {})
    assert error.permanent and error.retry_after is None
    assert f"answered {status}" in str(error) and "channel_is_archived" in str(error)
    assert "secret" not in str(error)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 501, 502, 503, 504, 507, 520, 599])
def test_classify_retryable(status: int) -> None:
    error = classify(status, "", "https://hooks.example/x", {"Retry-After": "12"})
    assert not error.permanent and error.retry_after == 12.0


def test_classify_keeps_the_body_short() -> None:
    error = classify(500, "<html>\n" + "x" * 5000, "https://h/x", {})
    assert len(str(error)) < 300


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("") is None
    assert parse_retry_after("soon") is None and parse_retry_after("-5") is None
    future = email.utils.formatdate(time.time() + 90, usegmt=True)
    assert 80 <= (parse_retry_after(future) or 0) <= 91
    past = email.utils.formatdate(time.time() - 90, usegmt=True)
    assert parse_retry_after(past) == 0.0


@pytest.mark.parametrize(("url", "expected"), [
    ("https://user:pa55@hooks.slack.com/services/T0/B0/XyZ?x=1", "https://hooks.slack.com/***"),
    ("https://hc-ping.com/5f0a1c2e-9a7b-4c3d-8e1f-123456789abc/fail", "https://hc-ping.com/***"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("http://example.com?token=abc", "http://example.com/***"),
    ("https://example.com", "https://example.com"),
    ("http://[::1", "<invalid url>"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


URL = "https://hooks.example/services/T0/B0/secret-path"


class MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.x builds a ClientResponse without the `stream_writer` that
    aiohttp 3.14 requires (pnuckowski/aioresponses#289): give it a finished one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(timeout=5)
    yield client
    await client.close()


async def test_request_200(http: HttpClient) -> None:
    with aioresponses() as mock:
        mock.post(URL, status=200, body="ok", headers={"X-Id": "1"}, response_class=MockResponse)
        status, text, headers = await http.request("POST", URL, data=b"{}", headers={"Content-Type": "application/json"})
        assert (status, text, headers["X-Id"]) == (200, "ok", "1")
        [(key, calls)] = list(mock.requests.items())
        assert key[0] == "POST" and str(key[1]) == URL
        assert calls[0].kwargs["data"] == b"{}"
    assert http.session().headers["User-Agent"] == USER_AGENT


@pytest.mark.parametrize(("status", "headers", "permanent", "retry_after"), [
    (503, {}, False, None),
    (410, {}, True, None),
    (429, {"Retry-After": "7"}, False, 7.0),
    (404, {}, True, None),
])
async def test_request_error_answers(http: HttpClient, status: int, headers: dict[str, str], permanent: bool,
                                     retry_after: float | None) -> None:
    with aioresponses() as mock:
        mock.post(URL, status=status, body='{"error":"channel_is_archived"}', headers=headers,
                  response_class=MockResponse)
        with pytest.raises(DeliveryError) as info:
            await http.request("POST", URL, json={"text": "hi"})
    assert info.value.permanent is permanent
    assert info.value.retry_after == retry_after
    assert f"answered {status}" in str(info.value) and "secret-path" not in str(info.value)


@pytest.mark.parametrize("exc", [aiohttp.ClientConnectionError("refused secret-path"), TimeoutError(),
                                 ConnectionResetError("reset")])
async def test_request_network_errors_are_retryable(http: HttpClient, exc: Exception) -> None:
    with aioresponses() as mock:
        mock.post(URL, exception=exc)
        with pytest.raises(DeliveryError) as info:
            await http.request("POST", URL, data="x")
    assert not info.value.permanent
    assert "hooks.example" in str(info.value) and "secret-path" not in str(info.value)


async def test_request_invalid_url_is_permanent(http: HttpClient) -> None:
    with pytest.raises(DeliveryError) as info:
        await http.request("GET", "http://")
    assert info.value.permanent


async def test_journal_writer_survives_an_operation_that_raises(tmp_path: Path) -> None:
    """An op failing with any exception is refused alone; the writer thread lives on."""
    journal = Journal(tmp_path / "j.db")
    try:
        with pytest.raises(OverflowError):
            await journal.mark_replay([2**70], None)
        with pytest.raises(RuntimeError):
            await journal.write(lambda conn: (_ for _ in ()).throw(RuntimeError("boom")))
        accepted = await journal.append([(parse_event({"specversion": "1.0", "id": "x", "source": "s", "type": "t"}), b"{}")])
        assert accepted[0].seq == 1
    finally:
        journal.close()
