"""Leader election among coordinator replicas on one PostgreSQL database.

Every replica serves the whole API; only the leader runs the schedulers (decision ticks,
rollout timeouts, retraining, the sweep of orphaned runs). The leader is the replica
whose dedicated connection holds the session advisory lock ``LEADER_LOCK``: PostgreSQL
releases it the moment that connection ends (the process died, was killed, or its host
stopped answering TCP keepalives), and the replica that loses the connection stops its
schedulers at once, before it tries to connect again. A follower tries the lock every
``poll_seconds``, so a failover takes about one poll after PostgreSQL noticed the end.

The same connection holds a second kind of advisory lock, one per federation run the
replica launched (``hold_run``), for as long as the run is live: a live run whose lock
nobody holds was left by a replica that is gone, and the leader interrupts it.

With SQLite (one host) there is nothing to elect: the process is always the leader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from fedge.coordinator._errors import InvalidInputError, UnavailableError
from fedge.coordinator._loop import Loop
from fedge.coordinator._schema import Run, RunStatus

if TYPE_CHECKING:
    import psycopg

__all__ = ["LEADER_LOCK", "RUN_LOCK_CLASS", "Leadership", "leaders", "run_lock_key"]

_log = logging.getLogger("fedge.coordinator.events")

#: ``pg_try_advisory_lock(bigint)``: the schedulers' lock ("fedgeldr"). Advisory locks
#: are per database, so coordinators of other databases on the same server never meet.
LEADER_LOCK = int.from_bytes(b"fedgeldr", "big") & 0x7FFF_FFFF_FFFF_FFFF
#: ``pg_try_advisory_lock(int, int)``: a run's lock is (this class, ``run_lock_key``).
RUN_LOCK_CLASS = 0x6665_6467  # "fedg"
_LIVE = [RunStatus.STARTING, RunStatus.RUNNING]
_UNSTORED_SECONDS = 60.0  # a run's lock without its row after this long: its start failed
# The server ends a session whose client stopped answering within ~11 s, which releases
# its locks; the client gives up on the server as fast (a partitioned leader steps down).
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "connect_timeout": 5,
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
    "-c tcp_keepalives_count=3 -c statement_timeout=10000",
}


def leaders(session: Session) -> int:
    """How many sessions hold the schedulers' lock in this database: 1 when the
    replicas have their leader, 0 when none does (an alert). The same answer from every
    replica and worker, unlike each one's own ``elected``. SQLite: always 1."""
    if session.get_bind().dialect.name != "postgresql":
        return 1
    # a bigint advisory lock shows as (classid, objid) = its high and low 32 bits, objsubid 1
    row = session.execute(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = :hi AND objid = :lo AND objsubid = 1"
        ),
        {"hi": LEADER_LOCK >> 32, "lo": LEADER_LOCK & 0xFFFF_FFFF},
    ).one()
    return int(row[0])


def run_lock_key(run_id: str) -> int:
    """A run's 32-bit lock key: its random hex id's first 8 digits, signed."""
    head = run_id[:8]
    if len(head) < 8 or any(c not in "0123456789abcdef" for c in head):
        raise InvalidInputError(f"not a run id: {run_id!r}")
    return int(head, 16) - 0x8000_0000


