"""Who may talk to the broker: CURVE keys that set themselves up, and roles.

Loopback is not a trust boundary (DESIGN §2.7): every ZeroMQ endpoint runs
CURVE. On first start the broker writes, under `data_dir/keys/` (0700, secrets
0600):

    broker.key, broker.key_secret    the broker's own key pair (unless
                                     bus.curve_secret_key names one)
    operate.credential               a client key for hookbus's own user:
                                     subscribers, status, replay (and publish)
    publish.credential               a client key that may only publish
    operate/*.key, publish/*.key     the public keys the broker accepts, by role

A credential file is a ZeroMQ secret certificate plus the broker's public key
(`server-key`), so a client can tell the real broker from a process squatting
its port. `hookbus grant ROLE --to FILE` writes one for another user.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq

from hookbus.bus.filemodes import KEYS_FOLDER
from hookbus.bus.settings import BusSettings
from hookbus.bus.transport.curve import KeyPair, apply_client, parse_certificate

PUBLISH, OPERATE = "publish", "operate"
ROLES = (PUBLISH, OPERATE)
ENV = "HOOKBUS_CREDENTIAL"
LOCAL = "local"  # the name, in operate/ and publish/, of the keys of hookbus's own user
_SERVER_KEY = re.compile(r'^\s*server-key\s*=\s*"([^"]{40})"', re.M)
_ROLE = re.compile(r'^\s*role\s*=\s*"([a-z]+)"', re.M)
_PUBLIC = re.compile(r'^\s*public-key\s*=\s*"([^"]{40})"', re.M)


class NoCredential(ConnectionError):
    """No credential to reach the broker with: nothing is sent."""


@dataclass(frozen=True)
class Credential:
    role: str  # what it was issued for; the broker decides from its own lists
    client: KeyPair
    server_public: bytes


def keys_dir(bus: BusSettings) -> Path:
    return bus.data_dir / KEYS_FOLDER


def apply_credential(sock: zmq.Socket, cred: Credential) -> None:  # type: ignore[type-arg]
    apply_client(sock, cred.server_public.decode(), cred.client)


# -- files ---------------------------------------------------------------------

def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never through a symlink, replacing it whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash of a process with this pid (always 1 in a container)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _certificate(keys: KeyPair, *, secret: bool, meta: dict[str, str], comment: str) -> str:
    lines = [f"#   {comment}", "metadata"] + [f'    {k} = "{v}"' for k, v in meta.items()]
    lines += ["curve", f'    public-key = "{keys.public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{keys.secret.decode()}"')
    return "\n".join(lines) + "\n"


def credential_text(role: str, client: KeyPair, server_public: bytes) -> str:
    comment = f"hookbus credential ({role}): keep it secret; whoever reads it may {role}"
    text = _certificate(client, secret=True, meta={"role": role}, comment=comment)
    return text + f'    server-key = "{server_public.decode()}"\n'


def parse_credential(text: str, key: str) -> Credential:
    """Given a credential file's text, return it. Raise ValueError naming `key` if it is not one."""
    client = parse_certificate(text, key)
    server = _SERVER_KEY.search(text)
    role = _ROLE.search(text)
    if server is None:
        raise ValueError(f"{key}: not a hookbus credential (no server-key line); write one with `hookbus grant`")
    return Credential(role.group(1) if role else OPERATE, client, server.group(1).encode())


def load_credential(path: Path, key: str = "credential") -> Credential:
    try:
        text = path.read_text()
    except OSError as exc:
        raise NoCredential(f"{key}: cannot read {path}: {exc.strerror}") from None
    return parse_credential(text, f"{key} {path}")


