"""Fixtures the deploy tests share: one Mosquitto and one untrained model per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge_agent.conftest import MOSQUITTO, Mosquitto, _train


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed (deploy/system-deps.sh installs it)")
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained forecaster's ONNX (torch in the test process only): the agent serves
    whatever its shape is; what it forecasts does not matter here."""
    return _train(1, tmp_path_factory.mktemp("model") / "model.onnx", epochs=0)
