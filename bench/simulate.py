"""``make bench-simulate``: wall time, accepted site-rounds per minute, the accepted share,
per-round seconds and peak RSS of the presets up to 100,000 registered sites, and the
small preset on a real two-node Ray cluster next to the local backend.

Each preset runs as its own ``fedge simulate`` process; peak RSS is the largest sum over
that process and all its children (Ray workers included), sampled every 0.2 s. On the
cluster the ClientApp actors are children of ``ray start``, not of the driver, so the
cluster's own processes are sampled as well and reported apart.
``python -m bench.simulate --only ray_cluster`` runs just the named entries and merges
them into the existing result file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench._common import RESULTS_DIR, write_result

PRESETS = {
    "demo": "demo",
    "sites_1000": "sites_1000",
    "sites_10000": "sites_10000",
    "sites_100000": "sites_100000",
}
# The 10,000-site preset at the 100,000-site preset's sample (100 a round), so the two
# per-round times compare what registering ten times more sites costs; and its first
# round alone, the ceiling when the whole preset does not fit the time at hand.
VARIANTS = {
    "sites_10000_at_100": ("sites_10000", ["--fraction-train", "0.01"]),
    "sites_10000_round_1": ("sites_10000", ["--rounds", "1"]),
}
ENTRIES = (*PRESETS, *VARIANTS, "ray_cluster")
# FedAvg behind 10 regional aggregators against the same run flat (docs/hierarchy.md).
ENTRIES = (*ENTRIES, "hierarchy")
# The cluster test's run, a few more rounds so the federated part outweighs start-up.
SMALL = ["--methods", "fedavg", "--rounds", "4", "--seed", "3"]


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _pids_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total


def measure(
    preset: str,
    runs_dir: Path,
    extra: list[str] | None = None,
    name: str | None = None,
    cluster: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    name = name or preset
    cmd = [
        sys.executable, "-m", "fedge", "simulate", "--preset", preset,
        "--runs-dir", str(runs_dir), "--name", name, *(extra or []),
    ]  # fmt: skip
    if cluster is not None:
        from tests.support.ray_cluster import cluster_pids

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    proc = psutil.Process(child.pid)
    peak = peak_cluster = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(proc))
        if cluster is not None:
            tree = {p.pid for p in [proc, *proc.children(recursive=True)]}
            outside = [p for p in cluster_pids(*cluster) if p not in tree]
            peak_cluster = max(peak_cluster, _pids_rss(outside))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        err = child.stderr.read() if child.stderr else ""
        raise SystemExit(f"{name}: fedge simulate failed ({child.returncode}):\n{err[-4000:]}")
    report = json.loads((runs_dir / name / "report.json").read_text())
    timing = report["timing"]
    rounds = report["forecast"]["rounds"]
    # No attackers in these presets: every sampled update is an honest one.
    sampled = sum(r.get("sampled") or 0 for r in rounds)
    accepted = sum(r.get("participants") or 0 for r in rounds)
    round_s = [r.get("seconds") for r in rounds]
    fed_s = timing["federated_s"]
    figures: dict[str, Any] = {
        "wall_s": round(wall, 1),
        # accepted updates per minute of the federated run (its Ray start-up included)
        "site_rounds_per_min": round(accepted / (fed_s / 60.0), 2) if fed_s else None,
        "accepted_share": round(accepted / sampled, 4) if sampled else None,
        "sampled_updates": sampled,
        "accepted_updates": accepted,
        "sampled_per_round": [r.get("sampled") for r in rounds],
        "accepted_per_round": [r.get("participants") for r in rounds],
        "round_s": round_s,
        "round_s_mean": round(sum(round_s) / len(round_s), 1)
        if round_s and None not in round_s
        else None,
        "peak_rss_mb": round(peak / 2**20, 1),
        "federated_s": fed_s,
        "sites": report["data"].get("num_sites"),
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "fedavg_rmse": report["forecast"]["methods"]["fedavg"]["rmse"],
        # The run's accuracy next to its cost, so one bench run also documents the demo.
        "methods": {
            name: {k: m[k] for k in ("rmse", "mae", "r2", "underprovision_rate")}
            for name, m in report["forecast"]["methods"].items()
        },
    }
    if cluster is not None:
        figures["peak_rss_cluster_mb"] = round(peak_cluster / 2**20, 1)
        figures["peak_rss_total_mb"] = round((peak + peak_cluster) / 2**20, 1)
    return figures


def measure_ray_cluster(runs_dir: Path) -> dict[str, Any]:
    """The smoke preset on a two-node cluster (one CPU each) and on the local backend with
    two workers: the same seed, so the RMSEs should agree."""
    from tests.support.ray_cluster import two_node_cluster

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with two_node_cluster() as (address, root):
        cluster_up_s = time.perf_counter() - t0
        on_cluster = measure(
            "smoke", runs_dir, [*SMALL, "--ray-address", address], "cluster", (address, root)
        )
    local = measure("smoke", runs_dir, [*SMALL, "--workers", "2"], "local")
    a, b = on_cluster["fedavg_rmse"], local["fedavg_rmse"]
    return {
        "preset": "smoke",
        "args": SMALL,
        "nodes": 2,
        "cpus_per_node": 1,
        "cluster_start_s": round(cluster_up_s, 1),
        "cluster": on_cluster,
        "local": local,
        "cluster_rmse": a,
        "local_rmse": b,
        "rmse_rel_diff": float(f"{abs(a - b) / b:.3g}") if b else None,
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def measure_hierarchy(runs_dir: Path) -> dict[str, Any]:
    """The hierarchy preset: one process runs FedAvg behind 10 regions, then flat on the
    same sites, seed and codec; bytes per tier, wall time and test RMSE of each."""
    load_before = os.getloadavg()[0]
    run = measure("hierarchy", runs_dir)
    h = json.loads((runs_dir / "hierarchy" / "report.json").read_text())["hierarchy"]
    keys = (
        "rmse",
        "wall_s",
        "bytes",
        "bytes_into_coordinator",
        "best_val_loss",
        "rounds_to_target",
    )
    arms = {arm: {k: h[arm][k] for k in keys} for arm in ("flat", "hierarchical")}
    return {
        "preset": "hierarchy",
        "regions": h["regions"],
        "sites_per_region": h["sites_per_region"],
        "codec": h["codec"],
        "region_codec": h["region_codec"],
        **arms,
        "bytes_per_update_mean": h["flat"]["bytes_per_update_mean"],
        "bytes_per_regional_update_mean": h["bytes_per_regional_update_mean"],
        "coordinator_bytes_ratio": h["coordinator_bytes_ratio"],
        "rmse_rel_diff": h["rmse_rel_diff"],
        "target_val_loss": h["target_val_loss"],
        "meets": h["meets"],
        "wall_s": run["wall_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=ENTRIES,
        help="run only this entry (repeatable); the others keep their recorded figures",
    )
    args = parser.parse_args(argv)
    only: list[str] = args.only or list(ENTRIES)
    figures: dict[str, Any] = {}
    if args.only:
        path = RESULTS_DIR / "simulate.json"
        if path.exists():
            old = json.loads(path.read_text())
            # the kept entries name the commit they were measured on, the file names this one
            figures = {
                k: {**v, "commit": v.get("commit", old.get("commit"))}
                for k, v in old.items()
                if k in ENTRIES
            }
    with tempfile.TemporaryDirectory(prefix="fedge-bench-") as tmp:
        for key in only:
            if key == "ray_cluster":
                figures[key] = measure_ray_cluster(Path(tmp))
            elif key == "hierarchy":
                figures[key] = measure_hierarchy(Path(tmp))
            elif key in VARIANTS:
                preset, extra = VARIANTS[key]
                figures[key] = {**measure(preset, Path(tmp), extra, key), "args": extra}
            else:
                figures[key] = measure(PRESETS[key], Path(tmp))
            print(key, figures[key], flush=True)
    path = write_result("simulate", {k: figures[k] for k in ENTRIES if k in figures})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
