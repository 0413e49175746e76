"""``check_onnx_model`` and the load/run checks of ``OnnxForecaster`` on hostile models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fedge.models import (
    ForecastSpec,
    LoadForecaster,
    ModelError,
    OnnxForecaster,
    check_onnx_model,
    export_onnx,
)

SPEC = ForecastSpec(lookback=12, horizon=1, hidden=(8, 4))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "good.onnx"
    return export_onnx(LoadForecaster(SPEC), path).read_bytes()


def with_spec(model: bytes, spec: object | None, raw: str | None = None) -> bytes:
    """``model`` with its forecast spec metadata replaced (``None``: removed)."""
    proto = onnx.load_from_string(model)
    keep = [p for p in proto.metadata_props if p.key != "fedge.forecast_spec"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    if spec is not None or raw is not None:
        entry = proto.metadata_props.add()
        entry.key = "fedge.forecast_spec"
        entry.value = raw if raw is not None else json.dumps(spec)
    return bytes(proto.SerializeToString())


def graph_model(
    in_shape: list[int | str],
    out_shape: list[int | str],
    weight_rows: int,
    spec: ForecastSpec,
    *,
    reduce: bool = True,
) -> bytes:
    """A hand-built graph: mean over time (unless not ``reduce``), then a (weight_rows, 3)
    MatMul."""
    x = helper.make_tensor_value_info("kpi_window", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("forecast", TensorProto.FLOAT, out_shape)
    w = numpy_helper.from_array(np.ones((weight_rows, 3), dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["m" if reduce else "kpi_window", "w"], ["forecast"])]
    if reduce:
        nodes.insert(0, helper.make_node("ReduceMean", ["kpi_window"], ["m"], axes=[1], keepdims=1))
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "fedge.forecast_spec", json.dumps(spec.to_dict())
    return bytes(model.SerializeToString())


def test_a_good_model_gives_its_spec(good: bytes) -> None:
    assert check_onnx_model(good) == SPEC
    loaded = OnnxForecaster(good)
    assert loaded.predict(np.zeros((2, 12, SPEC.n_features), dtype=np.float32)).shape == (2, 1, 3)


@pytest.mark.parametrize(
    "data", [b"", b"not a model", b"\x08\x07" + b"\xff" * 64], ids=["empty", "text", "garbage"]
)
def test_bytes_that_are_not_onnx_are_refused(data: bytes) -> None:
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        check_onnx_model(data)


def test_truncated_model_is_refused(good: bytes) -> None:
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        check_onnx_model(good[: len(good) // 2])


def test_model_without_spec_metadata_is_refused(good: bytes) -> None:
    with pytest.raises(ModelError, match="no forecast spec metadata"):
        check_onnx_model(with_spec(good, None))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        ('{"lookback": "many"}', "must be an integer"),
        ('{"colour": 1}', "unknown forecast spec"),
        ("[1, 2]", "JSON object"),
        ('{"lookback": 0}', "lookback must be"),
    ],
    ids=["broken", "deep", "wrong-type", "unknown-field", "not-object", "invalid"],
)
def test_unusable_spec_metadata_is_refused(good: bytes, raw: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        check_onnx_model(with_spec(good, None, raw=raw))


@pytest.mark.parametrize(
    ("field", "value", "axis"),
    [("lookback", 24, "input axis 1"), ("site_profile", False, "input axis 2"),
     ("horizon", 3, "input axis 2")],
)  # fmt: skip
def test_spec_disagreeing_with_declared_graph_shape_is_refused(
    good: bytes, field: str, value: object, axis: str
) -> None:
    hostile = with_spec(good, {**SPEC.to_dict(), field: value})
    with pytest.raises(ModelError, match=axis):
        check_onnx_model(hostile)
    with pytest.raises(ModelError, match=axis):
        OnnxForecaster(hostile)


def test_huge_spec_window_is_refused_before_any_allocation(good: bytes) -> None:
    with pytest.raises(ModelError, match="over the limit"):
        check_onnx_model(with_spec(good, {**SPEC.to_dict(), "lookback": 10**12}))


def test_wrong_declared_output_rank_is_refused() -> None:
    bad = graph_model(["batch", 12, SPEC.n_features], ["batch", 3], SPEC.n_features, SPEC)
    with pytest.raises(ModelError, match="output must be rank 3"):
        check_onnx_model(bad)


def test_symbolic_graph_that_fails_to_run_is_refused() -> None:
    # declares nothing about its sizes; its weights want 4 features, the spec says more
    bad = graph_model(["batch", "time", "features"], ["batch", "h", "t"], 4, SPEC)
    with pytest.raises(ModelError, match="failed to run"):
        check_onnx_model(bad)
    loaded = OnnxForecaster(bad)  # loads: nothing declared contradicts the spec
    with pytest.raises(ModelError, match="failed to run"):
        loaded.predict(np.zeros((3, 12, SPEC.n_features), dtype=np.float32))


def test_symbolic_graph_with_wrong_output_shape_is_refused() -> None:
    # runs, but gives (1, 12, 3) where a horizon-2 spec promises (1, 2, 3)
    spec = ForecastSpec(lookback=12, horizon=2, hidden=(8, 4))
    bad = graph_model(
        ["batch", "time", "features"], ["batch", "h", "t"], spec.n_features, spec, reduce=False
    )
    with pytest.raises(ModelError, match=r"spec promises \(1, 2, 3\)"):
        check_onnx_model(bad)


def test_hand_built_graph_of_the_right_shape_passes() -> None:
    ok = graph_model(["batch", 12, SPEC.n_features], ["batch", 1, 3], SPEC.n_features, SPEC)
    assert check_onnx_model(ok) == SPEC


def test_model_file_path_still_loads(good: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(good)
    assert OnnxForecaster(path).spec == SPEC
