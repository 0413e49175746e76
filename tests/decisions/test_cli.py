from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge._cli import _register, app
from fedge.decisions import DecisionError
from fedge.simulation._decision_train import DecisionConfig, decision_preset

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["decisions", "train", "--preset", "nope"], "unknown decision preset 'nope'"),
        (["decisions", "train", "--preset", "smoke", "--dqn-steps", "5"], "at least 100 DQN"),
        (["decisions", "train", "--preset", "smoke", "--headroom", "1.5"], "headroom must be"),
        (["decisions", "train", "--preset", "smoke", "--headroom", "0"], "headroom must be"),
        (["decisions", "train", "--preset", "smoke", "--sleep-w", "200"], "idle power"),
        (["decisions", "train", "--preset", "smoke", "--idle-w", "-1"], "P0 > 0"),
        (["decisions", "train", "--power-model", "nope"], "unknown power model 'nope'"),
        (["decisions", "train", "--power-model", "tr38864", "--sleep-w", "40"], "EARTH figures"),
    ],
)
def test_train_rejects_bad_settings(args: list[str], message: str) -> None:
    _register()
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, DecisionError) and message in str(result.exception)


def test_config_validation() -> None:
    assert decision_preset("default").dqn_timesteps > decision_preset("smoke").dqn_timesteps
    for bad in (
        {"cluster_size": 1},
        {"forecast_rounds": 0},
        {"ppo_timesteps": 1},
        {"val_days": 0},
        {"headroom": float("nan")},
        {"headroom": -0.1},
    ):
        with pytest.raises(DecisionError):
            DecisionConfig(**bad)


@pytest.mark.slow
def test_train_command_writes_policies_and_prints_the_ceilings(tmp_path: Path) -> None:
    _register()
    out = tmp_path / "policies"
    result = runner.invoke(
        app,
        [
            "decisions",
            "train",
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--headroom",
            "0.9",
            "--sleep-w",
            "40",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # rich wraps at the runner's width
    assert "ceiling (earth): at most" in printed and "without foresight" in printed
    assert "of ceiling" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["headroom"] == 0.9 and manifest["config"]["headroom"] == 0.9
    assert manifest["power"]["sleep_w"] == 40 and manifest["power"]["p0_w"] == 130
    assert manifest["power"]["source"].startswith("operator figures")
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert "hindsight_bound" in evaluation["energy"] and "ppo" in evaluation["slices"]
    assert evaluation["power_model"]["sleep_w"] == 40