class Leadership:
    """This replica's part in the election; ``on_elected`` and ``on_deposed`` start and
    stop the schedulers, ``while_leading`` runs at every poll the replica leads."""

    def __init__(
        self,
        engine: Engine,
        on_elected: Callable[[], None],
        on_deposed: Callable[[], None],
        while_leading: Callable[[], None] | None = None,
        poll_seconds: float = 0.5,
        released: Callable[[str], None] | None = None,
    ) -> None:
        """``released``: called with each run of this replica once it ended, wherever it
        was reported (its key export, on this replica's disk, is removed)."""
        self.engine, self.poll_seconds = engine, poll_seconds
        self._released = released
        self._elected, self._deposed, self._leading = on_elected, on_deposed, while_leading
        self.elected = engine.dialect.name != "postgresql"  # SQLite: always the leader
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._io = threading.Lock()  # the connection is shared by the thread and hold_run
        self._runs: dict[str, float] = {}  # run id: when its lock was taken (monotonic)
        self._loop = Loop("leadership", self._run)
        self._stop = self._loop.stopping

    @property
    def distributed(self) -> bool:
        """Whether leadership is elected (PostgreSQL) rather than given (SQLite)."""
        return self.engine.dialect.name == "postgresql"

    def start(self) -> None:
        if not self.distributed:
            self._elected()
            return
        self._loop.start()

    def stop(self) -> None:
        """Step down (schedulers first), then release the locks with the connection."""
        self._loop.stop()
        if self.elected:
            self._step_down("the replica stops", quiet=not self.distributed, clean=True)
        with self._io:
            self._close()

    # --- runs --------------------------------------------------------------------------

    def hold_run(self, run_id: str) -> None:
        """Mark ``run_id`` as driven by this replica until it is no longer live; called
        before the run's row is stored, so no leader ever sees it unheld."""
        if not self.distributed:
            return
        with self._io:
            conn = self._connection()
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, run_lock_key(run_id)))
            self._runs[run_id] = time.monotonic()

    def orphaned(self, run_ids: list[str]) -> list[str]:
        """Those of ``run_ids`` no replica holds (their driver is gone)."""
        out = []
        with self._io:
            conn = self._connection()
            for run_id in run_ids:
                if run_id in self._runs:
                    continue
                key = (RUN_LOCK_CLASS, run_lock_key(run_id))
                row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
                if row is not None and row[0]:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
                    out.append(run_id)
        return out

    def _release_ended(self) -> None:
        """Let go of the runs of this replica that ended (reported to any replica). A run
        without a row yet is being stored (its lock comes first): let go of it only once
        its start has surely failed."""
        if not self._runs:
            return
        held = dict(self._runs)
        with Session(self.engine) as session:
            status = dict(
                session.exec(select(Run.id, Run.status).where(col(Run.id).in_(list(held)))).all()
            )
        now = time.monotonic()
        ended = [
            run_id
            for run_id, since in held.items()
            if (run_id in status and status[run_id] not in _LIVE)
            or (run_id not in status and now - since > _UNSTORED_SECONDS)
        ]
        with self._io:
            conn = self._connection()
            for run_id in ended:
                conn.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK_CLASS, run_lock_key(run_id))
                )
                self._runs.pop(run_id, None)
        for run_id in ended:
            if self._released is not None:
                self._released(run_id)

    # --- the connection ----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The dedicated connection (opened, and this replica's run locks taken again,
        when there is none); call with ``_io`` held."""
        if self._conn is not None:
            return self._conn
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        try:
            conn = psycopg.connect(
                url.render_as_string(hide_password=False), autocommit=True, **_KEEPALIVES
            )
            for run_id in self._runs:
                conn.execute(
                    "SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, run_lock_key(run_id))
                )
        except psycopg.Error as exc:
            raise UnavailableError(f"the leadership connection failed: {exc}") from exc
        self._conn = conn
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing to release any more
                _log.debug("closing the leadership connection", exc_info=True)

    # --- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        import psycopg

        while True:
            try:
                self._poll()
            except (psycopg.Error, UnavailableError) as exc:
                with self._io:
                    self._close()
                if self.elected:
                    self._step_down(f"lost its database connection: {exc}")
            except Exception:  # a query of the sweep: the next poll tries again
                _log.exception("leadership poll failed")
            if self._stop.wait(self.poll_seconds):
                return

    def _poll(self) -> None:
        won = False
        with self._io:
            conn = self._connection()
            if self.elected:
                conn.execute("SELECT 1")
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                won = row is not None and bool(row[0])
        if won:
            self._become_leader()
        self._release_ended()
        if self.elected and self._leading is not None:
            self._leading()

    def _become_leader(self) -> None:
        self.elected = True
        _log.info(
            "this replica is the leader: it runs the schedulers",
            extra={"event": "coordinator.leader", "leader": True},
        )
        self._elected()

    def _step_down(self, why: str, *, quiet: bool = False, clean: bool = False) -> None:
        """Stop the schedulers; logged (a warning unless the replica is shutting down)."""
        self.elected = False
        if not quiet:
            _log.log(
                logging.INFO if clean else logging.WARNING,
                "this replica steps down: %s", why,
                extra={"event": "coordinator.step_down", "leader": False, "detail": why},
            )  # fmt: skip
        self._deposed()
