"""``make bench-simulate``: wall time, site-rounds per minute and peak RSS of two presets.

Each preset runs as its own ``fedge simulate`` process; peak RSS is the largest sum over
that process and all its children (Ray workers included), sampled every 0.2 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench._common import write_result

PRESETS = {"demo": "demo", "sites_1000": "sites_1000"}


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def measure(preset: str, runs_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [
        sys.executable,
        "-m",
        "fedge",
        "simulate",
        "--preset",
        preset,
        "--runs-dir",
        str(runs_dir),
    ]
    start = time.perf_counter()
    child = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    proc = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(proc))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        err = child.stderr.read() if child.stderr else ""
        raise SystemExit(f"{preset}: fedge simulate failed ({child.returncode}):\n{err[-4000:]}")
    report = json.loads((runs_dir / preset / "report.json").read_text())
    timing = report["timing"]
    return {
        "wall_s": round(wall, 1),
        "site_rounds_per_min": timing["site_rounds_per_min"],
        "peak_rss_mb": round(peak / 2**20, 1),
        "site_rounds": timing["site_rounds"],
        "federated_s": timing["federated_s"],
        "sites": report["data"].get("num_sites"),
        "fedavg_rmse": report["forecast"]["methods"]["fedavg"]["rmse"],
        # The run's accuracy next to its cost, so one bench run also documents the demo.
        "methods": {
            name: {k: m[k] for k in ("rmse", "mae", "r2", "underprovision_rate")}
            for name, m in report["forecast"]["methods"].items()
        },
    }


def main() -> None:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedge-bench-") as tmp:
        for key, preset in PRESETS.items():
            figures[key] = measure(preset, Path(tmp))
            print(key, figures[key], flush=True)
    path = write_result("simulate", figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
