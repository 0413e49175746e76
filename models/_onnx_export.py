"""Export to ONNX (needs torch; runs on the coordinator or the simulation, never the agent)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from fedge.models._errors import ModelError
from fedge.models._forecaster import LoadForecaster

INPUT_NAME = "kpi_window"
OUTPUT_NAME = "forecast"


def export_onnx(model: LoadForecaster, path: Path) -> Path:
    """Write the model with a dynamic batch axis; the spec travels in the metadata."""
    model.eval()
    dummy = torch.zeros(1, model.spec.lookback, model.spec.n_features)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:  # torch raises many unrelated types from its exporters
        raise ModelError(f"ONNX export failed: {exc}") from exc
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fedge.forecast_spec", json.dumps(model.spec.to_dict())
    onnx.save(proto, str(path))
    return path
