from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fedge._cli import _register, app
from simulation._decision_train import DecisionConfig, decision_preset
from simulation._errors import DecisionError

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["decisions", "train", "--preset", "nope"], "unknown decision preset 'nope'"),
        (["decisions", "train", "--preset", "smoke", "--dqn-steps", "5"], "at least 100 DQN"),
    ],
)
def test_train_rejects_bad_settings(args: list[str], message: str) -> None:
    _register()
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, DecisionError) and message in str(result.exception)


def test_config_validation() -> None:
    assert decision_preset("default").dqn_timesteps > decision_preset("smoke").dqn_timesteps
    for bad in ({"cluster_size": 1}, {"forecast_epochs": 0}, {"ppo_timesteps": 1}, {"val_days": 0}):
        with pytest.raises(DecisionError):
            DecisionConfig(**bad)  # type: ignore[arg-type]
