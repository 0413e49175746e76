"""Shared fixtures: small decision data without training a forecaster, the smoke preset's
federated arrays, and one trained policy set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.decisions import HOUR_STEPS, DecisionData, make_clusters
from fedge.models import Weights
from fedge.simulation import GeneratorConfig
from fedge.simulation._decision_train import DECISION_PRESETS, Trained, config_data, train
from fedge.simulation._source import GeneratedSites


def oracle_data(num_sites: int = 8, days: int = 6, seed: int = 3) -> DecisionData:
    """Generated sites with the actual future as the 'forecast': fast and exact for invariants."""
    source = GeneratedSites(GeneratorConfig(num_sites=num_sites, days=days, seed=seed))
    series = [source.site(i) for i in range(num_sites)]
    load = np.stack([s.values[:, 0].astype(np.float64) / 100.0 for s in series])
    ues = np.stack([s.values[:, 3].astype(np.float64) for s in series])
    ues = ues / ues.max(axis=1, keepdims=True)
    steps = load.shape[1]
    fc_load = np.full((num_sites, steps, HOUR_STEPS), np.nan)
    fc_ues = np.full((num_sites, steps, HOUR_STEPS), np.nan)
    for h in range(HOUR_STEPS):
        fc_load[:, : steps - h - 1, h] = load[:, h + 1 :]
        fc_ues[:, : steps - h - 1, h] = ues[:, h + 1 :]
    spd = series[0].steps_per_day
    return DecisionData(
        site_ids=tuple(s.site_id for s in series),
        archetypes=tuple(s.archetype for s in series),
        load=load,
        ues=ues,
        fc_load=fc_load,
        fc_ues=fc_ues,
        minute_of_week=series[0].minute_of_week(),
        steps_per_day=spd,
        val_start=steps - 2 * spd,
        test_start=steps - spd,
        clusters=make_clusters(num_sites, 4),
    )


@pytest.fixture(scope="session")
def data() -> DecisionData:
    return oracle_data()


@pytest.fixture(scope="session")
def federated() -> tuple[DecisionData, Weights]:
    """The smoke preset's decision arrays, forecasts from its federated forecaster, once."""
    return config_data(DECISION_PRESETS["smoke"])


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, federated: tuple[DecisionData, Weights]
) -> Trained:
    """The smoke preset trained once (DQN and PPO on the federated forecaster's arrays)."""
    out: Path = tmp_path_factory.mktemp("policies")
    return train(DECISION_PRESETS["smoke"], out, forecast=federated[0])
