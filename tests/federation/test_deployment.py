"""The simulation's apps, unchanged, on Flower's deployment runtime: a real SuperLink,
two real SuperNodes, and ``flwr run`` (the coordinator builds on this: test_federation)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.flower import BIN, deployment

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_flwr_run_on_a_real_superlink(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with deployment(tmp_path, nodes=2) as flower:
        result = subprocess.run(
            [str(BIN / "flwr"), "run", str(REPO), "local", "--stream",
             "--run-config", f'num-rounds=2 output-dir="{out}"'],
            env=flower.env, capture_output=True, text=True, timeout=420, check=False,
        )  # fmt: skip
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    assert "[ROUND 2/2]" in logs
    with np.load(out / "global_weights.npz") as z:
        arrays = [z[k] for k in z.files]
    assert len(arrays) == 10 and all(np.isfinite(a).all() for a in arrays)
