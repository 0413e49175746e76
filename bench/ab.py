"""``make bench-ab BASE=<rev>``: the current tree against a baseline commit, paired.

A shared VM's speed drifts by more than most changes move a figure (the same crypto
handshake measured 0.7 ms and 1.9 ms an hour apart here), so comparing a fresh result
with a committed one says little. This runs each benchmark on a checkout of ``BASE`` and
on this tree back to back, alternating which goes first, and records the headline
figures of both and their ratio in ``bench/results/ab.json``; with ``--repeat n`` it keeps
every pair and the median ratio, because one pair says little about a tail figure. The
current tree's own result files are rewritten as usual; the baseline's stay in its
temporary checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, commit, write_result

ROOT = Path(__file__).resolve().parent.parent

# The figures each benchmark is judged by, as dotted paths into its result file, and
# whether higher is better.
HEADLINES: dict[str, dict[str, bool]] = {
    "security": {
        "handshake_cpu_us": False,
        "seal_open_us_16k": False,
        "aead_mb_s_512k": True,
        "oneshot_seal_us_16k": False,
        "oneshot_open_us_16k": False,
    },
    "codecs": {
        "aggregate_1000_updates_s": False,
        "aggregate_1000_tracked_updates_s": False,
        "codecs.int8.encode_mb_s": True,
        "codecs.int8.decode_mb_s": True,
        "codecs.topk+global:0.03.encode_mb_s": True,
    },
    "agent": {
        "latency_ms.1000.p50": False,
        "latency_ms.1000.p99": False,
        "rss_mb_steady": False,
        "cold_start_s": False,
        "max_rate_zero_loss": True,
    },
    "coordinator": {
        "sqlite.models.rps": True,
        "sqlite.decisions_batch.rps": True,
        "sqlite.decisions_batch.p99_ms": False,
        "sqlite.forecast_ingest.rps": True,
        "postgresql.decisions_batch.rps": True,
        "postgresql.decisions_batch.p99_ms": False,
    },
}


def _figure(result: dict[str, Any], dotted: str) -> float | None:
    """``a.b.c`` into nested dicts; keys may themselves hold dots (``topk+global:0.03``)."""
    node: Any = result
    rest = dotted
    while rest:
        if not isinstance(node, dict):
            return None
        for key in sorted(node, key=len, reverse=True):
            if rest == key or rest.startswith(key + "."):
                node, rest = node[key], rest[len(key) + 1 :]
                break
        else:
            return None
    return float(node) if isinstance(node, int | float) else None


def _run(bench: str, tree: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = Path(tempfile.gettempdir()) / f"fedge-ab-{bench}-{tree.name}.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", f"bench.{bench}"],
            cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench.{bench} failed in {tree} (exit {done.returncode}); see {log}")
    result: dict[str, Any] = json.loads((tree / "bench" / "results" / f"{bench}.json").read_text())
    return result


def _summary(bench: str, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each headline figure per pair, and the median of the pairs' ratios."""
    rows: dict[str, Any] = {}
    for name, higher in HEADLINES[bench].items():
        base_v = [_figure(p["results"]["base"], name) for p in pairs]
        cur_v = [_figure(p["results"]["current"], name) for p in pairs]
        ratios = [
            round(c / b, 3) for b, c in zip(base_v, cur_v, strict=True) if b and c is not None
        ]
        rows[name] = {
            "base": base_v[0] if len(pairs) == 1 else base_v,
            "current": cur_v[0] if len(pairs) == 1 else cur_v,
            "current_over_base": (ratios[0] if ratios else None)
            if len(pairs) == 1
            else (round(statistics.median(ratios), 3) if ratios else None),
            "higher_is_better": higher,
        }
        if len(pairs) > 1:
            rows[name]["ratios"] = ratios
    return {
        "pairs": len(pairs),
        "first": [p["first"] for p in pairs] if len(pairs) > 1 else pairs[0]["first"],
        "load_1m_before": [p["load_1m_before"] for p in pairs]
        if len(pairs) > 1
        else pairs[0]["load_1m_before"],
        "figures": rows,
    }


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Benchmarks on a baseline commit and on this tree, paired."
    )
    parser.add_argument("--base", required=True, help="the baseline commit")
    parser.add_argument("--benches", default=",".join(HEADLINES))
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs per benchmark; the median ratio is kept"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    benches = [b for b in args.benches.split(",") if b]
    unknown = sorted(set(benches) - set(HEADLINES))
    if unknown:
        raise SystemExit(f"no headline figures for {unknown}; known: {sorted(HEADLINES)}")
    base_sha = subprocess.run(
        ["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="fedge-ab-"))
    base = work / "base"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(base), base_sha], cwd=ROOT, check=True
    )
    figures: dict[str, Any] = {}
    try:
        for i, bench in enumerate(benches):
            pairs: list[dict[str, Any]] = []
            for r in range(args.repeat):
                order = [("base", base), ("current", ROOT)]
                if (i + r) % 2:
                    order.reverse()
                results: dict[str, dict[str, Any]] = {}
                loads: dict[str, list[float]] = {}
                for side, tree in order:
                    loads[side] = _loadavg()
                    print(f"bench.{bench} on {side} (load {loads[side][0]})", flush=True)
                    results[side] = _run(bench, tree)
                pairs.append({"first": order[0][0], "load_1m_before": loads, "results": results})
            figures[bench] = _summary(bench, pairs)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)
    # Benchmarks not run this time keep their last paired figures (each says its commit).
    previous: dict[str, Any] = {}
    old = RESULTS_DIR / "ab.json"
    if old.is_file():
        kept = json.loads(old.read_text())
        for name, entry in kept.get("benches", {}).items():
            previous[name] = {"commit": kept.get("commit"), "base": kept.get("base"), **entry}
    for entry in figures.values():
        entry["commit"], entry["base"] = commit(), base_sha
    path = write_result("ab", {"base": base_sha, "benches": {**previous, **figures}})
    print(f"wrote {path.relative_to(RESULTS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
