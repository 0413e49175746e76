"""Engine creation and migrations: SQLite in WAL mode or PostgreSQL through psycopg 3.

``open_database`` runs ``alembic upgrade head`` on every start, so a fresh file, an old
schema and a current one all end up at the same schema before the first request.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from fedge.coordinator._errors import DatabaseError

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


READ_ONLY = "fedge_read_only"


def read_only(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that only read.

    On SQLite they BEGIN DEFERRED (a WAL snapshot) instead of taking the write lock, so a
    hot read (API key check, decision-site sync) never queues behind the writers."""
    return engine.execution_options(**{READ_ONLY: True})


def _begin_immediate(connection: Connection) -> None:
    """Make each SQLite transaction real and serial: pysqlite's default runs SELECTs
    outside any transaction, so a read-then-write (promote, rollback) would not be atomic."""
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class WriterTurn:
    """Write transactions of all worker processes on one SQLite file, queued by the kernel.

    SQLite's busy handler polls a locked database with sleeps of 1, 2, 5, 10 ... 100 ms:
    two workers' decision group commits contending through it kept one waiting tens of
    milliseconds while the other committed again (the decisions p99). A blocking
    ``flock`` on a side file wakes the waiter the moment the lock is released. Per
    instance one descriptor, so one instance per writer thread; a no-op on PostgreSQL.
    """

    def __init__(self, engine: Engine) -> None:
        db = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
        self._path = f"{db}-writer.lock" if db and db != ":memory:" else None
        self._fd: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._path is None:
            yield
            return
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise DatabaseError(f"cannot open the writer lock {self._path}: {exc}") from exc
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _no_auto_checkpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


class WalCheckpointer:
    """Checkpoints a SQLite WAL from a background thread instead of inside commits.

    SQLite's auto-checkpoint runs in whichever commit crosses 1,000 WAL pages: that
    commit copies the pages back and fsyncs before its requests can be answered, and
    meanwhile the other worker's writer waits on the lock (the decisions p99 of ~110 ms).
    Durability is unchanged: a commit is durable once in the WAL; checkpoints move pages.
    """

    def __init__(self, engine: Engine, interval_s: float = 1.0) -> None:
        self.engine, self.interval_s = engine, interval_s
        event.listen(engine, "connect", _no_auto_checkpoint)
        engine.dispose()  # pooled connections opened before this keep auto-checkpointing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def checkpoint(self) -> None:
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
        finally:
            raw.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.checkpoint()
            except (SQLAlchemyError, sqlite3.Error) as exc:  # busy: the next interval retries
                _log.warning("WAL checkpoint failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(SQLAlchemyError, sqlite3.Error):  # best effort on the way out
            self.checkpoint()


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _begin_immediate)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DatabaseError(f"cannot use database {url.rpartition('@')[2]}: {exc}") from exc


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (``alembic upgrade head``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot migrate the database: {exc}") from exc


def open_database(url: str) -> Engine:
    """A migrated engine, ready for requests."""
    engine = create_db_engine(url)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot connect to {url.rpartition('@')[2]}: {exc}") from exc
    upgrade(engine)
    return engine


Item = TypeVar("Item")
_STOP = object()


class GroupWriter(ABC, Generic[Item]):
    """Group commit: one writer thread drains every item waiting into one ``_commit``.

    Callers queue items (each with the future it answers) from any thread; the writer
    takes up to ``max_items`` of them per transaction, so the commit's cost is shared
    while one commit's latency stays bounded. Subclasses write ``_commit``; it must
    answer every future it was handed, failure included.
    """

    max_items = 256
    #: How long a group may wait, from its first item, for items ``_more_coming`` says are
    #: on their way (0: commit what is queued at once).
    linger_s = 0.0

    def __init__(self, engine: Engine, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._turn = WriterTurn(engine)
        self._connection: Connection | None = None  # the writer thread's own

    def _put(self, item: Item) -> None:
        self._start()
        self._queue.put(item)

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._turn.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            pending = [item]
            stop = False
            while len(pending) < self.max_items:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                pending.append(nxt)
            if not stop and self.linger_s > 0:
                stop = self._linger(pending)
            self._commit(pending)
            if stop:
                return

    def _linger(self, pending: list[Item]) -> bool:
        """Wait (up to ``linger_s``) for the items on their way, so one commit carries
        them too: a commit's own cost dwarfs a short wait. True when told to stop."""
        deadline = time.monotonic() + self.linger_s
        while len(pending) < self.max_items and self._more_coming():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                nxt = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if nxt is _STOP:
                return True
            pending.append(nxt)
        return False

    def _more_coming(self) -> bool:
        """Whether items are on their way to the queue (subclasses that know say so)."""
        return False

    @abstractmethod
    def _commit(self, pending: list[Item]) -> None:
        """Write ``pending`` in one transaction and answer each item's future."""
