"""fedge's ServerApp on Flower's deployment runtime refuses a run it cannot seal (the
sealed run itself: tests/federation/test_late_nodes.py; the coordinator's runs:
tests/coordinator/test_federation.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.flower import BIN, deployment

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


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
