"""Actions from the coordinator: verified, recorded, acknowledged, handed to the RAN.

The coordinator decides; the site's RAN side acts on what the agent publishes on the
site's broker. Between the two, the agent is the gate: an action is in force only if the
coordinator's key signed it, it is for this site, still valid and newer than the last
accepted one (docs/live-loop.md, "Coordinator → agents: actions"). Every action received
is recorded with its verdict in the agent's store file, so a restart neither forgets the
action in force nor lets an old one be replayed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import queue
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

from fedge.core import ACTION_CONTEXT, POWER_MODES, ApiError, SiteClient
from fedge.edge_agent._broker import backoff_delay
from fedge.edge_agent._errors import (
    ActionExpiredError,
    ActionFormatError,
    ActionRejected,
    ActionReplayError,
    ActionSignatureError,
    ActionSiteError,
    AgentError,
    ConfigError,
    StoreError,
)
from fedge.security import SecurityError, SitePublicKeys

__all__ = [
    "KINDS",
    "MAX_BODY_BYTES",
    "MODES",
    "SHARE_NAMES",
    "SOURCES",
    "Action",
    "ActionLog",
    "ActionPoller",
    "verify_action",
]

log = logging.getLogger("fedge.agent.actions")

#: The strategic power modes (``fedge.core``'s, shared with the decisions) and the
#: tactical share names. The agent cannot import ``fedge.decisions`` (a sibling layer,
#: numpy-heavy); a test keeps the share names equal to it.
MODES: Final[tuple[str, ...]] = POWER_MODES
SHARE_NAMES: Final[tuple[str, ...]] = ("embb", "urllc", "mmtc", "unreserved")
KINDS: Final[tuple[str, ...]] = ("strategic", "tactical")
SOURCES: Final[tuple[str, ...]] = ("federated_forecast", "safe_default")
#: An action's JSON is a few hundred bytes; anything near this bound is not one.
MAX_BODY_BYTES: Final = 4096
MAX_DEPTH: Final = 2  # the action object and its ``shares``
SHARE_SUM_TOLERANCE: Final = 1e-6
MAX_TEXT: Final = 128
ACTIONS_PATH: Final = "/api/v1/site/actions"
ACK_PATH: Final = "/api/v1/site/actions/ack"
MAX_WAIT_S: Final = 30.0
MAX_ACTIONS_PER_ANSWER: Final = 100
ACK_BATCH: Final = 100
#: The ack thread looks at the log this often even when nothing woke it.
ACK_RECHECK_S: Final = 5.0
#: How long a stopping poll thread waits for the ack thread before closing the log.
ACK_JOIN_S: Final = 2.0
MAX_REASON: Final = 300
_REFUSED: Final = frozenset({404, 409, 422})  # final answers to an ack: retrying cannot help
_SITE_ID = re.compile(r"[0-9a-f]{32}")
_FIELDS: Final = frozenset(
    {
        "action_id",
        "site_id",
        "kind",
        "mode",
        "shares",
        "decided_at",
        "valid_until",
        "policy_version",
        "source",
        "decision_id",
    }
)


@dataclass(frozen=True)
class Action:
    """One verified action, as the coordinator signed it."""

    action_id: int
    site_id: str
    kind: str
    mode: str | None
    shares: Mapping[str, float] | None = field(hash=False)
    decided_at: float
    valid_until: float
    policy_version: str | None
    source: str
    decision_id: int | None

    def published(self, received_at: float) -> dict[str, object]:
        """What the RAN side reads on ``fedge/v1/<site>/action``."""
        return {
            "action_id": self.action_id,
            "kind": self.kind,
            "mode": self.mode,
            "shares": None if self.shares is None else dict(self.shares),
            "valid_until": self.valid_until,
            "policy_version": self.policy_version,
            "source": self.source,
            "received_at": received_at,
        }


def verify_action(
    body: bytes,
    signature: bytes,
    coordinator_keys: SitePublicKeys,
    site_id: str,
    now: float,
    last_id: int,
) -> Action:
    """The action in ``body`` if the coordinator signed it for ``site_id``, it is valid at
    ``now`` and newer than ``last_id``; else the :class:`ActionRejected` that says why.

    The size is bounded first (no crypto or parsing on unbounded input), then the
    signature, the format, the site, the expiry and the order are checked, in that order.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ActionFormatError(f"the body is {len(body)} bytes, at most {MAX_BODY_BYTES}")
    try:
        coordinator_keys.verify_key().verify(signature, body, ACTION_CONTEXT)
    except SecurityError as exc:
        raise ActionSignatureError(f"the coordinator's signature does not verify: {exc}") from exc
    action = parse_action(body)
    if action.site_id != site_id.lower():
        raise ActionSiteError(f"action {action.action_id} is for site {action.site_id}")
    if action.valid_until < now:
        raise ActionExpiredError(
            f"action {action.action_id} expired at {action.valid_until:.3f} (now {now:.3f})"
        )
    if action.action_id <= last_id:
        raise ActionReplayError(
            f"action {action.action_id} is not newer than the last accepted one, {last_id}"
        )
    return action


