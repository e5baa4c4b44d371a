"""Settings of the bus's own parts ([bus], [http], [[checks]]) and the error
every configuration problem raises.

`ConfigError`'s message names the key at fault (`subscribers[1] (ops).webhook_url: …`);
`describe_errors` turns pydantic's errors into that form. The whole file is
read and assembled above the bus, in `hookbus/config.py`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from hookbus.bus import signing


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(Strict):
    attempts: int = Field(10, ge=1, le=1000)
    max_delay: float = Field(300.0, gt=0, le=86400)
    initial_delay: float = Field(1.0, gt=0, le=3600)


class BusSettings(Strict):
    data_dir: Path = Path("var")
    control: str = "tcp://127.0.0.1:7600"
    publish: str = "tcp://127.0.0.1:7601"
    max_event_bytes: int = Field(256 * 1024, ge=4096, le=64 * 1024 * 1024)
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    retention_days: float = Field(30.0, gt=0)
    heartbeat: float = Field(1.0, gt=0, le=60)
    curve_secret_key: str | None = None  # the broker's certificate (secret) file text
    curve_public_key: str | None = None  # the broker's public key, for clients
    curve_authorized_keys: Path | None = None  # folder of clients' public certificates
    curve_client_key: str | None = None  # a client's own certificate (secret) file text
    credential: Path | None = None  # a client's credential file (`hookbus grant`); else $HOOKBUS_CREDENTIAL, else data_dir's own

    @property
    def curve_configured(self) -> bool:
        """Keys were given, not only the ones data_dir sets up for its own user."""
        return bool(self.curve_secret_key or self.curve_client_key or self.credential)

    @field_validator("control", "publish")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError("must be a ZeroMQ endpoint such as tcp://127.0.0.1:7600")
        return value


def _hmac_secret(value: str) -> str:
    signing.secret_bytes(value)  # a malformed whsec_ key would fail every signed request
    return value


class HttpSettings(Strict):
    """The HTTP listener, `[http]` (`[webhook]` is its old name; `webhook` is otherwise the outbound subscriber kind)."""

    enabled: bool = True
    listen: str = "127.0.0.1:8765"
    tokens: list[str] = []
    hmac_secrets: list[Annotated[str, AfterValidator(_hmac_secret)]] = []
    hmac_tolerance: float = Field(300.0, gt=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    body_timeout: float = Field(30.0, gt=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError("must be HOST:PORT such as 127.0.0.1:8765")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


# A UUID as healthchecks writes one in a ping URL (any case): the one pattern, for
# check keys here and for the ping API and the healthchecks subscriber above.
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


class Check(Strict):
    """A job reported through the healthchecks-compatible ping API (`/ping/{key}`)."""

    key: str
    job: str = Field(min_length=1)
    repository: str | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if UUID.fullmatch(value):
            return value.lower()  # healthchecks UUIDs are matched whatever their case
        if _SLUG.fullmatch(value):
            return value
        raise ValueError("must be a UUID such as 5f0a1c2e-9a7b-4c3d-8e1f-123456789abc, "
                         "or a slug of lowercase letters, digits, '-' and '_'")

    @property
    def is_uuid(self) -> bool:
        return bool(UUID.fullmatch(self.key))


def describe_errors(exc: ValidationError, prefix: str) -> str:
    """Format pydantic errors as `key: problem` lines, never echoing values."""
    lines = []
    for err in exc.errors():
        loc = prefix
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{loc}: {msg}")
    return "\n".join(lines)


def is_local_endpoint(endpoint: str) -> bool:
    """ipc://, inproc://, or tcp:// on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[6:].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # `*`, an interface name or a host name: reachable from elsewhere
