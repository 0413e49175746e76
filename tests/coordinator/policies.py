"""A small policy directory in the format ``fedge decisions train`` writes, with
hand-set weights so answers are known: training one takes a minute, this takes ms.

energy: mode = argmax(obs @ W); load_now (obs[0]) votes for active, fc_peak_0_15min
(obs[1]) for deep sleep. slices: shares = softmax(obs @ V), rows sum to 1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

ENERGY_OBS = 17
SLICE_OBS = 14
MODES = ["active", "capacity_off", "deep_sleep"]
SHARES = ["embb", "urllc", "mmtc", "unreserved"]


def _graph(dim: int, weights: np.ndarray, head: str, output: str, name: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["obs", "w"], ["scores"])]
    if head == "argmax":
        nodes.append(helper.make_node("ArgMax", ["scores"], [output], axis=1, keepdims=0))
        out = helper.make_tensor_value_info(output, TensorProto.INT64, ["n"])
    else:
        nodes.append(helper.make_node("Softmax", ["scores"], [output], axis=1))
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", weights.shape[1]])
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", dim])],
        [out],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    blob: bytes = model.SerializeToString()
    return blob


def write_policies(directory: Path, slice_weights: np.ndarray | None = None) -> str:
    """Write the two ONNX files and the manifest; return the policy version.
    ``slice_weights`` (SLICE_OBS x 4) replaces the slice policy's hand-set weights."""
    directory.mkdir(parents=True, exist_ok=True)
    w = np.zeros((ENERGY_OBS, len(MODES)))
    w[0] = [1.0, 0.0, -1.0]
    w[1] = [0.0, 0.0, 1.0]
    v = np.zeros((SLICE_OBS, len(SHARES)))
    v[2] = [1.0, 0.0, 0.0, 0.0]
    if slice_weights is not None:
        v = slice_weights
    energy = _graph(ENERGY_OBS, w, "argmax", "mode", "energy")
    slices = _graph(SLICE_OBS, v, "softmax", "shares", "slices")
    (directory / "energy_policy.onnx").write_bytes(energy)
    (directory / "slice_policy.onnx").write_bytes(slices)
    version = hashlib.sha256(energy + slices).hexdigest()[:16]
    manifest = {
        "format": 1,
        "version": version,
        "energy": {
            "file": "energy_policy.onnx",
            "sha256": hashlib.sha256(energy).hexdigest(),
            "obs": [f"e{i}" for i in range(ENERGY_OBS)],
            "modes": MODES,
        },
        "slices": {
            "file": "slice_policy.onnx",
            "sha256": hashlib.sha256(slices).hexdigest(),
            "obs": [f"s{i}" for i in range(SLICE_OBS)],
            "shares": SHARES,
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return version