def check_private(path: Path) -> None:
    """Refuse a secret others could read (DESIGN §13), saying which and why."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode) or mode & 0o077:
        raise OSError(f"{path}: readable or writable by others (mode {stat.S_IMODE(mode):o}) or a symlink; "
                      "hookbus refuses it: it holds a secret key (chmod go-rwx)")


# -- the broker's side ---------------------------------------------------------------

def ensure_keys(bus: BusSettings) -> KeyPair:
    """Create what is missing under data_dir/keys; return the broker's key pair.

    Raise OSError when a secret there is open to others, ValueError when
    bus.curve_secret_key is not a certificate."""
    folder = keys_dir(bus)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(folder)
    server = _server_keys(bus, folder)
    for role in ROLES:
        (folder / role).mkdir(mode=0o700, exist_ok=True)
        own = folder / f"{role}.credential"
        if own.exists():
            check_private(own)
            if parse_credential(own.read_text(), str(own)).server_public == server.public \
                    and (folder / role / f"{LOCAL}.key").exists():
                continue
        _issue(folder, role, LOCAL, own, server)
    return server


def _server_keys(bus: BusSettings, folder: Path) -> KeyPair:
    if bus.curve_secret_key:
        return parse_certificate(bus.curve_secret_key, "bus.curve_secret_key")
    secret = folder / "broker.key_secret"
    if secret.exists():
        check_private(secret)
        return parse_certificate(secret.read_text(), str(secret))
    public, secret_key = zmq.curve_keypair()
    keys = KeyPair(public, secret_key)
    _write_private(secret, _certificate(keys, secret=True, meta={"name": "hookbus broker"}, comment="the broker's secret key"))
    _write_private(folder / "broker.key", _certificate(keys, secret=False, meta={"name": "hookbus broker"},
                                                       comment="the broker's public key"))
    return keys


def _issue(folder: Path, role: str, name: str, dest: Path, server: KeyPair) -> None:
    """A new client key pair for `role`: its public key into the broker's list, its credential to `dest`."""
    public, secret = zmq.curve_keypair()
    client = KeyPair(public, secret)
    _write_private(dest, credential_text(role, client, server.public))
    _write_private(folder / role / f"{name}.key",
                   _certificate(client, secret=False, meta={"role": role, "name": name}, comment=f"may {role}"))


def grant(bus: BusSettings, role: str, dest: Path, user: str | None = None) -> Path:
    """Write a new `role` credential to `dest` (mode 0600, owned by `user` when
    given: that needs root) and let the broker accept it. Return its public-key file.

    Raise ValueError for an unknown role or user, OSError when `dest` cannot be written."""
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    uid = gid = None
    if user is not None:
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"--user: no such user {user!r}") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    server = ensure_keys(bus)
    folder = keys_dir(bus)
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{user or 'granted'}-{dest.name}")[:40]
    name = next(n for n in (f"{base}-{i}" for i in range(1, 10_000)) if not (folder / role / f"{n}.key").exists())
    dest.parent.mkdir(parents=True, exist_ok=True)
    _issue(folder, role, name, dest, server)
    public = folder / role / f"{name}.key"
    if os.geteuid() == 0:  # run by root for hookbus's user: the broker must still read its own lists
        owner = folder.stat()
        os.chown(public, owner.st_uid, owner.st_gid)
    if uid is not None and gid is not None:
        os.chown(dest, uid, gid)
    return public


def key_folders(bus: BusSettings) -> list[tuple[Path, str]]:
    """Where the broker finds the client public keys it accepts, and their role:
    data_dir/keys/{publish,operate}/*.key; and, from bus.curve_authorized_keys,
    its publish/*.key (publish only), its own *.key and operate/*.key (operate:
    the cross-host subscribers it was made for). Operate, read last, wins."""
    folders = [(keys_dir(bus) / PUBLISH, PUBLISH), (keys_dir(bus) / OPERATE, OPERATE)]
    if bus.curve_authorized_keys is not None:
        extra = bus.curve_authorized_keys
        folders += [(extra / PUBLISH, PUBLISH), (extra, OPERATE), (extra / OPERATE, OPERATE)]
    return folders


def authorized(bus: BusSettings) -> dict[bytes, str]:
    """Every client public key the broker accepts (z85) → its role."""
    found: dict[bytes, str] = {}
    for folder, role in key_folders(bus):
        for key in _public_keys(folder):
            found[key] = role
    return found


def _public_keys(folder: Path) -> list[bytes]:
    keys = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in sorted(folder.glob("*.key")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                keys += [m.encode() for m in _PUBLIC.findall(path.read_text())]
    return keys


# -- the clients' side ----------------------------------------------------------------

def find_credential(bus: BusSettings) -> Credential:
    """The credential this client talks to the broker with: the configured keys
    (bus.curve_public_key + curve_client_key), else the file bus.credential, else
    $HOOKBUS_CREDENTIAL, else the data_dir's own (operate, else publish).

    Raise NoCredential saying where it looked."""
    if bus.curve_public_key:
        if not bus.curve_client_key:
            raise ValueError("bus.curve_client_key: required when bus.curve_public_key is set")
        client = parse_certificate(bus.curve_client_key, "bus.curve_client_key")
        return Credential(OPERATE, client, bus.curve_public_key.encode())
    if bus.credential is not None:
        return load_credential(bus.credential, "bus.credential")
    if os.environ.get(ENV):
        return load_credential(Path(os.environ[ENV]), f"${ENV}")
    for role in (OPERATE, PUBLISH):
        path = keys_dir(bus) / f"{role}.credential"
        if os.access(path, os.R_OK):
            return load_credential(path)
    raise NoCredential(f"no credential for the broker: none in {keys_dir(bus)} (it is written when the broker first "
                       f"starts, readable by its user only), no bus.credential, no ${ENV}; "
                       "another user needs one from `hookbus grant publish --to FILE`")
