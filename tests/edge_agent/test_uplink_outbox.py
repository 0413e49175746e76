"""The store's outbox: forecasts and actuals kept until the coordinator acknowledged them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fedge.core import KPI_NAMES, TARGET_INDEX
from fedge.edge_agent._errors import StoreError
from fedge.edge_agent._kpi import KpiSample
from fedge.edge_agent._store import SCHEMA_VERSION, ForecastRow, Store

STEP = 300


def _sample(cell: str, step: int, base: float = 10.0) -> KpiSample:
    values = tuple(base + i for i in range(len(KPI_NAMES)))
    return KpiSample(cell, float(step * STEP), step, values)


def _forecast(cell: str, made: int, h: int, version: str = "v1") -> ForecastRow:
    return ForecastRow(cell, made + h, made, version, (1.0 * h, 2.0, 3.0))


def _targets(sample: KpiSample) -> tuple[float, ...]:
    return tuple(float(sample.values[i]) for i in TARGET_INDEX)  # type: ignore[arg-type]


def test_rows_wait_oldest_first_until_acknowledged(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP, outbox=True)
    try:
        first = [_sample("c0", 100), _sample("c1", 100)]
        store.commit_batch(first, [_forecast("c0", 100, 1), _forecast("c0", 100, 2)], 1.0)
        store.commit_batch([_sample("c0", 101)], [_forecast("c0", 101, 1)], 2.0)
        assert store.outbox_counts() == (6, 0)
        batch = store.outbox_batch(2)
        assert batch.model_version == "v1"
        assert [(f.cell, f.step, f.made_step) for f in batch.forecasts] == [
            ("c0", 101, 100),
            ("c0", 102, 100),
        ]
        assert [(a.cell, a.step, a.values) for a in batch.actuals] == [
            ("c0", 100, _targets(first[0])),
            ("c1", 100, _targets(first[1])),
        ]
        store.outbox_ack(batch.ids)
        assert store.outbox_counts() == (2, 0)
        rest = store.outbox_batch(10)
        assert [(f.step, f.made_step) for f in rest.forecasts] == [(102, 101)]
        assert [(a.cell, a.step) for a in rest.actuals] == [("c0", 101)]
    finally:
        store.close()
    reopened = Store(tmp_path / "a.db", step_seconds=STEP, outbox=True)
    try:  # what was not acknowledged survives a restart
        assert reopened.outbox_counts() == (2, 0)
        assert reopened.outbox_batch(10).ids == rest.ids
    finally:
        reopened.close()


def test_a_batch_carries_one_model_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP, outbox=True)
    try:
        store.commit_batch([], [_forecast("c0", 100, 1, "v1")], 1.0)
        store.commit_batch([], [_forecast("c0", 101, 1, "v2")], 2.0)
        store.commit_batch([], [_forecast("c0", 102, 1, "v1")], 3.0)
        first = store.outbox_batch(10)
        assert first.model_version == "v1"
        assert [f.made_step for f in first.forecasts] == [100, 102]
        store.outbox_ack(first.ids)
        second = store.outbox_batch(10)
        assert second.model_version == "v2" and [f.made_step for f in second.forecasts] == [101]
    finally:
        store.close()


def test_refused_rows_are_kept_but_not_sent_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP, outbox=True)
    try:
        store.commit_batch([_sample("c0", 100)], [_forecast("c0", 100, 1)], 1.0)
        store.commit_batch([_sample("c0", 101)], [_forecast("c0", 101, 1)], 2.0)
        bad = store.outbox_batch(1)
        store.outbox_refuse(bad.ids)
        assert store.outbox_counts() == (2, 2)
        good = store.outbox_batch(10)
        assert [f.made_step for f in good.forecasts] == [101]
        assert [a.step for a in good.actuals] == [101]
        assert len(store.forecasts_for("c0", 100)) == 1  # the data itself stays
        assert store.sample("c0", 100) is not None
    finally:
        store.close()


def test_an_actual_without_every_target_is_not_queued_and_a_remade_forecast_is(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP, outbox=True)
    try:
        values = list(_sample("c0", 100).values)
        values[TARGET_INDEX[0]] = None
        partial = KpiSample("c0", 100.0 * STEP, 100, tuple(values))
        store.commit_batch([partial], [_forecast("c0", 100, 1)], 1.0)
        batch = store.outbox_batch(10)
        assert batch.actuals == [] and len(batch.forecasts) == 1
        store.outbox_ack(batch.ids)
        store.commit_batch([], [_forecast("c0", 100, 1)], 2.0)  # made again (redelivery)
        assert store.outbox_counts() == (1, 0)
    finally:
        store.close()


def test_without_a_coordinator_nothing_is_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP)
    try:
        store.commit_batch([_sample("c0", 100)], [_forecast("c0", 100, 1)], 1.0)
        assert store.outbox_counts() == (0, 0)
        assert store.outbox_batch(10).ids == []
    finally:
        store.close()


def test_retention_bounds_the_outbox(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP, outbox=True)
    try:
        store.commit_batch([_sample("c0", 100)], [_forecast("c0", 100, 1)], 1.0)
        store.commit_batch([_sample("c0", 200)], [_forecast("c0", 200, 1)], 50_000.0)
        assert store.outbox_counts() == (4, 0)
        # samples and forecasts older than step 150 go, and with them their outbox rows
        store.enforce_retention(150 * STEP + 100_000, 100_000, 10**9)
        assert store.outbox_counts() == (2, 0)
        batch = store.outbox_batch(10)
        assert [f.made_step for f in batch.forecasts] == [200]
        assert [a.step for a in batch.actuals] == [200]
    finally:
        store.close()


def test_a_schema_1_store_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = Store(path, step_seconds=STEP)
    store.commit_batch([_sample("c0", 100)], [_forecast("c0", 100, 1)], 1.0)
    store.close()
    with sqlite3.connect(path) as conn:  # what an agent of schema 1 left behind
        conn.execute("DROP TABLE outbox")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema'")
    migrated = Store(path, step_seconds=STEP, outbox=True)
    try:
        with sqlite3.connect(path) as conn:
            schema = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
        assert int(schema) == SCHEMA_VERSION == 2
        assert migrated.sample("c0", 100) is not None
        assert len(migrated.forecasts_for("c0", 100)) == 1
        migrated.commit_batch([_sample("c0", 101)], [_forecast("c0", 101, 1)], 2.0)
        assert migrated.outbox_counts() == (2, 0)
    finally:
        migrated.close()


def test_forecast_errors_per_cell_target_and_horizon(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP)
    try:
        samples = [_sample("c0", s, base=float(s - 100)) for s in (101, 102, 103)]
        forecasts = [
            ForecastRow("c0", 101, 100, "v1", (0.5, 0.0, 0.0)),
            ForecastRow("c0", 102, 101, "v1", (1.0, 0.0, 0.0)),
            ForecastRow("c0", 103, 101, "v1", (4.0, 0.0, 0.0)),
        ]
        store.commit_batch(samples, forecasts, 1.0)
        errors = {(e.horizon_steps, e.target): e for e in store.forecast_errors(0.0)}
        first = errors[(1, "dl_prb_util")]
        actual = [float(s.values[TARGET_INDEX[0]]) for s in samples[:2]]  # type: ignore[arg-type]
        diffs = [0.5 - actual[0], 1.0 - actual[1]]
        assert first.count == 2
        assert first.mae == pytest.approx(sum(map(abs, diffs)) / 2)
        assert first.rmse == pytest.approx((sum(d * d for d in diffs) / 2) ** 0.5)
        assert first.bias == pytest.approx(sum(diffs) / 2)
        second = errors[(2, "dl_prb_util")]
        assert second.count == 1
        assert second.bias == pytest.approx(4.0 - float(samples[2].values[TARGET_INDEX[0]]))  # type: ignore[arg-type]
        assert store.forecast_errors(10_000.0 * STEP) == []  # nothing in the window
    finally:
        store.close()


def test_only_a_model_served_before_is_reinstated(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", step_seconds=STEP)
    try:
        store.record_model("v1", tmp_path / "v1.onnx", "00", serve=True)
        store.record_model("v2", tmp_path / "v2.onnx", "11", serve=True)
        store.record_model("v3", tmp_path / "v3.onnx", "22", serve=False, reason="worse")
        with pytest.raises(StoreError, match="model v3 is rejected"):
            store.reinstate("v3")
        with pytest.raises(StoreError, match="model v9 is unknown"):
            store.reinstate("v9")
        serving = store.serving()
        assert serving is not None and serving.version == "v2"  # nothing changed
        assert store.reinstate("v1").state == "serving"
        assert {m.version: m.state for m in store.models()} == {
            "v1": "serving",
            "v2": "rolled_back",
            "v3": "rejected",
        }
    finally:
        store.close()
