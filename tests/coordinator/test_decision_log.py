"""Group commit of decisions: every request's rows stored before it is answered, on SQLite
and PostgreSQL; a failed commit fails the requests it carried and the writer goes on."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from coordinator import CoordinatorSettings
from coordinator._db import open_database
from coordinator._decision_log import DecisionLog


def test_concurrent_batches_are_all_committed_with_their_answers(
    settings: CoordinatorSettings,
) -> None:
    engine = open_database(settings.database_url)
    log = DecisionLog(engine)
    try:

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
    finally:
        log.close()
        engine.dispose()


def test_a_failed_commit_fails_its_requests_and_the_next_one_is_stored(
    settings: CoordinatorSettings,
) -> None:
    engine = open_database(settings.database_url)
    log = DecisionLog(engine)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE decisions RENAME TO decisions_away"))
        failed = log.submit(["a"], 1.0, "v1", "strategic", ['{"mode": "active"}'])
        with pytest.raises(Exception, match="decisions"):
            failed.result(timeout=30)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE decisions_away RENAME TO decisions"))
        assert log.submit(["b"], 2.0, "v1", "strategic", ["{}"]).result(timeout=30) == 1
        with engine.connect() as conn:
            assert conn.execute(text("SELECT site_id FROM decisions")).scalars().all() == ["b"]
    finally:
        log.close()
        engine.dispose()


def test_close_commits_what_is_queued(settings: CoordinatorSettings) -> None:
    engine = open_database(settings.database_url)
    log = DecisionLog(engine)
    futures = [
        log.submit([f"s{i}"], 0.0, "v1", "tactical", ['{"shares": [1.0]}']) for i in range(50)
    ]
    log.close()
    assert all(f.done() and f.result() == 1 for f in futures)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM decisions")).scalar_one() == 50
    engine.dispose()
