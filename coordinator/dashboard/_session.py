"""The dashboard's session: a signed cookie that names an API key, never holds it.

A login checks the operator's API key exactly as the API does (``Coordinator.operator``)
and answers a cookie carrying the key's row id, 16 hex digits of its hash, the session's
CSRF token and its expiry, signed with HMAC-SHA256 under a key derived from the
coordinator's KEK. Every request reads the key's row again: a revoked or replaced key ends
its sessions at once, and the role is always the key's current one. The cookie is the
same on every worker process (no server-side state), HttpOnly, SameSite=Strict, and
Secure when the dashboard is served over TLS. A logout clears it from the browser and
makes the process that served it refuse the cookie; with ``--workers N`` another worker
would take a copied cookie until it expires (``dashboard_session_seconds``) or its key is
revoked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine
from sqlmodel import Session, select

from fedge.coordinator._access import Operator, key_hash
from fedge.coordinator._schema import ApiKey, Role

SESSION_COOKIE: Final = "fedge_session"
#: Before a login: the login form's CSRF token, signed, so a login cannot be forged either.
LOGIN_COOKIE: Final = "fedge_login"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
LOGIN_FORM_SECONDS: Final = 3600.0
_HASH_DIGITS: Final = 16


class SessionError(Exception):
    """A missing, malformed, forged, expired or revoked session (the caller logs in)."""


class CsrfError(Exception):
    """A state-changing request without the session's CSRF token."""


@dataclass(frozen=True)
class DashboardSession:
    """Who is logged in, with which role (the key's current one), and the CSRF token."""

    operator: Operator
    key_id: int
    csrf: str
    expires_at: float

    @property
    def role(self) -> Role:
        return self.operator.role


class SessionSigner:
    """Signs and opens the dashboard's cookies (session and login form)."""

    def __init__(self, kek: bytes, session_seconds: float = 8 * 3600.0) -> None:
        self.session_seconds = session_seconds
        self._key = hmac.new(kek, b"fedge dashboard session v1", hashlib.sha256).digest()
        #: Sessions logged out through this process (by CSRF token), until they expire.
        self._ended: dict[str, float] = {}

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def seal(self, payload: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
        mac = base64.urlsafe_b64encode(self._mac(body))
        return f"{body.decode().rstrip('=')}.{mac.decode().rstrip('=')}"

    def open(self, value: str | None, kind: str, now: float | None = None) -> dict[str, Any]:
        """The payload of a cookie this signer sealed for ``kind``, not yet expired."""
        if not value:
            raise SessionError("not logged in")
        body, _, mac = value.partition(".")
        try:
            raw_body = body.encode()
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise SessionError("a malformed session cookie") from exc
        padded = raw_body + b"=" * (-len(raw_body) % 4)
        if not hmac.compare_digest(given, self._mac(padded)):
            raise SessionError("a session cookie with a bad signature")
        try:
            payload = json.loads(base64.urlsafe_b64decode(padded))
        except (binascii.Error, ValueError) as exc:
            raise SessionError("a malformed session cookie") from exc
        if not isinstance(payload, dict) or payload.get("t") != kind:
            raise SessionError("not a session cookie")
        expires = payload.get("e")
        if not isinstance(expires, int | float):
            raise SessionError("a malformed session cookie")
        if (time.time() if now is None else now) >= expires:
            raise SessionError("the session has expired; log in again")
        return payload

    # --- the login form ------------------------------------------------------------------

    def login_form(self, now: float | None = None) -> tuple[str, str]:
        """A fresh login CSRF token and the cookie that vouches for it."""
        token = secrets.token_urlsafe(24)
        expires = (time.time() if now is None else now) + LOGIN_FORM_SECONDS
        return token, self.seal({"t": "login", "c": token, "e": expires})

    def check_login_form(self, cookie: str | None, token: str | None) -> None:
        try:
            payload = self.open(cookie, "login")
        except SessionError as exc:
            raise CsrfError("the login form has expired; load it again") from exc
        if not token or not hmac.compare_digest(str(payload.get("c")), token):
            raise CsrfError("the login form's token does not match; load it again")

    # --- the session ---------------------------------------------------------------------

    def issue(self, engine: Engine, operator: Operator, key: str) -> tuple[str, float]:
        """The session cookie for a key ``Coordinator.operator`` has just accepted."""
        digest = key_hash(key)
        with Session(engine) as session:
            row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
        if row is None or row.id is None or row.revoked:
            raise SessionError("unknown or revoked API key")
        expires = time.time() + self.session_seconds
        payload = {
            "t": "session",
            "k": row.id,
            "h": digest[:_HASH_DIGITS],
            "c": secrets.token_urlsafe(24),
            "e": expires,
        }
        return self.seal(payload), expires

    def session(self, engine: Engine, cookie: str | None) -> DashboardSession:
        """The logged-in operator, read from the key's current row."""
        payload = self.open(cookie, "session")
        key_id, digest, csrf = payload.get("k"), payload.get("h"), payload.get("c")
        if not isinstance(key_id, int) or not isinstance(digest, str) or not isinstance(csrf, str):
            raise SessionError("a malformed session cookie")
        with Session(engine) as session:
            row = session.get(ApiKey, key_id)
        if row is None or row.revoked or not hmac.compare_digest(row.key_hash[:16], digest):
            raise SessionError("the API key of this session was revoked; log in again")
        if csrf in self._ended:
            raise SessionError("this session was logged out; log in again")
        return DashboardSession(Operator(row.name, row.role), key_id, csrf, float(payload["e"]))

    def end(self, session: DashboardSession) -> None:
        """Logout: this process refuses the session's cookie from now on, even a copy."""
        now = time.time()
        if len(self._ended) > 10_000:
            self._ended = {c: e for c, e in self._ended.items() if e > now}
        self._ended[session.csrf] = session.expires_at


def check_csrf(session: DashboardSession, token: str | None) -> None:
    """Refuse a state change whose form field or header lacks the session's token."""
    if not token or not hmac.compare_digest(session.csrf, token):
        raise CsrfError("missing or wrong CSRF token; reload the page and try again")


__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "CsrfError",
    "DashboardSession",
    "SessionError",
    "SessionSigner",
    "check_csrf",
]
