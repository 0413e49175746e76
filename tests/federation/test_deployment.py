"""fedge's deployed apps on Flower's deployment runtime: a real SuperLink, real SuperNodes
each with its own key file, KEK file, agent store and state directory, a key directory
exported exactly as the coordinator exports it, and ``flwr run`` (the coordinator builds
on this: tests/coordinator/test_federation.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.flower import BIN, deployment, export_authority, make_site, write_store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_sealed_compressed_run_with_an_unenrolled_node_on_a_real_superlink(
    tmp_path: Path,
) -> None:
    """Two enrolled SuperNodes and one whose (real) key is not enrolled: the stranger is
    refused by name at its hello and never sampled; both rounds finish with the others.
    The run config also names a state-dir-like path and another data source: no site
    touches them."""
    store = tmp_path / "store.db"
    write_store(store)
    sites = [make_site(tmp_path / f"site{i}", store=store) for i in range(3)]
    out, evil = tmp_path / "out", tmp_path / "evil"
    with deployment(tmp_path, sites=sites) as flower:
        _, directory = export_authority(tmp_path, sites[:2], flower.coordinator_keys)
        overrides = (
            f'num-rounds=2 codec="int8" local-epochs=0.2 output-dir="{out}" '
            f'key-directory="{directory}" '
            f'data-spec=\'{{"kind": "archive", "path": "{evil}"}}\''
        )
        result = subprocess.run(
            [str(BIN / "flwr"), "run", str(REPO), "local", "--stream", "--run-config", overrides],
            env=flower.env, capture_output=True, text=True, timeout=420, check=False,
        )  # fmt: skip
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    assert "[ROUND 2/2]" in logs
    summary = json.loads((out / "run.json").read_text())
    assert summary["security"]["nodes_bound"] == 2
    assert summary["security"]["hello_refused"] == {"unenrolled": 1}
    assert summary["security"]["rejected"] == {}
    assert [(r["sampled"], r["participants"]) for r in summary["rounds"]] == [(2, 2), (2, 2)]
    assert summary["comm"]["codec"] == "int8" and summary["comm"]["compression_ratio"] > 3.5
    with np.load(out / "global_weights.npz") as z:
        arrays = [z[k] for k in z.files]
    assert len(arrays) == 10 and all(np.isfinite(a).all() for a in arrays)
    for site in sites[:2]:
        assert (site.state_dir / "channel.json").exists()
    assert not (sites[2].state_dir / "channel.json").exists()
    assert not evil.exists()


def test_a_run_without_the_coordinators_keys_is_refused(tmp_path: Path) -> None:
    """``flwr run .`` without a key directory: the ServerApp says what is missing."""
    with deployment(tmp_path, nodes=1) as flower:
        result = subprocess.run(
            [str(BIN / "flwr"), "run", str(REPO), "local", "--stream",
             "--run-config", "num-rounds=1"],
            env=flower.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    logs = result.stdout + result.stderr
    assert "key-directory" in logs, logs[-3000:]
    assert "[ROUND 1/1]" not in logs
