"""The sealed channel between the server and each site, one per (site, run).

First contact (the first message the server sends a site in a run) carries a KEMTLS
handshake init from the server (initiator) and the global model in a one-shot envelope,
signed by the server and sealed to the site's static key. The site answers in the same
reply: the handshake response, a fresh 32-byte *run secret* it chose, and its update,
both sealed by the handshake session. From then on both sides derive, per round and
message kind, a pair of directional keys from the run secret and exchange ordinary
40-byte-overhead session envelopes.

Why a run secret and per-round keys: a site's client runs in whichever worker process
(or restarted host) gets the message, so the site's side of the session must live on
disk, not in a Python object; per-round keys make every (round, kind, direction) use a
fresh AEAD key whose sequence numbers start at 0, and the site records the last
(round, kind) it sealed so that a key is never used twice for different plaintexts.
The state file holds a secret: on a real host it belongs under the same protection as
the site's key file (docs/compression.md, "Channel").
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fedge.federation._errors import FederationError, UpdateRejectedError
from fedge.security import (
    ContentType,
    Initiator,
    KeyDirectory,
    OneShotOpener,
    OneShotSealer,
    Responder,
    SecurityError,
    Session,
    SiteIdentity,
    SitePublicKeys,
    Suite,
    get_provider,
)

TRAIN: Final = 1
EVALUATE: Final = 2
CHANNEL_FILE: Final = "channel.json"
RUN_SECRET_SIZE: Final = 32
_ROUND_INFO: Final = struct.Struct(">4sIB")  # direction label, round, kind


def _round_session(
    run_secret: bytes, peer: bytes, server_round: int, kind: int, server_side: bool
) -> Session:
    provider = get_provider()
    down = provider.hkdf(run_secret, b"", _ROUND_INFO.pack(b"s2c ", server_round, kind), 32)
    up = provider.hkdf(run_secret, b"", _ROUND_INFO.pack(b"c2s ", server_round, kind), 32)
    sid = provider.hkdf(run_secret, b"", b"fedge v1 channel id", 8)
    return Session(
        session_id=sid,
        peer=peer,
        suite=Suite.XWING_AES256GCM,
        send_secret=down if server_side else up,
        receive_secret=up if server_side else down,
        provider=provider,
    )


def envelope_round(envelope: bytes) -> int:
    """The round id in a session envelope's authenticated header (bytes 4..8)."""
    if len(envelope) < 8:
        raise UpdateRejectedError("invalid_envelope", "envelope shorter than its header")
    return int.from_bytes(envelope[4:8])


def channel_id(run_secret: bytes) -> str:
    return hashlib.sha3_256(b"fedge channel|" + run_secret).hexdigest()[:16]


# --- server side ------------------------------------------------------------------------


@dataclass
class _SiteLink:
    keys: SitePublicKeys
    run_secret: bytes | None = None
    pending: Initiator | None = None
    accepted: set[tuple[int, int]] = field(default_factory=set)


class ServerChannel:
    """The server's half of every site's channel; lives in the ServerApp process."""

    def __init__(self, identity: SiteIdentity, directory: KeyDirectory) -> None:
        self.identity = identity
        self.directory = directory
        self._sealer = OneShotSealer(identity)
        self._links: dict[int, _SiteLink] = {}
        self._nodes: dict[bytes, int] = {}  # site id -> its node: one node per site

    def bind(self, node_id: int, site_id: bytes) -> None:
        """Attach a Flower node to an enrolled site (from the site's hello)."""
        self._links[node_id] = _SiteLink(self.directory.keys(site_id))
        self._nodes[site_id] = node_id

    def unbind(self, node_id: int) -> None:
        """Forget a node that left the run (its site may come back as another node)."""
        link = self._links.pop(node_id, None)
        if link is not None and self._nodes.get(link.keys.site_id) == node_id:
            del self._nodes[link.keys.site_id]

    def node_of(self, site_id: bytes) -> int | None:
        """The node bound to ``site_id`` in this run, if any."""
        return self._nodes.get(site_id)

    def knows(self, node_id: int) -> bool:
        return node_id in self._links

    def bound_nodes(self) -> list[int]:
        return list(self._links)

    def site_id(self, node_id: int) -> bytes:
        return self._link(node_id).keys.site_id

    def _link(self, node_id: int) -> _SiteLink:
        link = self._links.get(node_id)
        if link is None:
            raise UpdateRejectedError("unknown_node", f"node {node_id} never introduced itself")
        return link

    def seal_down(
        self, node_id: int, server_round: int, kind: int, plaintext: bytes
    ) -> dict[str, bytes]:
        link = self._link(node_id)
        if link.run_secret is not None:
            s = _round_session(link.run_secret, link.keys.site_id, server_round, kind, True)
            return {"env": s.seal(plaintext, ContentType.GLOBAL_MODEL, server_round)}
        link.pending = Initiator(self.identity, link.keys, directory=self.directory)
        init = link.pending.start()
        env = self._sealer.seal(link.keys, plaintext, ContentType.GLOBAL_MODEL, server_round)
        return {"init": init, "oneshot": env}

    def open_up(
        self, node_id: int, server_round: int, kind: int, fields: dict[str, bytes]
    ) -> bytes:
        """The plaintext of a site's reply, or :class:`UpdateRejectedError` with the reason."""
        link = self._link(node_id)
        env = fields.get("env")
        if env is None:
            raise UpdateRejectedError("invalid_envelope", "reply carries no envelope")
        if envelope_round(env) != server_round:
            raise UpdateRejectedError("replayed", f"envelope of round {envelope_round(env)}")
        if (server_round, kind) in link.accepted:
            raise UpdateRejectedError("replayed", "second reply for this round")
        try:
            if "resp" in fields:
                if link.pending is None:
                    raise UpdateRejectedError(
                        "invalid_envelope", "handshake response not asked for"
                    )
                pending, link.pending = link.pending, None
                session = pending.finish(fields["resp"])
                secret = session.open(fields.get("secret", b"")).plaintext
                if len(secret) != RUN_SECRET_SIZE:
                    raise UpdateRejectedError("invalid_envelope", "run secret of the wrong size")
                opened = session.open(env)
                link.run_secret = bytes(secret)
            elif link.run_secret is None:
                raise UpdateRejectedError("no_session", "site answered without a handshake")
            else:
                s = _round_session(link.run_secret, link.keys.site_id, server_round, kind, True)
                opened = s.open(env)
        except SecurityError as exc:
            raise UpdateRejectedError(_reason(exc), str(exc)) from exc
        if opened.round_id != server_round:
            raise UpdateRejectedError("replayed", f"envelope of round {opened.round_id}")
        link.accepted.add((server_round, kind))
        return bytes(opened.plaintext)


