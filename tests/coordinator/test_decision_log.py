"""Group commit of decisions: every request's rows stored before it is answered, on SQLite
and PostgreSQL; a failed commit fails the requests it carried and the writer goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from fedge.coordinator import CoordinatorSettings
from fedge.coordinator._db import open_database
from fedge.coordinator._decision_log import DecisionLog


@pytest.fixture
def engine(settings: CoordinatorSettings) -> Iterator[Engine]:
    engine = open_database(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine: Engine) -> Iterator[DecisionLog]:
    log = DecisionLog(engine)
    yield log
    log.close()


def test_concurrent_batches_are_all_committed_with_their_answers(
    engine: Engine, log: DecisionLog
) -> None:
    def request(n: int) -> int:
        sites = [f"site-{n}-{k}" for k in range(8)]
        actions = [json.dumps({"mode": "active", "n": n})] * 8
        return log.submit(sites, float(n), "v1", "strategic", actions).result(timeout=30)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(request, range(200))) == [8] * 200
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT site_id, at, action FROM decisions")).all()
    assert len(rows) == 1600
    by_site = {r[0]: r for r in rows}
    assert by_site["site-17-3"][1] == 17.0
    action = by_site["site-17-3"][2]  # PostgreSQL's driver decodes JSON, SQLite's does not
    action = json.loads(action) if isinstance(action, str) else action
    assert action == {"mode": "active", "n": 17}


def test_a_failed_commit_fails_its_requests_and_the_next_one_is_stored(
    engine: Engine, log: DecisionLog
) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE decisions RENAME TO decisions_away"))
    failed = log.submit(["a"], 1.0, "v1", "strategic", ['{"mode": "active"}'])
    with pytest.raises(SQLAlchemyError, match="decisions"):
        failed.result(timeout=30)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE decisions_away RENAME TO decisions"))
    assert log.submit(["b"], 2.0, "v1", "strategic", ["{}"]).result(timeout=30) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT site_id FROM decisions")).scalars().all() == ["b"]


def test_close_commits_what_is_queued(engine: Engine, log: DecisionLog) -> None:
    futures = [
        log.submit([f"s{i}"], 0.0, "v1", "tactical", ['{"shares": [1.0]}']) for i in range(50)
    ]
    log.close()
    assert all(f.done() and f.result() == 1 for f in futures)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM decisions")).scalar_one() == 50


def test_the_wal_is_checkpointed_in_the_background_not_in_commits(tmp_path: Path) -> None:
    """SQLite only (PostgreSQL manages its own WAL), so not on the two-database fixture."""
    from fedge.coordinator._db import WalCheckpointer

    db = tmp_path / "coordinator.db"
    engine = open_database(f"sqlite:///{db}")
    checkpointer = WalCheckpointer(engine, interval_s=0.05)
    log = DecisionLog(engine)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
        before = db.stat().st_size
        for i in range(300):  # ~1,500 WAL pages: past SQLite's own checkpoint threshold
            log.submit([f"s{i}-{k}" for k in range(64)], 0.0, "v1", "strategic", ["{}"] * 64)
        log.close()
        deadline = time.monotonic() + 10
        # with auto-checkpoints off, rows reach the main file only through the checkpointer
        while db.stat().st_size < before + 500_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.stat().st_size >= before + 500_000
    finally:
        checkpointer.stop()
        engine.dispose()


def test_reads_do_not_take_the_sqlite_write_lock(tmp_path: Path) -> None:
    """A read-only session reads its WAL snapshot while another process holds the write
    lock; a plain session (BEGIN IMMEDIATE) would wait out busy_timeout and fail."""
    import sqlite3

    from sqlmodel import Session, select

    from fedge.coordinator._db import read_only
    from fedge.coordinator._schema import ApiKey

    db = tmp_path / "coordinator.db"
    engine = open_database(f"sqlite:///{db}")
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO decisions (site_id, at, policy_version, kind, action) "
                       "VALUES ('w', 0, 'v1', 'strategic', '{}')")  # fmt: skip
        with Session(read_only(engine)) as session:
            assert session.exec(select(ApiKey)).all() == []
        with engine.connect() as conn:  # a plain transaction needs the write lock
            conn.connection.driver_connection.execute("PRAGMA busy_timeout=50")  # type: ignore[union-attr]
            with pytest.raises(SQLAlchemyError, match="locked"):
                conn.exec_driver_sql("SELECT 1").all()  # BEGIN IMMEDIATE cannot start
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        engine.dispose()


def test_decision_writers_take_turns_through_the_writer_lock(tmp_path: Path) -> None:
    """Two writer turns on one file (two worker processes' decision logs): the second waits
    until the first lets go, woken by the kernel rather than by SQLite's sleeping retries."""
    import threading

    from fedge.coordinator._db import WriterTurn

    engine = open_database(f"sqlite:///{tmp_path / 'coordinator.db'}")
    first, second = WriterTurn(engine), WriterTurn(engine)
    entered = threading.Event()

    def take_second() -> None:
        with second.held():
            entered.set()

    try:
        with first.held():
            waiter = threading.Thread(target=take_second)
            waiter.start()
            assert not entered.wait(0.3)  # blocked while the first holds its turn
        assert entered.wait(10)
        waiter.join()
    finally:
        first.close()
        second.close()
        engine.dispose()
    assert (tmp_path / "coordinator.db-writer.lock").exists()


def test_a_writer_lock_that_cannot_be_opened_fails_the_requests_with_a_database_error(
    tmp_path: Path,
) -> None:
    """The lock file's place is taken (here by a directory): the batch fails with a typed
    error naming the file, and nothing is stored."""
    from fedge.coordinator._errors import DatabaseError

    db = tmp_path / "coordinator.db"
    engine = open_database(f"sqlite:///{db}")
    (tmp_path / "coordinator.db-writer.lock").mkdir()
    log = DecisionLog(engine)
    try:
        failed = log.submit(["a"], 1.0, "v1", "strategic", ["{}"])
        with pytest.raises(DatabaseError, match="cannot open the writer lock"):
            failed.result(timeout=30)
    finally:
        log.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM decisions")).scalar_one() == 0
    engine.dispose()
