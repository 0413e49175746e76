"""The agent's personalisation: each cell's calibration of the served model, fitted on its
own stored KPIs, re-fitted for every candidate, compared like with like, kept in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedge.core import ModelBundle
from fedge.edge_agent import (
    AnomalyConfig,
    ConfigError,
    ForecastEngine,
    ModelManager,
    Serving,
    Store,
    parse_config,
    shadow_score,
)
from fedge.edge_agent._config import ModelConfig
from fedge.edge_agent._personal import STATE_PREFIX, fit_cells, load_personal
from fedge.models import OnnxForecaster
from tests.edge_agent.conftest import STEP, Models, seed_history, site_values

LAST = 5_000_000


def _store(tmp_path: Path, days: int = 8) -> Store:
    values, _ = site_values(days=days)
    seed_history(tmp_path / "a.db", ["a"], values, LAST)
    return Store(tmp_path / "a.db")


def test_a_calibration_corrects_a_model_whose_forecasts_do_not_fit_the_cell(
    tmp_path: Path, tiny_models: Models
) -> None:
    store = _store(tmp_path)
    try:
        data = ForecastEngine(store, STEP, AnomalyConfig()).recent_features(2.0, fit_days=5.0)
        assert data[0].cell == "a" and data[0].shadow_from > 5 * 288 - 5
        biased = OnnxForecaster(tiny_models.bad)  # three standard deviations too high
        personal = fit_cells(biased, data)
        assert set(personal) == {"a"}
        plain, n = shadow_score(biased, data, 5.0, 1.0)
        tuned, m = shadow_score(biased, data, 5.0, 1.0, personal)
        assert n == m and 2 * 288 - 20 < n <= 2 * 288  # only the shadow days are scored
        assert tuned < 0.05 * plain
        good, _ = shadow_score(OnnxForecaster(tiny_models.good), data, 5.0, 1.0)
        assert tuned < 1.1 * good  # corrected to about what the unbiased model scores
    finally:
        store.close()


def test_the_gate_compares_the_personalised_candidate_with_the_personalised_serving_model(
    tmp_path: Path, tiny_models: Models
) -> None:
    store = _store(tmp_path)
    try:
        engine = ForecastEngine(store, STEP, AnomalyConfig())
        plain_cfg = ModelConfig(dir=tmp_path / "m0", initial=tiny_models.good)
        cfg = ModelConfig(
            dir=tmp_path / "m", initial=tiny_models.good, personalise=True, personal_days=5.0
        )
        # without personalisation the biased candidate loses the gate
        plain = ModelManager(Store(tmp_path / "plain.db"), plain_cfg)
        plain.load_serving()
        verdict = plain.consider(
            ModelBundle("v2", tiny_models.bad.read_bytes()), engine.judging_data(plain_cfg)
        )
        assert not verdict.accepted
        plain.store.close()

        manager = ModelManager(store, cfg)
        manager.load_serving()
        data = engine.judging_data(cfg)
        good, bad = OnnxForecaster(tiny_models.good), OnnxForecaster(tiny_models.bad)
        want_serving = shadow_score(good, data, 5.0, 1.0, fit_cells(good, data))[0]
        want_candidate = shadow_score(bad, data, 5.0, 1.0, fit_cells(bad, data))[0]
        verdict = manager.consider(ModelBundle("v2", tiny_models.bad.read_bytes()), data)
        assert verdict.serving_score == pytest.approx(want_serving)
        assert verdict.candidate_score == pytest.approx(want_candidate)
        assert verdict.accepted  # personalised, the bias is gone: like with like
        serving = manager.serving
        assert serving is not None and serving.version == "v2" and set(serving.personal) == {"a"}

        # kept across a restart; the forecasts are the personalised ones
        again = ModelManager(store, cfg).load_serving()
        assert again is not None and set(again.personal) == {"a"}
        engine.cell("a")
        tuned = engine.forecast(["a"], again)[0].values
        raw = engine.forecast(["a"], Serving("v2", again.model))[0].values
        assert tuned != raw
        # a stored record that does not fit the model is dropped, never served
        store.put_state(STATE_PREFIX + "v2", b'{"v": 1, "cells": {"a": {"spec": {}}}}')
        assert load_personal(store, "v2", again.model) == {}
    finally:
        store.close()


def _cfg(**model: Any) -> dict[str, Any]:
    return {"agent": {"site": "s1"}, "store": {"path": "a.db"}, "model": {"dir": "m", **model}}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"personalise": "yes"}, "model.personalise: expected bool"),
        ({"personal_days": 0}, "model.personal_days: must be > 0"),
        ({"personal_days": 90}, "model.personal_days: at most 28"),
        ({"personal_days": "7"}, "model.personal_days: expected float"),
    ],
)
def test_bad_personalisation_settings_are_refused(
    model: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_cfg(**model), tmp_path)
    ok = parse_config(_cfg(personalise=True, personal_days=3), tmp_path).model
    assert ok.personalise and ok.personal_days == 3.0
