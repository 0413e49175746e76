"""An operator's export runs through the same harness and gives the generator's numbers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedge.simulation import SiteGenerator, export_kpi_csv
from fedge.simulation._config import preset
from fedge.simulation._run import run

pytestmark = pytest.mark.slow


def test_exported_csv_reproduces_the_generator_run(tmp_path: Path) -> None:
    base = preset("smoke")
    config = replace(
        base,
        generator=replace(base.generator, num_sites=3),
        methods=("local", "seasonal_naive", "persistence"),
        workers=1,
        export_onnx=False,
    )
    csv = export_kpi_csv(SiteGenerator(config.generator), tmp_path / "export.csv")
    generated = run(replace(config, name="generated"), tmp_path).report
    imported = run(replace(config, name="imported", data_path=str(csv)), tmp_path).report
    assert imported["data"]["source"] == "file" and imported["data"]["num_sites"] == 3
    for method in config.methods:
        g = generated["forecast"]["methods"][method]
        i = imported["forecast"]["methods"][method]
        assert i["r2"] == pytest.approx(g["r2"], abs=0.05)
        assert i["rmse"] == pytest.approx(g["rmse"], rel=0.05)
    assert [s["archetype"] for s in imported["forecast"]["sites"]] == [
        s["archetype"] for s in generated["forecast"]["sites"]
    ]
