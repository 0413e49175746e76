"""Who is calling: operator API keys (hashed, with a role) and signed site requests.

A site signs its request as ``fedge.core`` defines (``sign_request``) with its composite
(ML-DSA-65 + Ed25519) key. The coordinator parses the headers with the same module,
verifies the signature against the site's enrolled key, and accepts a timestamp within the
replay window and each (site, nonce) once: nonces are stored in the database until the
request they came with falls out of the window, so a replay is refused across restarts too.
A request stamped ahead of the coordinator's clock stays valid until ``sent_at + window``,
so its nonce is kept until then, not merely until ``now + window``.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, delete
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col, select

from fedge.coordinator._db import GroupWriter
from fedge.coordinator._errors import ForbiddenError, UnauthenticatedError
from fedge.coordinator._schema import ApiKey, RequestNonce, Role
from fedge.core import REQUEST_CONTEXT, SiteRequest, SiteRequestError, parse_site_request
from fedge.security import InvalidSignature, KeyDirectory, SecurityError, SitePublicKeys

API_KEY_PREFIX: Final = "fedge-op."
#: The size of every column that names who did something (``created_by``, ``promoted_by``,
#: the audit log's ``actor``).
ACTOR_CHARS: Final = 64


def fit_actor(actor: str, size: int = ACTOR_CHARS) -> str:
    """``actor`` as a ``size``-character column holds it: unchanged when it fits, else its
    first characters, "…" and 8 hex digits of its SHA-256, so the same name always reads
    the same and two long names that share their start stay apart."""
    if len(actor) <= size:
        return actor
    digest = hashlib.sha256(actor.encode()).hexdigest()[:8]
    return f"{actor[: size - 9]}…{digest}"


def new_api_key() -> str:
    """A fresh operator key; only its hash is stored."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """SHA-256 is enough: keys carry 256 random bits, nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """Who the records name: fits the 64-character columns whatever the key's name."""
        return fit_actor(f"operator:{self.name}")


def authenticate_operator(engine: Engine, key: str | None) -> Operator:
    """The operator owning ``key``; missing, unknown or revoked keys raise."""
    if not key:
        raise UnauthenticatedError("an operator API key is required (X-API-Key header)")
    with Session(engine) as session:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash(key))).first()
    if row is None or row.revoked:
        raise UnauthenticatedError("unknown or revoked API key")
    return Operator(row.name, row.role)


class OperatorCache:
    """Valid keys seen in the last ``ttl`` seconds, by hash: the database lookup cost
    0.7 ms of every operator request. A revocation through this process clears the cache at
    once; one made by another worker process takes effect within ``ttl``."""

    def __init__(self, engine: Engine, ttl: float = 2.0) -> None:
        self.engine, self.ttl = engine, ttl
        self._known: dict[str, tuple[Operator, float]] = {}

    def cached(self, key: str | None) -> Operator | None:
        if not key:
            return None
        hit = self._known.get(key_hash(key))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def authenticate(self, key: str | None) -> Operator:
        hit = self.cached(key)
        if hit is not None:
            return hit
        operator = authenticate_operator(self.engine, key)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key_hash(key or "")] = (operator, time.monotonic() + self.ttl)
        return operator

    def clear(self) -> None:
        self._known.clear()


def require_role(operator: Operator, role: Role) -> None:
    if operator.role.rank < role.rank:
        raise ForbiddenError(
            f"this call needs the {role.value} role, key has {operator.role.value}"
        )


