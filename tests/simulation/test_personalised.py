"""Personalised federation in the simulation: a shared model adapted on a site's own days."""

from __future__ import annotations

import json

import pytest
import torch

from fedge.federation import FederationPlan
from fedge.models import ForecastSpec, LoadForecaster, get_weights, predict, train_epochs
from fedge.models._personal import asymmetric_cost
from fedge.simulation import GeneratorConfig, SimulationError
from fedge.simulation._config import SimulationConfig
from fedge.simulation._personalised import personalise
from fedge.simulation._site_task import site_task
from fedge.simulation._source import GeneratedSites


def _plan() -> FederationPlan:
    source = GeneratedSites(GeneratorConfig(num_sites=2, days=14, step_minutes=30, seed=4))
    return FederationPlan(
        data_spec=json.dumps(source.spec(), sort_keys=True),
        strategy="fedavg",
        num_rounds=1,
        fraction_train=1.0,
        fraction_evaluate=1.0,
        local_epochs=1.0,
        batch_size=64,
        learning_rate=3e-3,
        proximal_mu=0.0,
        seed=0,
        val_days=2,
        test_days=2,
        forecast=ForecastSpec(lookback=6, horizon=2, hidden=(12, 8)),
    )


def test_each_adaptation_lowers_the_error_of_a_site_unlike_the_shared_models_own() -> None:
    plan = _plan()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    home = site_task(plan.data_spec, 0, plan.forecast, plan.val_days, plan.test_days)
    model = LoadForecaster(plan.forecast)  # the shared model knows a residential site only
    p = home.prepared
    train_epochs(model, p.x_train, p.y_train, epochs=3, batch_size=64, learning_rate=3e-3, seed=0)
    weights = get_weights(model)
    other = site_task(plan.data_spec, 1, plan.forecast, plan.val_days, plan.test_days)
    assert other.series.archetype != home.series.archetype
    y = other.prepared.y_test
    shared = asymmetric_cost(y - predict(model, other.prepared.x_test), 5.0, 1.0)
    for method in ("fedavg+cal", "fedavg+head", "fedavg+ft", "fedavg+ft+cal"):
        adapted = personalise(method, weights, plan, {1: other})[1]
        assert adapted.shape == y.shape
        assert asymmetric_cost(y - adapted, 5.0, 1.0) < 0.8 * shared, method
    with pytest.raises(SimulationError, match="unknown personalised method"):
        personalise("fedavg+magic", weights, plan, {1: other})


def test_a_personalised_method_needs_its_federated_model_first() -> None:
    cfg = GeneratorConfig(num_sites=2, days=8)
    with pytest.raises(SimulationError, match="list fedavg before it"):
        SimulationConfig(generator=cfg, methods=("fedavg+cal",))
    with pytest.raises(SimulationError, match="list fedavg before it"):
        SimulationConfig(generator=cfg, methods=("fedavg+ft", "fedavg"))
    with pytest.raises(SimulationError, match="unknown method"):
        SimulationConfig(generator=cfg, methods=("fedavg", "fedprox+cal"))
    ok = SimulationConfig(generator=cfg, methods=("fedavg", "fedavg+cal", "local"))
    assert ok.methods[1] == "fedavg+cal"
