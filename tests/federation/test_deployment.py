"""The simulation's apps, unchanged, on Flower's deployment runtime: a real SuperLink,
two real SuperNodes, and ``flwr run`` (a later issue builds the coordinator on this)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.ports import free_port, service, wait_for_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_flwr_run_on_a_real_superlink(tmp_path: Path) -> None:
    if not (BIN / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed in this environment")
    home = tmp_path / "flwr-home"
    home.mkdir()
    link = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        # flower-supernode starts flower-superexec by name: the venv's bin must be on PATH.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    superlink = [
        str(BIN / "flower-superlink"), "--insecure", "--port", str(link),
        "--database", str(tmp_path / "state.db"), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    out = tmp_path / "out"
    with service(superlink, tmp_path / "superlink.log", env):
        wait_for_port(link)
        nodes = [
            [
                str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                "--port", str(free_port()), "--node-config", f"site-index={i}",
            ]
            for i in range(2)
        ]  # fmt: skip
        with (
            service(nodes[0], tmp_path / "node0.log", env),
            service(nodes[1], tmp_path / "node1.log", env),
        ):
            result = subprocess.run(
                [str(BIN / "flwr"), "run", str(REPO), "local", "--stream",
                 "--run-config", f'num-rounds=2 output-dir="{out}"'],
                env=env, capture_output=True, text=True, timeout=420, check=False,
            )  # fmt: skip
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    assert "[ROUND 2/2]" in logs
    with np.load(out / "global_weights.npz") as z:
        arrays = [z[k] for k in z.files]
    assert len(arrays) == 10 and all(np.isfinite(a).all() for a in arrays)
