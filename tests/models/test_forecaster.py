from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.models import (
    ForecastSpec,
    LoadForecaster,
    ModelError,
    OnnxForecaster,
    asymmetric_loss,
    export_onnx,
    get_weights,
    predict,
    prepare_site,
    set_weights,
    train_epochs,
)
from fedge.simulation import TARGET_INDEX, GeneratorConfig, SiteGenerator


def test_reference_architecture() -> None:
    model = LoadForecaster(ForecastSpec(horizon=3))
    assert model.lstm1.hidden_size == 128 and model.lstm2.hidden_size == 64
    assert model.lstm1.input_size >= 5
    out = model(torch.zeros(4, 12, model.spec.n_features))
    assert out.shape == (4, 3, 3)


def test_persistence_skip_starts_from_the_latest_observation() -> None:
    spec = ForecastSpec(horizon=2)
    model = LoadForecaster(spec)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    x = torch.randn(5, 12, spec.n_features)
    out = model(x)
    latest = x[:, -1, list(TARGET_INDEX)]
    assert torch.equal(out[:, 0, :], latest) and torch.equal(out[:, 1, :], latest)
    plain = LoadForecaster(ForecastSpec(horizon=2, persistence_skip=False))
    with torch.no_grad():
        plain.head.weight.zero_()
        plain.head.bias.zero_()
    assert float(plain(x).abs().max()) == 0.0
    # A partial spec keeps the class's defaults, the skip among them.
    assert ForecastSpec.from_dict({"horizon": 2}) == spec
    assert ForecastSpec.from_dict(spec.to_dict()) == spec


def test_under_forecast_costs_five_times_over_forecast() -> None:
    target = torch.tensor([[[1.0, 1.0, 1.0]]])
    under = asymmetric_loss(target - 0.2, target, 5.0, 1.0)
    over = asymmetric_loss(target + 0.2, target, 5.0, 1.0)
    assert float(under) == pytest.approx(5 * float(over))
    assert float(asymmetric_loss(target, target, 5.0, 1.0)) == 0.0


def test_training_reduces_loss_and_leans_high() -> None:
    torch.manual_seed(0)
    site = SiteGenerator(GeneratorConfig(num_sites=1, days=6)).site(0)
    spec = ForecastSpec(horizon=1)
    p = prepare_site(
        site.values, site.minute_of_week(), site.steps_per_day, spec, TARGET_INDEX, 1, 1
    )
    model = LoadForecaster(spec)
    first = train_epochs(
        model, p.x_train, p.y_train, epochs=1, batch_size=64, learning_rate=3e-3, seed=0
    )
    last = train_epochs(
        model, p.x_train, p.y_train, epochs=3, batch_size=64, learning_rate=3e-3, seed=1
    )
    assert last < first
    residual = p.y_val - predict(model, p.x_val)
    # The asymmetric loss makes under-forecasts (residual > 0) the rarer side.
    assert (residual > 0).mean() < 0.5


def test_weights_round_trip_and_shape_errors() -> None:
    a, b = LoadForecaster(ForecastSpec()), LoadForecaster(ForecastSpec())
    set_weights(b, get_weights(a))
    x = torch.randn(2, 12, a.spec.n_features)
    assert torch.equal(a(x), b(x))
    w = get_weights(a)
    with pytest.raises(ModelError, match="expected"):
        set_weights(b, w[:-1])
    w[0] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ModelError, match="shape"):
        set_weights(b, w)


def test_training_refuses_empty_or_mismatched_data() -> None:
    model = LoadForecaster(ForecastSpec())
    x = np.zeros((0, 12, 9), dtype=np.float32)
    with pytest.raises(ModelError, match="no training windows"):
        train_epochs(model, x, x, epochs=1, batch_size=8, learning_rate=1e-3, seed=0)
    x = np.zeros((4, 12, 9), dtype=np.float32)
    with pytest.raises(ModelError, match="epochs must be positive"):
        train_epochs(
            model,
            np.zeros((4, 12, 9), dtype=np.float32),
            np.zeros((4, 1, 3), dtype=np.float32),
            epochs=0,
            batch_size=8,
            learning_rate=1e-3,
            seed=0,
        )
    with pytest.raises(ModelError, match="differ"):
        train_epochs(
            model,
            x,
            np.zeros((3, 1, 3), dtype=np.float32),
            epochs=1,
            batch_size=8,
            learning_rate=1e-3,
            seed=0,
        )


@pytest.mark.parametrize("horizon", [1, 3])
def test_onnx_parity(tmp_path: Path, horizon: int) -> None:
    torch.manual_seed(1)
    model = LoadForecaster(ForecastSpec(horizon=horizon))
    path = export_onnx(model, tmp_path / "m.onnx")
    onnx_model = OnnxForecaster(path)
    assert onnx_model.spec == model.spec
    x = np.random.default_rng(0).normal(size=(64, 12, model.spec.n_features)).astype(np.float32)
    diff = np.abs(onnx_model.predict(x) - predict(model, x)).max()
    assert diff <= 1e-4


def test_onnx_runtime_refuses_bad_models_and_inputs(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model"):
        OnnxForecaster(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable"):
        OnnxForecaster(junk)
    model = OnnxForecaster(export_onnx(LoadForecaster(ForecastSpec()), tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="input must be"):
        model.predict(np.zeros((1, 6, 9), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lookback": 0}, "lookback"),
        ({"horizon": 0}, "horizon"),
        ({"hidden": (128,)}, "hidden"),
        ({"beta_under": 0}, "positive"),
    ],
)
def test_bad_specs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ForecastSpec(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ModelError):
        ForecastSpec.from_dict({"lookback": "many"})
