"""Settings of compressed runs are validated where they enter: plan, simulation config, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedge.federation import STRATEGIES, FederationError, FederationPlan
from fedge.simulation._config import SimulationConfig
from fedge.simulation._errors import SimulationError

SPEC = json.dumps({"kind": "generator", "num_sites": 2, "days": 8, "seed": 0})


def test_plan_accepts_every_strategy_and_codec_settings() -> None:
    for s in STRATEGIES:
        assert FederationPlan(SPEC, strategy=s, codec="topk:0.03").strategy == s
    plan = FederationPlan(
        SPEC, codec="int8", residual_decay=0.5, feedback="residual", downlink_codec="int8-channel"
    )
    assert FederationPlan.from_config(plan.to_config()) == plan


@pytest.mark.parametrize(
    "kwargs",
    [
        {"codec": "int3"},
        {"residual_decay": 0.0},
        {"residual_decay": 1.5},
        {"trim_beta": 0.5},
        {"krum_malicious": -1},
        {"strategy": "bulyan"},
        {"downlink_codec": "topk:0.03"},  # a global model is dense: every site needs it all
        {"downlink_codec": "sign"},
        {"downlink_codec": "int3"},
        {"feedback": "momentum"},
        {"residual_decay": 0.5},  # the default feedback is tracked: a decay would be ignored
    ],
)
def test_plan_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(FederationError):
        FederationPlan(SPEC, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"codec": "int3"},
        {"attacks": "boosted=0.1"},  # attacks need a codec
        {"codec": "int8", "attacks": "boosted=zero"},
        {"codec": "int8", "sweep": ("none",)},
        {"codec": "int8", "sweep": ("int8", "topk:9")},
        {"residual_decay": 0.0},
        {"methods": ("fedavg", "bulyan")},
        {"codec": "int8", "downlink_codec": "int4"},
        {"codec": "int8", "feedback": "momentum"},
        {"codec": "int8", "residual_decay": 0.5},
    ],
)
def test_simulation_config_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(SimulationError):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]


def test_cli_reports_a_bad_codec_as_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fedge._cli import main

    args = [
        "fedge",
        "simulate",
        "--preset",
        "smoke",
        "--codec",
        "int3",
        "--runs-dir",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "unknown codec" in capsys.readouterr().err


def test_cli_refuses_a_sparse_downlink_codec(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fedge._cli import main

    args = ["fedge", "simulate", "--preset", "smoke", "--codec", "int8"]
    args += ["--downlink-codec", "topk:0.03", "--runs-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "downlink codec must be one of fp32, fp16, int8, int8-channel" in capsys.readouterr().err
