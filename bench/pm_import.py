"""The PM-file import against the CSV import: the same preset's generated sites exported
both ways, read both ways, and simulated both ways; the scores should agree within 1%.

``python -m bench.pm_import [--preset demo] [--methods local,fedavg,...] [--sites N]`` writes
``bench/results/pm_import.json``: export and read times (CPU and wall), the folder's
size, the largest value difference between the two imports, and per method the r2 and
RMSE of each run with their relative difference.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import write_result


def _timed(fn: Any, *args: Any) -> tuple[Any, dict[str, float]]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, {
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": round(time.perf_counter() - wall, 2),
    }


def main() -> None:
    from fedge.simulation import SiteGenerator, export_kpi_csv
    from fedge.simulation._config import preset
    from fedge.simulation._kpi_file import read_kpi_file
    from fedge.simulation._pm_import import export_pm_folder, read_pm_sites
    from fedge.simulation._run import run

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--methods", default="", help="comma-separated (default: the preset's)")
    parser.add_argument("--sites", type=int, default=0, help="sites (default: the preset's)")
    args = parser.parse_args()
    config = replace(preset(args.preset), export_onnx=False)
    if args.sites:
        config = replace(config, generator=replace(config.generator, num_sites=args.sites))
    if args.methods:
        config = replace(config, methods=tuple(m for m in args.methods.split(",") if m))
    gen = SiteGenerator(config.generator)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv, csv_export = _timed(export_kpi_csv, gen, root / "export.csv")
        pm, pm_export = _timed(export_pm_folder, gen, root / "pm")
        csv_sites, csv_read = _timed(read_kpi_file, csv)
        (pm_sites, info), pm_read = _timed(read_pm_sites, pm)
        diff = max(
            float(np.max(np.abs(p.values.astype(np.float64) - c.values)))
            for p, c in zip(pm_sites, csv_sites, strict=True)
        )
        files = list(pm.iterdir())
        pm_bytes = sum(f.stat().st_size for f in files)
        csv_bytes = csv.stat().st_size
        runs: dict[str, dict[str, Any]] = {}
        timing: dict[str, dict[str, float]] = {}
        for name, path in (("csv", csv), ("pm", pm)):
            result, timing[name] = _timed(
                run, replace(config, name=name, data_path=str(path)), root / "runs"
            )
            runs[name] = result.report["forecast"]["methods"]

    methods: dict[str, Any] = {}
    worst = 0.0
    for m in config.methods:
        row: dict[str, Any] = {}
        for k in ("r2", "rmse"):
            a, b = float(runs["csv"][m][k]), float(runs["pm"][m][k])
            rel = abs(b - a) / max(abs(a), 1e-12)
            worst = max(worst, rel)
            row[k] = {"csv": a, "pm": b, "relative_difference": rel}
        methods[m] = row
    figures = {
        "preset": args.preset,
        "sites": config.generator.num_sites,
        "days": config.generator.days,
        "step_minutes": config.generator.step_minutes,
        "pm_files": len(files),
        "pm_bytes": pm_bytes,
        "csv_bytes": csv_bytes,
        "export": {"csv": csv_export, "pm": pm_export},
        "read": {"csv": csv_read, "pm": pm_read},
        "max_abs_value_difference": diff,
        "simulate": timing,
        "methods": methods,
        "max_relative_score_difference": worst,
        "within_1_percent": worst <= 0.01,
        "import_summary": info,
    }
    path = write_result("pm_import", figures)
    print(f"{path}: max relative score difference {worst:.2e} over {len(methods)} methods")


if __name__ == "__main__":
    main()
