"""The hello that binds a Flower node to an enrolled site, before the node is sent a model.

The server asks each new node with a fresh nonce, signed by the server's identity; the
node checks that signature against the coordinator's enrolled public keys (so it only
ever signs for the coordinator it enrolled with) and answers with a statement signed by
its site identity: its site id and key generation, the node id, the run and the nonce.
The server verifies that statement against the key directory. Nothing the node claims
outside the signed statement (a ``site-index`` in its node config, say) binds anything,
and a replayed answer fails: it names another nonce, node or run.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

from flwr.app import ConfigRecord, Message, RecordDict

from fedge.federation._errors import FederationError, UpdateRejectedError
from fedge.security import (
    InvalidSignature,
    KeyDirectory,
    RevokedSender,
    SecurityError,
    SiteIdentity,
    SitePublicKeys,
    UnknownSender,
)

HELLO: Final = "fedge-hello"
NONCE_SIZE: Final = 32
CONTEXT: Final = b"fedge-hello-v1"
_IDS: Final = struct.Struct(">QQI")  # run id, node id, key generation


def _statement(
    direction: bytes, run_id: int, node_id: int, nonce: bytes, signer: bytes, generation: int
) -> bytes:
    return b"fedge hello v1|" + direction + _IDS.pack(run_id, node_id, generation) + nonce + signer


@dataclass(frozen=True)
class Challenge:
    """One outstanding hello: what the node's answer must name."""

    node_id: int
    run_id: int
    nonce: bytes


def hello_message(
    identity: SiteIdentity, run_id: int, node_id: int
) -> tuple[RecordDict, Challenge]:
    """The server's hello for ``node_id``: a fresh nonce, signed by the server."""
    nonce = os.urandom(NONCE_SIZE)
    signed = _statement(b"ask ", run_id, node_id, nonce, identity.site_id, identity.generation)
    record = ConfigRecord(
        {
            "nonce": nonce,
            "server": identity.site_id,
            "server-gen": identity.generation,
            "sig": identity.signing_key.sign(signed, CONTEXT),
        }
    )
    return RecordDict({HELLO: record}), Challenge(node_id, run_id, nonce)


def answer_hello(
    msg: Message, run_id: int, node_id: int, identity: SiteIdentity, coordinator: SitePublicKeys
) -> Message:
    """The site's answer; a hello not signed by the enrolled coordinator gets none."""
    record = msg.content.config_records.get(HELLO)
    if record is None:
        raise FederationError("hello carries no fedge-hello record")
    nonce, server, gen, sig = (record.get(k) for k in ("nonce", "server", "server-gen", "sig"))
    if not (
        isinstance(nonce, bytes)
        and len(nonce) == NONCE_SIZE
        and isinstance(server, bytes)
        and isinstance(gen, int)
        and isinstance(sig, bytes)
    ):
        raise FederationError("malformed hello")
    if server != coordinator.site_id or gen != coordinator.generation:
        raise FederationError("hello from a server that is not the enrolled coordinator")
    signed = _statement(b"ask ", run_id, node_id, nonce, server, gen)
    try:
        coordinator.verify_key().verify(sig, signed, CONTEXT)
    except SecurityError as exc:
        raise FederationError(f"hello not signed by the enrolled coordinator: {exc}") from exc
    answer = _statement(
        b"site", run_id, node_id, nonce + server, identity.site_id, identity.generation
    )
    reply = ConfigRecord(
        {
            "site-id": identity.site_id,
            "gen": identity.generation,
            "sig": identity.signing_key.sign(answer, CONTEXT),
        }
    )
    return Message(content=RecordDict({HELLO: reply}), reply_to=msg)


def verify_answer(
    reply: Message, challenge: Challenge, server_id: bytes, directory: KeyDirectory
) -> bytes:
    """The enrolled site id the node proved it holds, or :class:`UpdateRejectedError`."""
    if reply.has_error():
        raise UpdateRejectedError("client_error", str(reply.error.reason))
    if reply.metadata.src_node_id != challenge.node_id:
        raise UpdateRejectedError("bad_hello", "answer from another node")
    record = reply.content.config_records.get(HELLO)
    site_id = record.get("site-id") if record is not None else None
    gen = record.get("gen") if record is not None else None
    sig = record.get("sig") if record is not None else None
    if not (isinstance(site_id, bytes) and isinstance(gen, int) and isinstance(sig, bytes)):
        raise UpdateRejectedError("bad_hello", "answer is not a signed hello")
    try:
        keys = directory.keys(site_id, gen)
    except UnknownSender as exc:
        raise UpdateRejectedError("unenrolled", str(exc)) from exc
    except RevokedSender as exc:
        raise UpdateRejectedError("revoked", str(exc)) from exc
    signed = _statement(
        b"site", challenge.run_id, challenge.node_id, challenge.nonce + server_id, site_id, gen
    )
    try:
        keys.verify_key().verify(sig, signed, CONTEXT)
    except InvalidSignature as exc:
        raise UpdateRejectedError("bad_hello", f"hello signature: {exc}") from exc
    except SecurityError as exc:
        raise UpdateRejectedError("bad_hello", str(exc)) from exc
    return site_id