def _reason(exc: SecurityError) -> str:
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


# --- site side --------------------------------------------------------------------------


class SiteChannel:
    """A site's half; state comes from and goes to ``site_dir`` on every message."""

    def __init__(self, identity: SiteIdentity, server: SitePublicKeys, site_dir: Path) -> None:
        self.identity = identity
        self.server = server
        self.dir = Path(site_dir)
        self._directory = KeyDirectory()
        self._directory.register(server)
        self._first: tuple[bytes, Session, bytes] | None = None

    @property
    def path(self) -> Path:
        return self.dir / CHANNEL_FILE

    def _state(self) -> dict[str, object]:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise FederationError("no channel with the server yet (site state lost?)") from None
        except (OSError, ValueError) as exc:
            raise FederationError(f"channel state {self.path} is unreadable: {exc}") from exc
        if not isinstance(state, dict):
            raise FederationError(f"channel state {self.path} is not an object")
        return state

    def _write(self, state: dict[str, object]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.path)

    def run_secret(self) -> bytes:
        return bytes.fromhex(str(self._state()["run_secret"]))

    def channel(self) -> str:
        return channel_id(self.run_secret())

    def open_down(self, server_round: int, kind: int, fields: dict[str, bytes]) -> bytes:
        if "init" in fields:
            replay = self.dir / "oneshot-replay.json"  # first contacts opened, across runs
            opener = OneShotOpener(self.identity, self._directory, state=replay)
            opened = opener.open(fields.get("oneshot", b""))
            if opened.sender != self.server.site_id or opened.round_id != server_round:
                raise FederationError("first-contact envelope is not this round's server's")
            response, session = Responder(self.identity, self._directory).respond(fields["init"])
            secret = os.urandom(RUN_SECRET_SIZE)
            self._write({"run_secret": secret.hex(), "sealed": [0, 0]})
            self._first = (response, session, secret)
            return bytes(opened.plaintext)
        env = fields.get("env")
        if env is None:
            raise FederationError("downlink carries no envelope")
        s = _round_session(self.run_secret(), self.server.site_id, server_round, kind, False)
        opened = s.open(env)
        if opened.round_id != server_round:
            raise FederationError(f"downlink of round {opened.round_id} in round {server_round}")
        return bytes(opened.plaintext)

    def seal_up(
        self, server_round: int, kind: int, plaintext: bytes, content_type: ContentType
    ) -> dict[str, bytes]:
        if self._first is not None:
            response, session, secret = self._first
            self._first = None
            state = self._state()
            state["sealed"] = [server_round, kind]
            self._write(state)
            return {
                "resp": response,
                "secret": session.seal(secret, ContentType.CONTROL, server_round),
                "env": session.seal(plaintext, content_type, server_round),
            }
        state = self._state()
        last = state.get("sealed", [0, 0])
        if not isinstance(last, list) or [server_round, kind] <= last:
            raise FederationError(f"round {server_round} kind {kind} was already sealed")
        state["sealed"] = [server_round, kind]
        self._write(state)  # before sealing: a crash can lose a reply, never reuse a key
        run_secret = bytes.fromhex(str(state["run_secret"]))
        s = _round_session(run_secret, self.server.site_id, server_round, kind, False)
        return {"env": s.seal(plaintext, content_type, server_round)}
