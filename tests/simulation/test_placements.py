"""Placements: refused without what they compare; the CPU meter counts a child's CPU; the
raw-KPI bytes are the import format's own."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fedge.simulation._config import preset
from fedge.simulation._errors import SimulationError
from fedge.simulation._kpi_file import export_kpi_file
from fedge.simulation._placements import CpuMeter, raw_kpi_bytes
from fedge.simulation._source import GeneratedSites


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ("fedavg", "centralized"), "codec": "int8"}, "add centralized\\+ft"),
        ({"methods": ("fedavg", "centralized", "centralized+ft")}, "give --codec"),
        ({"methods": ("centralized+ft",), "placements": False}, "list centralized before it"),
    ],
)
def test_placements_need_their_methods_and_sealed_bytes(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SimulationError, match=message):
        replace(preset("smoke"), **{"placements": True, **changes})  # type: ignore[arg-type]


def test_the_cpu_meter_counts_a_child_process() -> None:
    """The child burns half a CPU-second by its own clock, then idles so the meter's last
    sample sees all of it."""
    burn = "import time\nwhile time.process_time() < 0.5: pass\ntime.sleep(1.0)\n"
    meter = CpuMeter().start()
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert meter.stop() >= 0.5


def test_raw_kpi_bytes_are_the_import_format(tmp_path: Path) -> None:
    source = GeneratedSites(replace(preset("smoke").generator, num_sites=2, days=2))
    sizes = []
    for i in range(2):
        path = export_kpi_file([source.site(i)], tmp_path / f"site{i}.csv")
        sizes.append(path.stat().st_size)
    raw = raw_kpi_bytes(source)
    assert raw["csv"] == sum(sizes)
    assert 0 < raw["csv_gzip"] < raw["csv"]
