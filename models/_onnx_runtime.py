"""ONNX Runtime inference: what the long-running agent uses (numpy + onnxruntime, no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.models._errors import ModelError
from fedge.models._spec import ForecastSpec

INPUT_NAME = "kpi_window"


class OnnxForecaster:
    """A loaded forecaster artifact; ``predict`` maps (batch, lookback, features) to forecasts."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"{path}: not a loadable ONNX model: {exc}") from exc
        meta = self._session.get_modelmeta().custom_metadata_map
        if "fedge.forecast_spec" not in meta:
            raise ModelError(f"{path}: not a fedge forecaster (no forecast spec metadata)")
        self.spec = ForecastSpec.from_dict(json.loads(meta["fedge.forecast_spec"]))

    def predict(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        want = (self.spec.lookback, self.spec.n_features)
        if x.ndim != 3 or tuple(x.shape[1:]) != want:
            raise ModelError(f"input must be (batch, {want[0]}, {want[1]}), got {x.shape}")
        out = self._session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)
