"""HTTP headers between sites, runs and the coordinator, and the signed site request.

A site signs ``method, path?query, SHA-256(body), timestamp, nonce, site id`` (one line
each) under the context ``fedge-request-v1``. This module is the one definition of those
bytes and of the headers that carry them: the site builds them with :func:`sign_request`,
the coordinator reads them back with :func:`parse_site_request` and checks the signature
against the key it enrolled. The signature itself is ``fedge.security``'s composite
(ML-DSA-65 + Ed25519) key; nothing here does cryptography.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from fedge.core._errors import SiteRequestError

REQUEST_CONTEXT: Final = b"fedge-request-v1"
#: What the coordinator's signature over an action's body is bound to (docs/live-loop.md).
ACTION_CONTEXT: Final = b"fedge-action-v1"
SITE_HEADER: Final = "X-Fedge-Site"
TIMESTAMP_HEADER: Final = "X-Fedge-Timestamp"
NONCE_HEADER: Final = "X-Fedge-Nonce"
SIGNATURE_HEADER: Final = "X-Fedge-Signature"
#: A federation run's report token (the coordinator issues one per run it starts).
RUN_TOKEN_HEADER: Final = "X-Fedge-Run-Token"
NONCE_MIN_CHARS: Final = 16
NONCE_MAX_CHARS: Final = 64


class RequestSigningKey(Protocol):
    def sign(self, message: bytes, context: bytes = b"") -> bytes: ...


class RequestSigner(Protocol):
    """What signs a site request: ``fedge.security.SiteIdentity`` is one."""

    @property
    def site_id(self) -> bytes: ...

    @property
    def signing_key(self) -> RequestSigningKey: ...


def request_message(
    method: str, target: str, body: bytes, timestamp: str, nonce: str, site_id: str
) -> bytes:
    """The signed bytes; ``target`` is the path with its query string."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), target, digest, timestamp, nonce, site_id)).encode()


def sign_request(
    signer: RequestSigner,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request from ``signer`` (the site's side)."""
    timestamp = f"{time.time() if now is None else now:.3f}"
    nonce = os.urandom(16).hex() if nonce is None else nonce
    site_id = signer.site_id.hex()
    signature = signer.signing_key.sign(
        request_message(method, target, body, timestamp, nonce, site_id), REQUEST_CONTEXT
    )
    return {
        SITE_HEADER: site_id,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
    }


@dataclass(frozen=True)
class SiteRequest:
    """A site request's authentication, parsed and fresh but not yet verified."""

    site_id: bytes
    site_hex: str
    sent_at: float
    nonce: str
    signature: bytes
    message: bytes  # what the signature must cover


def parse_site_request(
    *,
    method: str,
    target: str,
    body: bytes,
    headers: Mapping[str, str | None],
    window: float,
    now: float | None = None,
) -> SiteRequest:
    """The request's headers, checked for shape and a timestamp within ``window`` seconds;
    the caller verifies ``signature`` over ``message`` and refuses a nonce seen before."""
    site_hex, timestamp, nonce, signature_b64 = (
        headers.get(h) for h in (SITE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
    )
    if not (site_hex and timestamp and nonce and signature_b64):
        raise SiteRequestError(
            f"site requests need {SITE_HEADER}, {TIMESTAMP_HEADER}, {NONCE_HEADER} "
            f"and {SIGNATURE_HEADER} headers"
        )
    try:
        site_id = bytes.fromhex(site_hex)
        sent_at = float(timestamp)
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SiteRequestError("malformed site authentication headers") from exc
    if not NONCE_MIN_CHARS <= len(nonce) <= NONCE_MAX_CHARS:
        raise SiteRequestError(
            f"the nonce must be {NONCE_MIN_CHARS} to {NONCE_MAX_CHARS} characters"
        )
    now = time.time() if now is None else now
    if not (math.isfinite(sent_at) and abs(now - sent_at) <= window):
        raise SiteRequestError("request timestamp is outside the replay window")
    message = request_message(method, target, body, timestamp, nonce, site_hex)
    return SiteRequest(site_id, site_hex, sent_at, nonce, signature, message)
