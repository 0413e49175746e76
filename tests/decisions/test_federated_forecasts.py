"""The decision policies learn on the forecasts of the federated model the fleet serves."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fedge.core import KPI_NAMES, MANIFEST, TARGET_INDEX
from fedge.decisions import HOUR_STEPS, DecisionData, DecisionError
from fedge.models import (
    LoadForecaster,
    SiteScaler,
    Weights,
    fit_profile,
    predict,
    set_weights,
    site_features,
    windows,
)
from fedge.simulation._decision_data import build_data, hour_ahead_spec
from fedge.simulation._decision_eval import held_out
from fedge.simulation._decision_train import DECISION_PRESETS, Trained
from fedge.simulation._source import GeneratedSites

_PRB = KPI_NAMES.index("dl_prb_util")


def test_the_record_names_the_federated_forecaster(
    federated: tuple[DecisionData, Weights],
) -> None:
    data, _ = federated
    c = DECISION_PRESETS["smoke"]
    rec = data.forecaster
    assert rec["method"] == "fedavg"
    assert rec["rounds"] == c.forecast_rounds
    assert 1 <= rec["best_round"] <= c.forecast_rounds
    assert rec["sites"] == data.num_sites
    assert rec["spec"] == hour_ahead_spec().to_dict()
    assert rec["spec"]["horizon"] == HOUR_STEPS
    # the recorded validation error is the arrays' own, lead times 1..12 on validation days
    ends = np.arange(data.val_start - 1, data.test_start - HOUR_STEPS)
    target = np.stack([data.load[:, ends + 1 + h] for h in range(HOUR_STEPS)], axis=-1)
    rmse = float(np.sqrt(np.mean((data.fc_load[:, ends] - target) ** 2)))
    assert rec["val_rmse_fc_load"] == pytest.approx(rmse, abs=1e-5)
    assert 0.0 < rec["val_rmse_fc_load"] < 0.5
    # the first decided block reads a forecast the model made (lookback 36 > one hour)
    first = int(data.block_starts("train")[0])
    assert first >= hour_ahead_spec().lookback
    assert np.isfinite(data.fc_load[:, first - 1]).all()


def test_blocks_start_after_the_first_forecast(data: DecisionData) -> None:
    assert int(data.block_starts("train")[0]) == HOUR_STEPS  # forecasts from step 0
    late = data.fc_load.copy()
    late[:, :30] = np.nan
    assert int(replace(data, fc_load=late).block_starts("train")[0]) == 33  # made at 30
    none = replace(data, fc_load=np.full_like(late, np.nan))
    assert none.block_starts("train").size == 0


def test_fc_load_is_the_federated_model_over_every_step(
    federated: tuple[DecisionData, Weights],
) -> None:
    """Rebuilt independently: each site's training-day scaler and profile, the returned
    weights in a fresh forecaster, every window of the series."""
    data, weights = federated
    c = DECISION_PRESETS["smoke"]
    source = GeneratedSites(c.generator)
    spec = hour_ahead_spec()
    model = LoadForecaster(spec)
    set_weights(model, weights)
    t_prb = TARGET_INDEX.index(_PRB)
    for k in (0, data.num_sites - 1):
        s = source.site(k)
        assert s.site_id == data.site_ids[k]
        mow = s.minute_of_week()
        scaler = SiteScaler.fit(s.values[: data.val_start])
        profile = fit_profile(
            s.values[: data.val_start],
            mow[: data.val_start],
            s.steps_per_day,
            scaler,
            TARGET_INDEX,
        )
        f = site_features(s.values, mow, scaler, profile, spec.horizon)
        ends = np.arange(spec.lookback - 1, s.steps - spec.horizon, dtype=np.int64)
        x, _ = windows(f, f[:, list(TARGET_INDEX)], ends, spec)
        want = scaler.inverse(predict(model, x), TARGET_INDEX)[..., t_prb] / 100.0
        np.testing.assert_allclose(data.fc_load[k, ends], np.clip(want, 0.0, None), atol=1e-6)
        assert np.isnan(data.fc_load[k, : spec.lookback - 1]).all()  # no window fits there


def test_the_manifest_and_report_carry_the_forecaster(trained: Trained) -> None:
    manifest = json.loads((trained.out_dir / MANIFEST).read_text())
    assert manifest["forecaster"] == json.loads(json.dumps(trained.data.forecaster))
    assert manifest["config"]["forecast_rounds"] == trained.config.forecast_rounds
    section = held_out(trained)
    assert section["forecaster"]["method"] == "fedavg"


@pytest.mark.parametrize(
    ("rounds", "local_epochs", "workers", "message"),
    [
        (0, 1.0, 2, "forecast_rounds must be >= 1"),
        (1, 0.0, 2, "local_epochs must be positive"),
        (1, 1.0, 0, "workers must be >= 1"),
    ],
)
def test_bad_forecaster_settings_are_refused(
    rounds: int, local_epochs: float, workers: int, message: str
) -> None:
    c = DECISION_PRESETS["smoke"]
    with pytest.raises(DecisionError, match=message):
        build_data(
            GeneratedSites(c.generator),
            c.cluster_size,
            c.val_days,
            c.test_days,
            rounds,
            c.seed,
            local_epochs=local_epochs,
            workers=workers,
        )