def verify_site_request(
    engine: Engine,
    directory: KeyDirectory,
    *,
    method: str,
    target: str,
    body: bytes,
    headers: dict[str, str | None],
    window: float,
    now: float | None = None,
) -> bytes:
    """The site id of a correctly signed, fresh, first-seen request; anything else raises."""
    now = time.time() if now is None else now
    try:
        request = parse_site_request(
            method=method, target=target, body=body, headers=headers, window=window, now=now
        )
    except SiteRequestError as exc:
        raise UnauthenticatedError(str(exc)) from exc
    try:
        keys = directory.keys(request.site_id)
        try:
            keys.verify_key().verify(request.signature, request.message, REQUEST_CONTEXT)
        except InvalidSignature:  # a site that rotated may sign with its previous key
            previous = directory.record(request.site_id).previous
            if previous is None:
                raise
            keys = directory.keys(request.site_id, previous.generation, now)  # within grace
            keys.verify_key().verify(request.signature, request.message, REQUEST_CONTEXT)
    except SecurityError as exc:
        raise UnauthenticatedError(f"site request refused: {exc}") from exc
    # Valid until sent_at + window, which is later than now + window for a fast site clock.
    until = max(now, request.sent_at) + window
    _remember_nonce(engine, request.site_hex, request.nonce, until, now)
    return request.site_id


def _remember_nonce(engine: Engine, site_hex: str, nonce: str, until: float, now: float) -> None:
    with Session(engine) as session:
        session.connection().execute(delete(RequestNonce).where(col(RequestNonce.expires_at) < now))
        session.add(RequestNonce(site_id=site_hex, nonce=nonce, expires_at=until))
        try:
            session.commit()
        except IntegrityError as exc:
            raise UnauthenticatedError("replayed request (nonce already used)") from exc


# --- signed site requests, group-committed ------------------------------------------------

#: Writes an admitted request carries, run in the transaction that stores its nonce: given
#: the (site hex, payload) of every admitted request of one kind, one result per request.
GroupWrite = Callable[[Connection, Sequence[tuple[str, Any]], float], Sequence[Any]]

_PURGE_SECONDS = 1.0  # expired nonces are deleted at most this often per process
TOUCH_SECONDS: Final = 5.0  # a site's last_seen is written at most this often per process


@dataclass(frozen=True)
class SiteKeys:
    """An enrolled site's keys as this process last read them: the current ones, and the
    previous ones while their rotation grace lasts."""

    keys: SitePublicKeys
    generation: int
    previous: SitePublicKeys | None = None
    previous_until: float = 0.0


class StaleKeysError(UnauthenticatedError):
    """The site's keys changed since this process cached them: read them again and retry."""


@dataclass
class _Admission:
    request: SiteRequest
    generation: int
    previous: bool  # signed with the previous keys: their grace must still last
    expires_at: float
    write: GroupWrite | None
    payload: Any
    done: Future[Any]