def parse_action(body: bytes) -> Action:
    """The action's JSON, checked field by field; :class:`ActionFormatError` otherwise."""
    if len(body) > MAX_BODY_BYTES:
        raise ActionFormatError(f"the body is {len(body)} bytes, at most {MAX_BODY_BYTES}")
    obj = _load(body)
    if not isinstance(obj, dict):
        raise ActionFormatError("the body is not a JSON object")
    missing = sorted(_FIELDS - obj.keys())
    unknown = sorted(obj.keys() - _FIELDS)
    if missing or unknown:
        raise ActionFormatError(f"fields missing: {missing}, unknown: {unknown}")
    action_id = _int(obj, "action_id")
    site = obj["site_id"]
    if not isinstance(site, str) or not _SITE_ID.fullmatch(site):
        raise ActionFormatError("site_id: 32 lowercase hex digits expected")
    kind = obj["kind"]
    if kind not in KINDS:
        raise ActionFormatError(f"kind: one of {KINDS} expected, not {kind!r}")
    mode, shares = obj["mode"], obj["shares"]
    if kind == "strategic":
        if mode not in MODES:
            raise ActionFormatError(f"mode: one of {MODES} expected, not {mode!r}")
        if shares is not None:
            raise ActionFormatError("shares: null expected for a strategic action")
        parsed_shares = None
    else:
        if mode is not None:
            raise ActionFormatError("mode: null expected for a tactical action")
        parsed_shares = _shares(shares)
    decided_at, valid_until = _time(obj, "decided_at"), _time(obj, "valid_until")
    if valid_until < decided_at:
        raise ActionFormatError("valid_until is before decided_at")
    policy = obj["policy_version"]
    if policy is not None and not (isinstance(policy, str) and 0 < len(policy) <= MAX_TEXT):
        raise ActionFormatError(f"policy_version: null or a string of 1 to {MAX_TEXT} expected")
    source = obj["source"]
    if source not in SOURCES:
        raise ActionFormatError(f"source: one of {SOURCES} expected, not {source!r}")
    decision_id = None if obj["decision_id"] is None else _int(obj, "decision_id")
    return Action(
        action_id=action_id,
        site_id=site,
        kind=kind,
        mode=mode,
        shares=parsed_shares,
        decided_at=decided_at,
        valid_until=valid_until,
        policy_version=policy,
        source=source,
        decision_id=decision_id,
    )


