from __future__ import annotations

import numpy as np
import pytest

from fedge.models import ForecastSpec, ModelError, SiteScaler, prepare_site, split_bounds
from fedge.simulation import TARGET_INDEX, GeneratorConfig, SiteGenerator


def site_and_prep(values: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    site = SiteGenerator(GeneratorConfig(num_sites=1, days=8)).site(0)
    v = site.values if values is None else values
    spec = ForecastSpec(horizon=3)
    return site, prepare_site(
        v, site.minute_of_week(), site.steps_per_day, spec, TARGET_INDEX, 2, 2
    )


def test_scaler_sees_only_the_training_split() -> None:
    site, p = site_and_prep()
    val_start, _ = split_bounds(site.steps, site.steps_per_day, 2, 2)
    poisoned = site.values.copy()
    poisoned[val_start:] *= 50.0  # wild validation/test values must not move anything fitted
    _, q = site_and_prep(poisoned)
    np.testing.assert_array_equal(p.scaler.mean, q.scaler.mean)
    np.testing.assert_array_equal(p.scaler.std, q.scaler.std)
    assert p.profile is not None and q.profile is not None
    np.testing.assert_array_equal(p.profile.table, q.profile.table)
    np.testing.assert_array_equal(p.x_train, q.x_train)
    np.testing.assert_array_equal(p.y_train, q.y_train)
    assert not np.array_equal(p.y_test, q.y_test)


def test_splits_are_ordered_and_targets_stay_in_their_split() -> None:
    site, p = site_and_prep()
    val_start, test_start = split_bounds(site.steps, site.steps_per_day, 2, 2)
    assert p.test_ends.min() + 1 == test_start
    assert p.val_ends.min() + 1 == val_start
    assert p.val_ends.max() + 3 < test_start
    assert len(p.x_train) + 3 - 1 + 12 == val_start  # last training target is val_start - 1


def test_missing_kpi_scales_to_zero_and_inverse_is_exact() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(50, 10, size=(100, 5))
    v[:, 1] = np.nan
    s = SiteScaler.fit(v)
    z = s.transform(v)
    assert (z[:, 1] == 0).all()
    np.testing.assert_allclose(s.inverse(z[:, [0, 2]], (0, 2)), v[:, [0, 2]], rtol=1e-5)
    assert SiteScaler.from_dict(s.to_dict()).to_dict() == s.to_dict()


def test_bad_inputs() -> None:
    with pytest.raises(ModelError, match="training split"):
        SiteScaler.fit(np.zeros((1, 5)))
    with pytest.raises(ModelError, match="scaler record"):
        SiteScaler.from_dict({"mean": [0.0]})
    with pytest.raises(ModelError, match="too short"):
        split_bounds(288 * 4, 288, 2, 2)
