"""CURVE keys for broker and clients (ZeroMQ certificate files)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import zmq

_KEY = re.compile(r'^\s*(public|secret)-key\s*=\s*"([^"]+)"', re.M)


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes


def parse_certificate(text: str, key: str) -> KeyPair:
    """Given the text of a ZeroMQ secret certificate, return its key pair.

    Raise ValueError naming `key` when either key is missing.
    """
    found = dict(_KEY.findall(text))
    if "public" not in found or "secret" not in found:
        raise ValueError(f"{key}: not a ZeroMQ secret certificate (needs public-key and secret-key lines)")
    return KeyPair(found["public"].encode(), found["secret"].encode())


def apply_client(sock: zmq.Socket, server_public: str, client: KeyPair) -> None:  # type: ignore[type-arg]
    sock.curve_serverkey = server_public.encode()
    sock.curve_publickey = client.public
    sock.curve_secretkey = client.secret


def apply_server(sock: zmq.Socket, server: KeyPair) -> None:  # type: ignore[type-arg]
    sock.curve_secretkey = server.secret
    sock.curve_publickey = server.public
    sock.curve_server = True
