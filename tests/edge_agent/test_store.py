"""The SQLite store: schema checks, retention, federation state, and the agent_store source."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedge.edge_agent import ForecastRow, KpiSample, Store, StoreError, read_cell_series
from fedge.simulation import DataError, open_sites
from tests.edge_agent.conftest import STEP, seed_history, site_values


def test_wal_mode_and_step_mismatch_and_foreign_files(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    Store(db, step_seconds=STEP).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreError, match="step_seconds=300, config says 60"):
        Store(db, step_seconds=60)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(StoreError, match="store schema 99"):
        Store(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(junk)


def test_a_duplicate_key_fails_the_whole_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP)
    try:
        s = KpiSample("c", 3000.0, 10, (1.0, None, 2.0, 3.0, 4.0))
        store.commit_batch([s], [ForecastRow("c", 11, 10, "v", (1.0, 2.0, 3.0))], time.time())
        with pytest.raises(StoreError, match="UNIQUE"):
            store.commit_batch([KpiSample("c", 3300.0, 11, s.values), s], [], time.time())
        assert store.sample_count() == 1  # step 11 rolled back with the duplicate
        assert store.sample("c", 10) == (1.0, None, 2.0, 3.0, 4.0)
        assert store.forecasts_for("c", 10)[0].values == (1.0, 2.0, 3.0)
    finally:
        store.close()


def test_retention_by_age_then_by_size(tmp_path: Path) -> None:
    values, _ = site_values(days=6)
    db = tmp_path / "a.db"
    now = time.time()
    last = int(now // STEP)
    seed_history(db, [f"c{i}" for i in range(4)], values, last)
    store = Store(db)
    try:
        total = store.sample_count()
        removed = store.enforce_retention(now, max_age_s=3 * 86_400, max_bytes=10**9)
        assert 0 < removed < total and store.sample_count() == total - removed
        for cell in store.cells():
            steps, _ = store.history(cell, 0, 2**62)
            assert steps.min() * STEP >= now - 3 * 86_400 - STEP
        before = store.used_bytes()
        store.enforce_retention(now, max_age_s=10 * 86_400, max_bytes=before // 3)
        assert store.used_bytes() <= before // 3 and store.sample_count() > 0
    finally:
        store.close()


def test_federation_state_round_trips_across_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    store.put_state("residual", b"\x00\x01" * 1000)
    store.close()
    store = Store(tmp_path / "a.db")
    try:
        assert store.get_state("residual") == b"\x00\x01" * 1000
        assert store.get_state("other") is None
    finally:
        store.close()


def test_agent_store_site_source_feeds_the_clientapp_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedge.models import ForecastSpec
    from fedge.simulation._site_task import site_task

    values, _ = site_values(days=6)
    values = values.copy()
    db = tmp_path / "agent.db"
    seed_history(db, ["b-cell", "a-cell"], values, 6_000_000)
    store = Store(db)
    store._db.execute("DELETE FROM samples WHERE cell='a-cell' AND step=5999990")  # a gap
    store.close()
    cell, step_s, steps, grid = read_cell_series(db, 0)
    assert cell == "a-cell" and step_s == STEP and len(steps) == len(values)
    assert np.isnan(grid[steps == 5_999_990]).all()
    monkeypatch.setenv("FEDGE_AGENT_STORE", str(db))
    sites = open_sites({"kind": "agent_store"})
    assert sites.num_sites == 2
    series = sites.site(1)
    assert series.site_id == "b-cell" and series.step_minutes == 5
    np.testing.assert_allclose(series.values, values, equal_nan=True)
    spec_json = json.dumps({"kind": "agent_store", "path": str(db)})
    task = site_task(spec_json, 0, ForecastSpec(hidden=(8, 4)), 1, 1)
    assert len(task.prepared.x_train) > 0 and np.isfinite(task.prepared.x_train).all()
    with pytest.raises(DataError, match="outside"):
        sites.site(5)
    with pytest.raises(DataError, match="no agent store"):
        open_sites({"kind": "agent_store", "path": str(tmp_path / "none.db")})
    monkeypatch.delenv("FEDGE_AGENT_STORE")
    with pytest.raises(DataError, match="FEDGE_AGENT_STORE"):
        open_sites({"kind": "agent_store", "x": 1})
    empty = tmp_path / "empty.db"
    Store(empty, step_seconds=STEP).close()
    with pytest.raises(StoreError, match="no samples yet"):
        read_cell_series(empty, 0)


def test_the_background_checkpointer_backfills_the_wal_outside_commits(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = Store(db, step_seconds=STEP)
    try:
        store.start_checkpointer(interval_s=0.05)
        # commits never checkpoint (one inside a commit is the hot path's latency tail) ...
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = db.stat().st_size
        samples = [
            KpiSample(f"cell-{c:04d}", float(s * STEP), s, (1.0, 2.0, 3.0, 4.0, 5.0))
            for c in range(500)
            for s in range(10)
        ]
        store.commit_batch(samples, [], time.time())
        # ... yet the pages reach the main file: the checkpointer thread copied them back
        deadline = time.monotonic() + 20
        while db.stat().st_size < before + 100_000:
            assert time.monotonic() < deadline, "the WAL was never checkpointed"
            time.sleep(0.05)
    finally:
        store.close()
    assert not any(t.name == "fedge-checkpoint" for t in threading.enumerate())
    store = Store(db)
    try:
        assert store.sample_count() == 5000
    finally:
        store.close()
