"""The whole live system on one machine: ``fedge fleet`` with 20 agents, each with its
SuperNode, for a few minutes of the loop (``make bench-fleet`` → bench/results/fleet.json).

Figures, all read from the running system:

- ``ingest_lag_p50_ms`` / ``_p99_ms``: the replayer's publish of a KPI → the coordinator
  storing the forecast the agent made on it (its ``received_at``);
- ``decision_cycle_p50_ms`` / ``_p99_ms``: a decision tick (the actions' ``decided_at``)
  → the last of that tick's actions acknowledged (ticks with an action never
  acknowledged are counted apart, ``decision_ticks_unacked``);
- ``round_wall_s``: a federated round's wall time as the coordinator recorded it;
- ``agent_rss_mb``: one site's agent and its SuperNode (with the SuperNode's children),
  idle (before the run) and training (the most during a round);
- ``coordinator_cpu_pct``: the coordinator's process group, mean over the loop (100 = one core);
- ``rollout_s``: promotion → every site serving the version.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench._common import RESULTS_DIR, commit, machine

SAMPLE_S = 1.0


def _group(pid: int) -> list[psutil.Process]:
    """Every process in the session ``pid`` leads (the fleet starts each part that way)."""
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == pid:
                out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def _supernode_session(agent_pid: int) -> int | None:
    try:
        for child in psutil.Process(agent_pid).children():
            if "flower-supernode" in " ".join(child.cmdline()):
                return int(child.pid)
    except psutil.Error:
        return None
    return None


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class Sampler(threading.Thread):
    """Every second: each site's agent + SuperNode RSS, and the coordinator's CPU."""

    def __init__(self, agents: list[int], coordinator: int) -> None:
        super().__init__(daemon=True)
        self.agents, self.coordinator = agents, coordinator
        self.rss: list[tuple[float, list[float]]] = []
        self.cpu: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        cpu_procs: dict[int, psutil.Process] = {}
        while not self.halt.wait(SAMPLE_S):
            now = time.time()
            per_site = []
            for pid in self.agents:
                procs = _group(pid)
                node = _supernode_session(pid)
                if node is not None:
                    procs += _group(node)
                per_site.append(_rss_mb(procs))
            self.rss.append((now, per_site))
            total = 0.0
            for proc in _group(self.coordinator):
                known = cpu_procs.setdefault(proc.pid, proc)
                try:
                    total += known.cpu_percent(None)
                except psutil.Error:
                    continue
            self.cpu.append(total)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 2)


def decision_cycles(report: dict[str, Any]) -> tuple[list[float], int]:
    """Per decision tick: its last acknowledgement - decided_at, in ms, over the ticks
    whose every action was acknowledged; and how many ticks had an action never acked.

    A tick's actions are the ones it sent: a tactical tick sends none to a sleeping site,
    so a tick counts once each site it sent an action to has acknowledged it."""
    ticks: dict[tuple[str, float], list[float | None]] = {}
    for site in report["sites"]:
        for action in site.get("action_log", []):
            key = (action["kind"], round(float(action["decided_at"]), 3))
            ticks.setdefault(key, []).append(action.get("acked_at"))
    out, unacked = [], 0
    for (_, decided), acks in ticks.items():
        if all(a is not None for a in acks):
            out.append(1000.0 * (max(float(a) for a in acks if a is not None) - decided))
        else:
            unacked += 1
    return out, unacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall minutes of the loop")
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--policies", type=Path, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="fleet directory (default: temp)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "fleet.json")
    args = parser.parse_args()

    import json
    import signal

    def stop(signum: int, _frame: object) -> None:  # so that `finally` takes the fleet down
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)

    from fedge.simulation._fleet import FleetSpec, down, up
    from fedge.simulation._fleet_report import run_fleet

    root = args.dir or Path(tempfile.mkdtemp(prefix="fedge-bench-fleet-")) / "fleet"
    spec = FleetSpec(args.sites, speed=args.speed, policies=args.policies)
    t_up = time.monotonic()
    try:
        fleet = up(root, spec, echo=print)
        up_s = time.monotonic() - t_up
        state = fleet.state
        agents = [state.processes[f"agent-{s.index}"].pid for s in state.sites]
        sampler = Sampler(agents, state.processes["coordinator"].pid)
        sampler.start()
        time.sleep(10 * SAMPLE_S)  # idle: the fleet up, no run yet
        outcome = run_fleet(root, args.minutes * 60.0, echo=print)
        sampler.halt.set()
        sampler.join()
    finally:
        if (root / "fleet.json").exists():
            down(root, echo=print)
    report = outcome.report
    rounds = [x for r in report["runs"] for x in r["rounds"] if x["status"] == "completed"]
    spans = [(float(x["started_at"]), float(x["finished_at"])) for x in rounds]
    idle = [max(v) for t, v in sampler.rss if t < report["fleet"]["started_at"]]
    training = [max(v) for t, v in sampler.rss if any(a <= t <= b for a, b in spans)]
    lag = report["loop"]["ingest_lag_ms"]
    cycles, unacked = decision_cycles(report)
    figures = {
        "benchmark": "fleet",
        "machine": machine(),
        "commit": commit(),
        "setup": {
            "sites": args.sites,
            "minutes": args.minutes,
            "speed": args.speed,
            "up_s": round(up_s, 1),
            "policies": str(args.policies) if args.policies else "fedge decisions train smoke",
        },
        "ingest_lag_p50_ms": lag["p50"],
        "ingest_lag_p99_ms": lag["p99"],
        "ingest_lag_n": lag["n"],
        "decision_cycle_p50_ms": _pct(cycles, 50),
        "decision_cycle_p99_ms": _pct(cycles, 99),
        "decision_ticks": len(cycles),
        "decision_ticks_unacked": unacked,
        "round_wall_s": round(statistics.median(b - a for a, b in spans), 2) if spans else None,
        "rounds": len(spans),
        "agent_rss_mb": {
            "idle": round(max(idle), 1) if idle else None,
            "training": round(max(training), 1) if training else None,
        },
        "coordinator_cpu_pct": round(statistics.fmean(sampler.cpu), 1) if sampler.cpu else None,
        "rollout_s": report["loop"]["rollout_s"],
        "loop_closed": not outcome.missing,
        "missing": outcome.missing,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
