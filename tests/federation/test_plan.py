from __future__ import annotations

import pytest

from fedge.federation import FederationError, FederationPlan, cosine_lr
from fedge.models import ForecastSpec

SPEC = '{"kind": "generator", "num_sites": 2}'


def test_config_round_trip() -> None:
    plan = FederationPlan(
        data_spec=SPEC, strategy="fedprox", num_rounds=4, forecast=ForecastSpec(horizon=3)
    )
    assert FederationPlan.from_config(plan.to_config()) == plan


def test_learning_rate_decays_to_a_tenth() -> None:
    assert cosine_lr(1.0, 0, 10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 9, 10) == pytest.approx(0.1)
    assert cosine_lr(1.0, 0, 1) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "fedmagic"}, "strategy"),
        ({"num_rounds": 0}, "num_rounds"),
        ({"fraction_train": 0.0}, "fraction_train"),
        ({"fraction_evaluate": 1.5}, "fraction_evaluate"),
        ({"local_epochs": 0}, "local_epochs"),
        ({"local_epochs": float("inf")}, "local_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"proximal_mu": -0.1}, "proximal_mu"),
        ({"test_days": 0}, "test_days"),
        ({"data_spec": "{"}, "not JSON"),
        ({"round_timeout": 0.0}, "round_timeout"),
        ({"round_timeout": float("nan")}, "round_timeout"),
        ({"round_timeout": 100_000.0}, "round_timeout"),
        ({"round_timeout": "60"}, "round_timeout"),
        ({"min_nodes": 0}, "min_nodes"),
        ({"min_nodes": 1.5}, "min_nodes"),
        ({"min_nodes": True}, "min_nodes"),
    ],
)
def test_bad_plans_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"data_spec": SPEC, **kwargs}
    with pytest.raises(FederationError, match=message):
        FederationPlan(**args)  # type: ignore[arg-type]


def test_unknown_config_types_are_refused() -> None:
    with pytest.raises(FederationError, match=r"bad federation config|num_rounds"):
        FederationPlan.from_config({"data-spec": SPEC, "num-rounds": "ten"})


def test_bad_forecast_json_is_refused() -> None:
    with pytest.raises(FederationError, match="forecast is not JSON"):
        FederationPlan.from_config({"data-spec": SPEC, "forecast": "{"})
