"""ONNX Runtime inference: what the long-running agent uses (numpy + onnxruntime, no torch).

Every onnxruntime failure is translated into ``ModelError`` here, at the boundary: a
model that arrived over the network must never reach its caller as an untyped
exception, whether it fails to load or only fails when it is run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.models._errors import ModelError
from fedge.models._spec import N_TARGETS, ForecastSpec

INPUT_NAME = "kpi_window"
SPEC_KEY = "fedge.forecast_spec"
# A probe or shadow window larger than this is not a forecaster this project builds; it
# would only make the agent allocate without bound.
MAX_WINDOW_VALUES = 1 << 22


class OnnxForecaster:
    """A loaded forecaster artifact; ``predict`` maps (batch, lookback, features) to forecasts.

    ``source`` is a model file or the model's bytes. The graph's declared input and output
    shapes must agree with the spec in its metadata, or the model is refused at load.
    """

    def __init__(self, source: Path | bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        label = f"{source}" if isinstance(source, Path) else "model bytes"
        if isinstance(source, Path) and not source.is_file():
            raise ModelError(f"{source}: no such model file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # a failing model is reported as ModelError, not logged
        try:
            self._session = ort.InferenceSession(
                source if isinstance(source, bytes) else str(source),
                sess_options=opts,
                providers=["CPUExecutionProvider"],
            )
            meta = self._session.get_modelmeta().custom_metadata_map
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"{label}: not a loadable ONNX model: {exc}") from exc
        if SPEC_KEY not in meta:
            raise ModelError(f"{label}: not a fedge forecaster (no forecast spec metadata)")
        try:
            raw = json.loads(meta[SPEC_KEY])
        except (ValueError, RecursionError) as exc:
            raise ModelError(f"{label}: forecast spec metadata is not JSON: {exc}") from exc
        try:
            self.spec = ForecastSpec.from_dict(raw)
        except ModelError as exc:
            raise ModelError(f"{label}: {exc}") from exc
        try:
            self._check_graph()
        except ModelError as exc:
            raise ModelError(f"{label}: {exc}") from exc

    def _check_graph(self) -> None:
        """The graph takes one float (batch, lookback, n_features) input named ``kpi_window``
        and its first output is (batch, horizon, targets), as far as the graph declares."""
        spec = self.spec
        if spec.lookback * spec.n_features > MAX_WINDOW_VALUES:
            raise ModelError(
                f"spec window of {spec.lookback} x {spec.n_features} values is over the limit"
            )
        try:
            inputs = self._session.get_inputs()
            outputs = self._session.get_outputs()
            declared_in = [(i.name, i.type, i.shape) for i in inputs]
            declared_out = [(o.type, o.shape) for o in outputs]
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"graph signature unreadable: {exc}") from exc
        if len(declared_in) != 1 or declared_in[0][0] != INPUT_NAME:
            names = [name for name, _, _ in declared_in]
            raise ModelError(f"graph must take one input named {INPUT_NAME!r}, takes {names}")
        _, in_type, in_shape = declared_in[0]
        if in_type != "tensor(float)":
            raise ModelError(f"graph input must be tensor(float), is {in_type}")
        _check_shape("input", in_shape, (spec.lookback, spec.n_features))
        if not declared_out:
            raise ModelError("graph has no output")
        out_type, out_shape = declared_out[0]
        if out_type != "tensor(float)":
            raise ModelError(f"graph output must be tensor(float), is {out_type}")
        _check_shape("output", out_shape, (spec.horizon, N_TARGETS))

    def predict(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        want = (self.spec.lookback, self.spec.n_features)
        if x.ndim != 3 or tuple(x.shape[1:]) != want:
            raise ModelError(f"input must be (batch, {want[0]}, {want[1]}), got {x.shape}")
        try:
            out = self._session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
            pred = np.asarray(out[0], dtype=np.float32)
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"model failed to run: {exc}") from exc
        expect = (x.shape[0], self.spec.horizon, N_TARGETS)
        if pred.shape != expect:
            raise ModelError(f"model output is {pred.shape}, its spec promises {expect}")
        return pred


def _check_shape(what: str, declared: object, want: tuple[int, int]) -> None:
    """A declared (batch, a, b) shape; symbolic or unknown dimensions are checked at run."""
    if not isinstance(declared, list | tuple) or len(declared) != 3:
        raise ModelError(
            f"graph {what} must be rank 3 (batch, {want[0]}, {want[1]}), is {declared}"
        )
    for axis, (dim, expect) in enumerate(zip(declared[1:], want, strict=True), start=1):
        if isinstance(dim, int) and dim != expect:
            raise ModelError(
                f"graph {what} axis {axis} is {dim}, the forecast spec says {expect} "
                f"(declared {list(declared)})"
            )


def check_onnx_model(onnx: bytes) -> ForecastSpec:
    """The forecast spec of ``onnx`` once it has loaded and run on a probe window.

    Raises ``ModelError`` if the bytes are not a loadable ONNX model, lack the fedge
    forecast spec metadata, or do not turn zeros of shape (1, lookback, n_features) into
    the (1, horizon, targets) forecast the spec promises.
    """
    if not isinstance(onnx, bytes | bytearray | memoryview):
        raise ModelError(f"a model is bytes, got {type(onnx).__name__}")
    model = OnnxForecaster(bytes(onnx))
    spec = model.spec
    model.predict(np.zeros((1, spec.lookback, spec.n_features), dtype=np.float32))
    return spec