class SiteRequests(GroupWriter[_Admission]):
    """Admits signed site requests: the signature is checked in the caller's thread
    against cached keys, and one writer thread stores the nonces of every request waiting
    (with what they carry, see ``GroupWrite``) in one transaction.

    Per request the old path cost a site lookup, a nonce transaction, a ``last_seen``
    transaction and the forecast transaction (~6 ms of CPU). Here the same transaction
    that inserts a group's nonces (``ON CONFLICT DO NOTHING``: the database, shared by
    every worker, decides which request was first) also re-reads the sites' status and key
    generation, so a revocation or rotation committed by any worker refuses every request
    admitted after it, even though the parsed keys are cached. Nothing is answered before
    its commit; a failed commit fails exactly the requests it carried.
    """

    #: A group waits this long at most for the requests still being verified.
    linger_s = 0.002

    def __init__(self, engine: Engine, directory: KeyDirectory, window: float) -> None:
        super().__init__(engine, "site-requests")
        self._arriving = 0  # requests between ``arriving`` and ``submit`` (or their failure)
        self._arriving_lock = threading.Lock()
        self.engine, self.directory, self.window = engine, directory, window
        self._keys: dict[bytes, SiteKeys] = {}
        self._touched: dict[str, float] = {}
        self._touch: list[str] = []  # the sites the open transaction touches
        self._purged = 0.0
        self._marker = "%s" if engine.dialect.paramstyle in ("format", "pyformat") else "?"

    # --- in the caller's thread ----------------------------------------------------------

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around one request's checks: while any are under way, the writer holds its group
        open a little (``linger_s``) so their nonces join the same commit. Under load the
        group's commit then serves several requests instead of one or two."""
        with self._arriving_lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._arriving_lock:
                self._arriving -= 1

    def _more_coming(self) -> bool:
        return self._arriving > 0

    def parse(
        self,
        *,
        method: str,
        target: str,
        body: bytes,
        headers: Mapping[str, str | None],
        now: float | None = None,
    ) -> SiteRequest:
        try:
            return parse_site_request(
                method=method, target=target, body=body, headers=headers, window=self.window,
                now=now,
            )  # fmt: skip
        except SiteRequestError as exc:
            raise UnauthenticatedError(str(exc)) from exc

    def cached_keys(self, site_id: bytes) -> SiteKeys | None:
        return self._keys.get(site_id)

    def load_keys(self, site_id: bytes) -> SiteKeys:
        """The site's current keys from the database (blocking); unknown or revoked raise."""
        try:
            record = self.directory.record(site_id)
            keys = self.directory.keys(site_id)
            previous = None
            if record.previous is not None:
                previous = self.directory.keys(site_id, record.previous.generation, 0.0)
        except SecurityError as exc:
            self._keys.pop(site_id, None)
            raise UnauthenticatedError(f"site request refused: {exc}") from exc
        if len(self._keys) > 100_000:
            self._keys.clear()
        found = SiteKeys(keys, keys.generation, previous, record.previous_until)
        self._keys[site_id] = found
        return found

    def verify(self, request: SiteRequest, keys: SiteKeys, now: float | None = None) -> bool:
        """Check the signature; True when the previous keys made it (within their grace)."""
        try:
            try:
                keys.keys.verify_key().verify(request.signature, request.message, REQUEST_CONTEXT)
                return False
            except InvalidSignature:  # a site that rotated may sign with its previous key
                now = time.time() if now is None else now
                if keys.previous is None or now >= keys.previous_until:
                    raise
                keys.previous.verify_key().verify(
                    request.signature, request.message, REQUEST_CONTEXT
                )
                return True
        except SecurityError as exc:
            raise UnauthenticatedError(f"site request refused: {exc}") from exc

    def submit(
        self,
        request: SiteRequest,
        keys: SiteKeys,
        previous: bool = False,
        write: GroupWrite | None = None,
        payload: Any = None,
        now: float | None = None,
    ) -> Future[Any]:
        """Queue a request verified with ``keys`` (``previous``: with their previous keys);
        resolves (to ``write``'s result for it) once its nonce and payload are committed,
        or fails with ``UnauthenticatedError`` (replayed nonce, revoked site) or
        ``StaleKeysError`` (the keys changed since they were cached)."""
        now = time.time() if now is None else now
        # Valid until sent_at + window, which is later than now + window for a fast clock.
        until = max(now, request.sent_at) + self.window
        done: Future[Any] = Future()
        self._put(_Admission(request, keys.generation, previous, until, write, payload, done))
        return done

    def forget(self, site_id: bytes) -> None:
        """Drop the cached keys (after a revocation or rotation through this process)."""
        self._keys.pop(site_id, None)

    # --- the writer thread ---------------------------------------------------------------

    def _commit(self, pending: list[_Admission]) -> None:
        now = time.time()
        try:
            with self._turn.held():
                # The writer keeps its connection: a pool checkout per commit cost a
                # PostgreSQL pre-ping round trip each time.
                if self._connection is None:
                    self._connection = self.engine.connect()
                self._touch = []
                with self._connection.begin():
                    outcome = self._admit(self._connection, pending, now)
        except Exception as exc:  # every waiting request learns why, none is left hanging
            if self._connection is not None:
                with contextlib.suppress(Exception):  # a broken link: reconnect next time
                    self._connection.close()
                self._connection = None
            for admission in pending:
                admission.done.set_exception(exc)
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        for site in self._touch:
            self._touched[site] = now
        for admission, result in zip(pending, outcome, strict=True):
            if isinstance(result, UnauthenticatedError):
                admission.done.set_exception(result)
            else:
                admission.done.set_result(result)

    def _in(self, count: int) -> str:
        return "(" + ", ".join([self._marker] * count) + ")"

    def _admit(self, connection: Connection, pending: list[_Admission], now: float) -> list[Any]:
        """In the open transaction: refuse what must be, store nonces and payloads; one
        result (or the ``UnauthenticatedError``) per request."""
        outcome: list[Any] = [None] * len(pending)
        if now >= self._purged + _PURGE_SECONDS:
            _driver_sql(
                connection, f"DELETE FROM request_nonces WHERE expires_at < {self._marker}", (now,)
            )
            self._purged = now
        sites = sorted({a.request.site_hex for a in pending})
        found = {
            site: (generation, str(status).upper(), previous_until)
            for site, generation, status, previous_until in _driver_sql(
                connection,
                "SELECT id, generation, status, previous_until FROM sites "
                f"WHERE id IN {self._in(len(sites))}",
                tuple(sites),
            )
        }
        first: dict[tuple[str, str], int] = {}
        for i, a in enumerate(pending):
            site = a.request.site_hex
            state = found.get(site)
            if state is None or state[1] != "ACTIVE" or state[0] != a.generation:
                self._keys.pop(a.request.site_id, None)  # the next request reads them anew
            if state is None:
                outcome[i] = UnauthenticatedError(
                    f"site request refused: site {site} is not enrolled"
                )
            elif state[1] != "ACTIVE":
                outcome[i] = UnauthenticatedError(f"site request refused: site {site} is revoked")
            elif state[0] != a.generation:
                outcome[i] = StaleKeysError(
                    f"site request refused: the keys of site {site} changed; retry"
                )
            elif a.previous and now >= state[2]:
                outcome[i] = UnauthenticatedError(
                    f"site request refused: the previous key of site {site} is past its grace"
                )
            elif (site, a.request.nonce) in first:
                outcome[i] = _replayed()
            else:
                first[(site, a.request.nonce)] = i
        if first:
            rows = [(site, nonce, pending[i].expires_at) for (site, nonce), i in first.items()]
            values = ", ".join([self._in(3)] * len(rows))
            stored = {
                (site, nonce)
                for site, nonce in _driver_sql(
                    connection,
                    "INSERT INTO request_nonces (site_id, nonce, expires_at) VALUES "
                    f"{values} ON CONFLICT DO NOTHING RETURNING site_id, nonce",
                    tuple(v for row in rows for v in row),
                )
            }
            for key, i in first.items():
                if key not in stored:
                    outcome[i] = _replayed()
        admitted = [i for i in first.values() if not isinstance(outcome[i], Exception)]
        touch = sorted(
            {
                pending[i].request.site_hex
                for i in admitted
                if self._touched.get(pending[i].request.site_hex, 0.0) + TOUCH_SECONDS <= now
            }
        )
        if touch:
            _driver_sql(
                connection,
                f"UPDATE sites SET last_seen = {self._marker} WHERE id IN {self._in(len(touch))}",
                (now, *touch),
            )
            self._touch = touch  # remembered once committed
        by_write: dict[GroupWrite, list[int]] = {}
        for i in admitted:
            write = pending[i].write
            if write is not None:
                by_write.setdefault(write, []).append(i)
        for write, indices in by_write.items():
            items = [(pending[i].request.site_hex, pending[i].payload) for i in indices]
            for i, result in zip(indices, write(connection, items, now), strict=True):
                outcome[i] = result
        return outcome


def _driver_sql(connection: Connection, statement: str, params: tuple[Any, ...]) -> list[Any]:
    """``statement``'s rows (none for one that returns nothing), run on the driver's own
    cursor inside ``connection``'s transaction: SQLAlchemy's execution path (events, result
    metadata) cost more than SQLite's running the statement. A driver error is raised as
    the SQLAlchemy error it would have been, so the API still answers it with a 503."""
    dialect = connection.dialect
    error: type[Exception] = dialect.loaded_dbapi.Error
    cursor: Any = connection.connection.cursor()
    try:
        cursor.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except error as exc:
        raise DBAPIError.instance(statement, params, exc, error, dialect=dialect) from exc
    finally:
        cursor.close()


def _replayed() -> UnauthenticatedError:
    return UnauthenticatedError("replayed request (nonce already used)")
