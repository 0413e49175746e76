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

from fedge.core import (
    ENERGY_ONNX,
    ENERGY_OUTPUTS,
    MANIFEST,
    OBS_INPUT,
    SLICE_ONNX,
    SLICE_OUTPUT,
    PolicyFile,
    PolicyManifest,
    policy_version,
)

ENERGY_OBS = 17
SLICE_OBS = 14
MODES = ["active", "capacity_off", "deep_sleep"]
SHARES = ["embb", "urllc", "mmtc", "unreserved"]


def _graph(dim: int, weights: np.ndarray, head: str, output: str, name: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", [OBS_INPUT, "w"], ["scores"])]
    if head == "argmax":
        nodes.append(helper.make_node("ArgMax", ["scores"], [output], axis=1, keepdims=0))
        out = helper.make_tensor_value_info(output, TensorProto.INT64, ["n"])
    else:
        nodes.append(helper.make_node("Softmax", ["scores"], [output], axis=1))
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", weights.shape[1]])
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(OBS_INPUT, TensorProto.FLOAT, ["n", dim])],
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
    energy = _graph(ENERGY_OBS, w, "argmax", ENERGY_OUTPUTS[0], "energy")
    slices = _graph(SLICE_OBS, v, "softmax", SLICE_OUTPUT, "slices")
    (directory / ENERGY_ONNX).write_bytes(energy)
    (directory / SLICE_ONNX).write_bytes(slices)
    manifest = PolicyManifest(
        version=policy_version([energy, slices]),
        energy=PolicyFile(
            ENERGY_ONNX,
            hashlib.sha256(energy).hexdigest(),
            tuple(f"e{i}" for i in range(ENERGY_OBS)),
            tuple(MODES),
        ),
        slices=PolicyFile(
            SLICE_ONNX,
            hashlib.sha256(slices).hexdigest(),
            tuple(f"s{i}" for i in range(SLICE_OBS)),
            tuple(SHARES),
        ),
    )
    (directory / MANIFEST).write_text(json.dumps(manifest.to_dict()))
    return manifest.version
