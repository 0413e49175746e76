"""Hostile inputs for the agent: models that are valid ONNX but lie, and KPI payloads.

Built with ``onnx`` in the test process only (the agent never imports it)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fedge.models import ForecastSpec

SPEC_KEY = "fedge.forecast_spec"


def with_spec(model: bytes, spec: object | None, *, raw: str | None = None) -> bytes:
    """``model`` with its forecast spec metadata replaced (``None`` and no ``raw``: removed)."""
    proto = onnx.load_from_string(model)
    keep = [p for p in proto.metadata_props if p.key != SPEC_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    if spec is not None or raw is not None:
        entry = proto.metadata_props.add()
        entry.key = SPEC_KEY
        entry.value = raw if raw is not None else json.dumps(spec)
    return bytes(proto.SerializeToString())


def spec_of(model: bytes) -> dict[str, object]:
    proto = onnx.load_from_string(model)
    value = next(p.value for p in proto.metadata_props if p.key == SPEC_KEY)
    spec: dict[str, object] = json.loads(value)
    return spec


def _finish(graph: onnx.GraphProto, spec: ForecastSpec) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, json.dumps(spec.to_dict())
    return bytes(model.SerializeToString())


def batch_of_one(spec: ForecastSpec) -> bytes:
    """Forecasts one window only: a probe passes, a shadow batch fails inside the runtime."""
    x = helper.make_tensor_value_info(
        "kpi_window", TensorProto.FLOAT, ["batch", spec.lookback, spec.n_features]
    )
    y = helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", spec.horizon, 3])
    w = numpy_helper.from_array(np.zeros((spec.n_features, 3), dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, spec.horizon, 3], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("ReduceMean", ["kpi_window"], ["m"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["m", "w"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["forecast"]),
    ]
    return _finish(helper.make_graph(nodes, "one", [x], [y], initializer=[w, shape]), spec)


def symbolic(spec: ForecastSpec, weight_rows: int, *, reduce: bool = True) -> bytes:
    """Declares no sizes: only running it shows whether it fits its spec."""
    x = helper.make_tensor_value_info("kpi_window", TensorProto.FLOAT, ["b", "t", "f"])
    y = helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["b", "h", "k"])
    w = numpy_helper.from_array(np.zeros((weight_rows, 3), dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["m" if reduce else "kpi_window", "w"], ["forecast"])]
    if reduce:
        nodes.insert(0, helper.make_node("ReduceMean", ["kpi_window"], ["m"], axes=[1], keepdims=1))
    return _finish(helper.make_graph(nodes, "sym", [x], [y], initializer=[w]), spec)


def nan_forecaster(spec: ForecastSpec) -> bytes:
    """Runs, right shape, but forecasts NaN."""
    x = helper.make_tensor_value_info(
        "kpi_window", TensorProto.FLOAT, ["batch", spec.lookback, spec.n_features]
    )
    y = helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", 1, 3])
    w = numpy_helper.from_array(np.full((spec.n_features, 3), np.nan, dtype=np.float32), "w")
    nodes = [
        helper.make_node("ReduceMean", ["kpi_window"], ["m"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["m", "w"], ["forecast"]),
    ]
    return _finish(helper.make_graph(nodes, "nan", [x], [y], initializer=[w]), spec)


def hostile_models(good: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    """One of each kind of lying or broken model, built from a good one's bytes."""
    spec = ForecastSpec.from_dict(spec_of(good))
    base = spec.to_dict()
    long_spec = ForecastSpec(lookback=128, horizon=1, hidden=spec.hidden)
    kinds: list[tuple[str, Callable[[], bytes]]] = [
        ("lookback-24", lambda: with_spec(good, {**base, "lookback": 24})),
        ("lookback-6", lambda: with_spec(good, {**base, "lookback": 6})),
        ("n-features", lambda: with_spec(good, {**base, "site_profile": False})),
        ("horizon", lambda: with_spec(good, {**base, "horizon": 4})),
        ("no-metadata", lambda: with_spec(good, None)),
        ("metadata-not-json", lambda: with_spec(good, None, raw="{lookback")),
        ("metadata-deep", lambda: with_spec(good, None, raw="[" * 50_000 + "]" * 50_000)),
        ("metadata-unknown", lambda: with_spec(good, {**base, "colour": "red"})),
        ("metadata-huge-window", lambda: with_spec(good, {**base, "lookback": 10**9})),
        ("truncated", lambda: good[: rng.randrange(1, len(good) - 1)]),
        ("garbage", lambda: rng.randbytes(rng.randrange(1, 4096))),
        ("empty", lambda: b""),
        ("batch-of-one", lambda: batch_of_one(spec)),
        ("symbolic-wrong-weights", lambda: symbolic(spec, 4)),
        ("symbolic-wrong-output", lambda: symbolic(spec, spec.n_features, reduce=False)),
        ("lookback-over-window", lambda: symbolic(long_spec, long_spec.n_features)),
        ("nan-forecasts", lambda: nan_forecaster(spec)),
    ]
    return [(name, make()) for name, make in kinds]


def hostile_kpi(rng: random.Random, valid: bytes) -> bytes:
    """One random or hostile KPI payload (never a valid one)."""
    kind = rng.randrange(10)
    text = valid.decode()
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))
    if kind == 1:  # an integer too long for a float
        return b'{"v": 1, "cell": "c", "ts": 1' + b"0" * rng.randrange(309, 3000) + b', "kpis": {}}'
    if kind == 2:  # nesting under the size limit
        depth = rng.randrange(9, 2000)
        return b"[" * depth + b"]" * depth
    if kind == 3:
        literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999"])
        return text.replace('"cpu_util": ', f'"cpu_util": {literal}, "x": ').encode()
    if kind == 4:  # wrong types
        value = rng.choice(['"40"', "true", "[1]", "{}", "null", '"\\u0000"'])
        return text.replace('"v": 1', f'"v": {value}').encode()
    if kind == 5:  # unicode cell ids
        cell = rng.choice(["cellé", "\\ud800", "a/b", "x" * 70, " ", "\\u202e"])
        return text.replace('"cell": "', f'"cell": "{cell}', 1).encode()
    if kind == 6:  # truncated
        return valid[: rng.randrange(0, len(valid) - 1)]
    if kind == 7:  # byte flips that break the JSON: a closing brace becomes garbage
        out = bytearray(valid)
        out[-1] = rng.choice(b"x]\x00")
        return bytes(out)
    if kind == 8:
        return b"\xff\xfe" + text.encode("utf-16-le")
    return (
        text.replace('"kpis": {', '"kpis": {"dl_prb_util": 1, ', 1).replace("}}", "}, 7}").encode()
    )