def _load(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ActionFormatError(f"the body is not UTF-8: {exc}") from exc
    if _depth(text) > MAX_DEPTH:
        raise ActionFormatError(f"the JSON nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique)
    except ActionFormatError:
        raise
    except ValueError as exc:
        raise ActionFormatError(f"the body is not JSON: {exc}") from exc


def _depth(text: str) -> int:
    """The deepest bracket nesting outside strings: bounded before the parser recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> object:
    raise ActionFormatError(f"{name} is not a number an action may carry")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ActionFormatError(f"field {key!r} appears twice")
        out[key] = value
    return out


def _int(obj: Mapping[str, object], name: str) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
        raise ActionFormatError(f"{name}: a positive integer expected, not {value!r}")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ActionFormatError(f"{name}: a number expected, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ActionFormatError(f"{name}: a finite number expected")
    return number


def _time(obj: Mapping[str, object], name: str) -> float:
    value = _number(obj[name], name)
    if value < 0:
        raise ActionFormatError(f"{name}: a Unix time expected, not {value}")
    return value


def _shares(value: object) -> Mapping[str, float]:
    if not isinstance(value, dict) or set(value) != set(SHARE_NAMES):
        raise ActionFormatError(f"shares: an object with exactly {SHARE_NAMES} expected")
    shares = {name: _number(value[name], f"shares.{name}") for name in SHARE_NAMES}
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ActionFormatError(f"shares.{name}: between 0 and 1 expected, not {share}")
    total = math.fsum(shares.values())
    if total > 1.0 + SHARE_SUM_TOLERANCE:
        raise ActionFormatError(f"shares sum to {total}, at most 1")
    return MappingProxyType(shares)


def claimed_id(body: bytes) -> int | None:
    """The ``action_id`` a refused body claims: to name it in the log and the ack, and,
    once the signature covered it, to move the poll past it; never to accept anything."""
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        obj = _load(body)
    except ActionFormatError:
        return None
    if isinstance(obj, dict):
        value = obj.get("action_id")
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**63:
            return value
    return None


_UNSIGNED: Final = ActionSignatureError.__name__

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER,
    received_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
    error TEXT,
    reason TEXT,
    body BLOB,
    payload TEXT,
    published_at REAL,
    acked_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS actions_accepted ON actions (action_id)
    WHERE status = 'accepted';
CREATE INDEX IF NOT EXISTS actions_unacked ON actions (seq) WHERE acked_at IS NULL;
"""


@dataclass(frozen=True)
class Ack:
    """One acknowledgement the coordinator has not confirmed yet."""

    seqs: tuple[int, ...]  # the log rows it answers
    action_id: int
    status: str  # applied | rejected
    at: float
    reason: str | None

    def wire(self) -> dict[str, object]:
        return {
            "action_id": self.action_id,
            "status": self.status,
            "at": self.at,
            "reason": self.reason,
        }


class ActionLog:
    """Every action received, with its verdict, in the ``actions`` table of the agent's
    store file; the highest accepted ``action_id`` is the replay bound, across restarts.

    Its own connection (synchronous FULL: an accepted action must outlive a power cut,
    or the same action could be accepted twice); safe to share between threads.
    """

    def __init__(self, store_path: Path) -> None:
        self.path = store_path
        self._lock = threading.Lock()
        try:
            store_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(store_path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{store_path}: cannot open the action log: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # as the store sets it, should this log create the file (no-op once it exists)
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute(
                "SELECT action_id, payload FROM actions WHERE status = 'accepted' "
                "ORDER BY action_id DESC LIMIT 1"
            ).fetchone()
            (cursor,) = self._db.execute(
                "SELECT MAX(action_id) FROM actions WHERE error IS NOT ?", (_UNSIGNED,)
            ).fetchone()
            self._in_force: dict[str, object] | None = None if row is None else json.loads(row[1])
        except (sqlite3.Error, ValueError) as exc:
            self._db.close()
            raise StoreError(f"{store_path}: cannot open the action log: {exc}") from exc
        self._last_id: int = 0 if row is None else int(row[0])
        self._cursor: int = max(self._last_id, int(cursor or 0))

    @property
    def last_id(self) -> int:
        """The highest accepted ``action_id`` (0: none yet)."""
        with self._lock:
            return self._last_id

    @property
    def cursor(self) -> int:
        """The highest ``action_id`` received, accepted or not: where the next poll starts."""
        with self._lock:
            return self._cursor

    def in_force(self) -> dict[str, object] | None:
        """The published form of the last accepted action, or None."""
        with self._lock:
            return None if self._in_force is None else dict(self._in_force)

    def receive(
        self,
        body: bytes,
        signature: bytes,
        coordinator_keys: SitePublicKeys,
        site_id: str,
        received_at: float,
    ) -> Action:
        """Verify one action and record the verdict; the action, or the refusal raised
        after it was recorded (the action in force is untouched then)."""
        try:
            action = verify_action(
                body, signature, coordinator_keys, site_id, received_at, self.last_id
            )
        except ActionRejected as exc:
            self.reject(claimed_id(body), exc, received_at, body)
            raise
        self.accept(action, received_at)
        return action

    def accept(self, action: Action, received_at: float) -> None:
        payload = json.dumps(action.published(received_at), separators=(",", ":"))
        with self._lock:
            if action.action_id <= self._last_id:  # a second thread got there first
                raise ActionReplayError(
                    f"action {action.action_id} is not newer than {self._last_id}"
                )
            self._write(
                "INSERT INTO actions (action_id, received_at, status, payload) "
                "VALUES (?, ?, 'accepted', ?)",
                (action.action_id, received_at, payload),
            )
            self._last_id = action.action_id
            self._cursor = max(self._cursor, action.action_id)
            self._in_force = json.loads(payload)

    def reject(
        self, action_id: int | None, error: ActionRejected, received_at: float, body: bytes | None
    ) -> None:
        kept = body if body is not None and len(body) <= MAX_BODY_BYTES else None
        reason = f"{type(error).__name__}: {error}"[:MAX_REASON]
        with self._lock:
            if self._repeats(action_id, reason, kept):
                return  # the coordinator sending the same refused body again: one row is enough
            self._write(
                "INSERT INTO actions (action_id, received_at, status, error, reason, body, "
                "acked_at) VALUES (?, ?, 'rejected', ?, ?, ?, ?)",
                # nothing to acknowledge without an id the coordinator could match
                (
                    action_id,
                    received_at,
                    type(error).__name__,
                    reason,
                    kept,
                    None if action_id is not None else received_at,
                ),
            )
            # An id the signature did not cover must not move the poll on: a forged
            # huge id would otherwise hide every real action from then on.
            if action_id is not None and type(error).__name__ != _UNSIGNED:
                self._cursor = max(self._cursor, action_id)

    def _repeats(self, action_id: int | None, reason: str, body: bytes | None) -> bool:
        try:
            last = self._db.execute(
                "SELECT action_id, status, reason, body FROM actions ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the action log: {exc}") from exc
        return last is not None and tuple(last) == (action_id, "rejected", reason, body)

    def unpublished(self) -> list[tuple[int, bytes]]:
        """Accepted actions not yet handed to the broker, oldest first."""
        rows = self._read(
            "SELECT action_id, payload FROM actions WHERE status = 'accepted' "
            "AND published_at IS NULL ORDER BY action_id"
        )
        return [(int(r[0]), str(r[1]).encode()) for r in rows]

    def mark_published(self, action_id: int, at: float) -> None:
        with self._lock:
            self._write(
                "UPDATE actions SET published_at = ? WHERE status = 'accepted' AND action_id = ?",
                (at, action_id),
            )

    def pending_acks(self, limit: int = ACK_BATCH) -> list[Ack]:
        """Verdicts the coordinator has not confirmed, oldest first (an accepted action
        only once it was published: ``applied`` means it reached the broker). The
        coordinator keeps one ack per action: later verdicts on the same id ride along
        with the first (``seqs``) instead of being sent again."""
        rows = self._read(
            "SELECT seq, action_id, status, received_at, published_at, reason FROM actions "
            "WHERE acked_at IS NULL AND action_id IS NOT NULL "
            "AND (status = 'rejected' OR published_at IS NOT NULL) ORDER BY seq LIMIT ?",
            (limit * 4,),
        )
        acks: dict[int, Ack] = {}
        for seq, aid, status, received, published, reason in rows:
            first = acks.get(int(aid))
            if first is not None:
                acks[int(aid)] = replace(first, seqs=(*first.seqs, int(seq)))
            elif len(acks) < limit:
                applied = status == "accepted"
                acks[int(aid)] = Ack(
                    (int(seq),),
                    int(aid),
                    "applied" if applied else "rejected",
                    float(published if applied else received),
                    reason,
                )
        return list(acks.values())

    def mark_acked(self, seqs: list[int], at: float) -> None:
        with self._lock:
            for seq in seqs:
                self._write("UPDATE actions SET acked_at = ? WHERE seq = ?", (at, seq))

    def rows(self) -> list[dict[str, object]]:
        """Every recorded action, oldest first (for inspection)."""
        names = (
            "seq",
            "action_id",
            "received_at",
            "status",
            "error",
            "reason",
            "published_at",
            "acked_at",
        )
        cols = ", ".join(names)
        return [
            dict(zip(names, r, strict=True))
            for r in self._read(f"SELECT {cols} FROM actions ORDER BY seq")
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot record an action: {exc}") from exc

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read the action log: {exc}") from exc


T = TypeVar("T")


class _Stopped(Exception):  # noqa: N818 - control flow inside the poller, not an error
    """stop() was called while a request was in flight."""


class ActionPoller:
    """The agent's action thread: long-polls the coordinator, verifies and records each
    action, publishes the accepted ones (retained) on ``topic`` and acknowledges all.

    Acknowledgements go on a second thread (``fedge-actions-ack``): the poll is asked
    again as soon as an answer's actions are recorded and published, not after their ack
    came back, so an action stored just after another (a tactical one right after the
    strategic one of the same minute) does not wait a round trip for the poll.

    A coordinator outage backs off with jitter, each thread on its own; nothing escapes
    them. Each request runs on a throw-away daemon thread, so :meth:`stop` abandons a long
    poll in flight instead of waiting ``wait_s`` for it.
    """

    def __init__(
        self,
        *,
        client: SiteClient,
        coordinator_keys: SitePublicKeys,
        site_id: str,
        store_path: Path,
        publish: Callable[[str, bytes, bool], None],
        topic: str,
        clock: Callable[[], float] = time.time,
        wait_s: float = 25.0,
    ) -> None:
        if not (math.isfinite(wait_s) and 0 < wait_s <= MAX_WAIT_S):  # 0 would poll in a loop
            raise ConfigError(f"actions wait_s: above 0, at most {MAX_WAIT_S} s, not {wait_s}")
        if not topic or any(c in topic for c in "+#\0"):
            raise ConfigError(f"actions topic: a plain MQTT topic expected, not {topic!r}")
        # Actions name the site by its enrolled key's id, the one every poll is signed
        # with; ``site_id`` may be the broker-side name, but an enrolled id must agree.
        enrolled = client.signer.site_id.hex()
        if _SITE_ID.fullmatch(site_id.lower()) and site_id.lower() != enrolled:
            raise ConfigError(f"site id {site_id} is not the enrolled key's, {enrolled}")
        self.client = client
        self.keys = coordinator_keys
        self.site_id = enrolled
        self.publish = publish
        self.topic = topic
        self.clock = clock
        self.wait_s = float(wait_s)
        self.log = ActionLog(store_path)
        self.poll_failures = 0  # consecutive failed polls (0: the last one worked)
        self.ack_failures = 0  # consecutive failed ack requests
        self.last_error: str | None = None  # None once both threads succeed again
        self.backoff_min_s = 1.0
        self.backoff_max_s = 60.0
        self._rng = random.Random()
        self._stop = threading.Event()
        self._owed = threading.Event()  # acks to send: set after each publish
        self._thread: threading.Thread | None = None
        self._acker: threading.Thread | None = None

    @property
    def failures(self) -> int:
        """Consecutive failures of the worse of the two threads (0: both work)."""
        return max(self.poll_failures, self.ack_failures)

    def start(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        self._acker = threading.Thread(target=self._acking, name="fedge-actions-ack", daemon=True)
        self._thread = threading.Thread(target=self._run, name="fedge-actions", daemon=True)
        self._owed.set()  # acks an earlier run still owes
        self._acker.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the threads; True once they ended (they are daemons either way)."""
        self._stop.set()
        self._owed.set()
        thread = self._thread
        if thread is None:
            self.log.close()
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def last_action(self) -> dict[str, object] | None:
        """The action in force (its published form), or None."""
        return self.log.in_force()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    progressed = self.cycle()
                except _Stopped:
                    break
                except (ApiError, AgentError) as exc:
                    self.poll_failures += 1
                    self._failed(str(exc), self.poll_failures)
                    continue
                except Exception as exc:  # the thread must outlive any one failure
                    log.exception("action poll failed")
                    self.poll_failures += 1
                    self._failed(f"{type(exc).__name__}: {exc}", self.poll_failures)
                    continue
                if progressed:
                    self.poll_failures = 0
                    self._recovered()
                else:  # answered, but nothing moved the poll on: do not spin on it
                    self.poll_failures += 1
                    self._failed(
                        "the coordinator repeats actions the agent already has", self.poll_failures
                    )
        finally:
            if self._acker is not None:
                self._acker.join(ACK_JOIN_S)
            self.log.close()

    def _acking(self) -> None:
        """The ack thread: sends what the log owes whenever the poll thread published
        something (and every ``ACK_RECHECK_S``), backing off while the coordinator fails."""
        while not self._stop.is_set():
            self._owed.wait(ACK_RECHECK_S)
            self._owed.clear()
            if self._stop.is_set():
                return
            try:
                while acks := self.log.pending_acks():
                    self._ack(acks)
            except _Stopped:
                return
            except Exception as exc:  # ApiError, StoreError, or a bug: retry, never escape
                if not isinstance(exc, ApiError | AgentError):
                    log.exception("action ack failed")
                self.ack_failures += 1
                self._failed(f"{type(exc).__name__}: {exc}", self.ack_failures)
                self._owed.set()  # still owed: again once the pause is over
                continue
            self.ack_failures = 0
            self._recovered()

    def _failed(self, reason: str, failures: int) -> None:
        if reason != self.last_error:
            log.warning("actions: %s", reason)
        self.last_error = reason
        self._stop.wait(
            backoff_delay(failures - 1, self.backoff_min_s, self.backoff_max_s, self._rng)
        )

    def _recovered(self) -> None:
        if self.poll_failures == 0 and self.ack_failures == 0:
            self.last_error = None

    def cycle(self) -> bool:
        """One exchange: publish what is due, poll once, record and publish the answer
        (the ack thread acknowledges it). False when the answer carried actions but none
        moved the poll's cursor on."""
        self._publish()
        before = self.log.cursor
        items = self._poll(before)
        for item in items:
            try:
                body, signature = _decode(item)
            except ActionFormatError as exc:
                self.log.reject(None, exc, self.clock(), None)
                log.warning("action refused: %s", exc)
                continue
            self._receive(body, signature)
        self._publish()
        return not items or self.log.cursor > before

    def _poll(self, after: int) -> list[object]:
        """The answer's entries, undecoded; a malformed answer is an :class:`ApiError`."""
        wait: int | float = int(self.wait_s) if self.wait_s.is_integer() else self.wait_s
        status, _, payload = self._call(
            lambda: self.client.request(
                "GET",
                ACTIONS_PATH,
                query={"after": after, "wait": wait},
                timeout=self.wait_s + 10,
            )
        )
        try:
            answer = json.loads(payload)
        except ValueError as exc:
            raise ApiError(status, f"the answer to GET {ACTIONS_PATH} is not JSON") from exc
        items = answer.get("actions") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) > MAX_ACTIONS_PER_ANSWER:
            raise ApiError(status, f"GET {ACTIONS_PATH}: a list of actions expected")
        return list(items)

    def _receive(self, body: bytes, signature: bytes) -> None:
        try:
            action = self.log.receive(body, signature, self.keys, self.site_id, self.clock())
        except ActionRejected as exc:
            log.warning("action refused: %s: %s", type(exc).__name__, exc)
            return
        log.info(
            "action %d accepted: %s %s",
            action.action_id,
            action.kind,
            action.mode or dict(action.shares or {}),
        )

    def _publish(self) -> None:
        """Hand accepted actions to the broker; wake the ack thread for them (and for the
        refusals just recorded)."""
        for action_id, payload in self.log.unpublished():
            self.publish(self.topic, payload, True)
            self.log.mark_published(action_id, self.clock())
        self._owed.set()

    def _ack(self, acks: list[Ack]) -> None:
        """Send ``acks``; mark them once answered 204. A batch the coordinator refuses
        (404 an unknown id, 409 contradicting an earlier ack, 422 malformed) stores
        nothing, so its acks are sent one by one and only the refused ones are dropped:
        sending those again cannot succeed."""
        if self._stop.is_set():
            raise _Stopped
        try:
            self._call(
                lambda: self.client.request(
                    "POST", ACK_PATH, json={"acks": [a.wire() for a in acks]}
                )
            )
        except ApiError as exc:
            if exc.status not in _REFUSED:
                raise
            if len(acks) > 1:
                for ack in acks:
                    self._ack([ack])
                return
            log.error("the coordinator refused the ack of action %d: %s", acks[0].action_id, exc)
        self.log.mark_acked([q for a in acks for q in a.seqs], self.clock())

    def _call(self, request: Callable[[], T]) -> T:
        """``request`` on a daemon thread, abandoned (not awaited) when stop() is called."""
        box: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

        def work() -> None:
            try:
                box.put((True, request()))
            except BaseException as exc:  # handed to the poller thread
                box.put((False, exc))

        threading.Thread(target=work, name="fedge-actions-http", daemon=True).start()
        while True:
            try:
                ok, value = box.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stopped from None
                continue
            if ok:
                result: T = value
                return result
            raise value


def _decode(item: object) -> tuple[bytes, bytes]:
    if not isinstance(item, dict):
        raise ActionFormatError("an action entry is not an object")
    body, signature = item.get("body_base64"), item.get("signature_base64")
    if not isinstance(body, str) or not isinstance(signature, str):
        raise ActionFormatError("an action entry needs body_base64 and signature_base64")
    if len(body) > MAX_BODY_BYTES * 4 // 3 + 4 or len(signature) > 8192:
        raise ActionFormatError("an action entry is larger than any action")
    try:
        return base64.b64decode(body, validate=True), base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ActionFormatError(f"an action entry is not base64: {exc}") from exc
