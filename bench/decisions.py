"""``make bench-decisions``: train the default decision preset under each power model
(3GPP TR 38.864 and EARTH), then time the served policies.

Training is the documented ``fedge decisions train`` path (forecaster, DQN, PPO, ONNX
export) and its held-out evaluation, once per power model; the results give per model
every method, the hindsight ceiling and each method's share of it, and the targets
checked against them. Wall and CPU seconds are both recorded because the
2-core development machine is shared and wall time there depends on the neighbours' load.
Serving is timed through :class:`fedge.decisions.DecisionService` pinned to one core with one
ONNX Runtime thread: a decision is one site's power mode plus its slice shares.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import write_result

POLICY_DIR = Path("runs/decisions")  # EARTH's; TR 38.864's in runs/decisions-tr38864
BATCH = 1024


def _cpu_s() -> float:
    self_ = resource.getrusage(resource.RUSAGE_SELF)
    return self_.ru_utime + self_.ru_stime


def _serving(
    policy_dir: Path, energy: np.ndarray, slices: np.ndarray, ids: list[str]
) -> dict[str, Any]:
    from fedge.decisions import DecisionService

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    svc = DecisionService(policy_dir, ids, threads=1)
    one_e, one_s, site = energy[:1], slices[:1], ids[:1]
    for _ in range(200):
        svc.strategic(site, one_e)
        svc.tactical(site, one_s)
    single = []
    for _ in range(5000):
        t0 = time.perf_counter_ns()
        svc.strategic(site, one_e)
        svc.tactical(site, one_s)
        single.append((time.perf_counter_ns() - t0) / 1000.0)
    reps = max(1, -(-BATCH // len(ids)))
    batch_ids = (ids * reps)[:BATCH]
    e = np.resize(energy, (BATCH, energy.shape[1]))
    s = np.resize(slices, (BATCH, slices.shape[1]))
    for _ in range(20):
        svc.strategic(batch_ids, e)
        svc.tactical(batch_ids, s)
    batched = []
    for _ in range(300):
        t1 = time.perf_counter()
        svc.strategic(batch_ids, e)
        svc.tactical(batch_ids, s)
        batched.append(time.perf_counter() - t1)
    arr = np.array(single)
    return {
        "single_p50_us": round(float(np.percentile(arr, 50)), 1),
        "single_p99_us": round(float(np.percentile(arr, 99)), 1),
        "batched_decisions_per_s": round(BATCH / float(np.median(batched))),
        "batch_size": BATCH,
        "decision": "one site: power mode (DQN) + slice shares (PPO), ONNX Runtime, 1 thread, 1 core",
    }


def _targets(name: str, e: dict[str, Any]) -> dict[str, Any]:
    """The acceptance targets of ``name``'s model against its held-out figures."""
    dqn = e["dqn"]
    ratio = dqn.get("ratio_to_ceiling")
    out: dict[str, Any] = {
        "dqn_energy_saved_pct": dqn["energy_saved_pct"],
        "dqn_qos_violation_rate": dqn["qos_violation_rate"],
        "dqn_ratio_to_ceiling": ratio,
        "dqn_beats_threshold_reward": dqn["reward"] > e["threshold"]["reward"],
        "dqn_at_least_95pct_of_ceiling": ratio is not None and ratio >= 0.95,
    }
    if name == "tr38864":
        out["dqn_saves_25pct"] = dqn["energy_saved_pct"] >= 25.0
        out["dqn_violations_at_most_1pct"] = dqn["qos_violation_rate"] <= 0.01
    return out


def main() -> None:
    from dataclasses import replace

    from fedge.decisions import POWER_MODELS, energy_obs, slice_obs
    from fedge.simulation._decision_eval import by_power_model, held_out
    from fedge.simulation._decision_train import decision_preset, train
    from fedge.simulation._slice_env import context

    load_before = os.getloadavg()[0]
    config = decision_preset("default")
    sections: dict[str, dict[str, Any]] = {}
    timing: dict[str, dict[str, Any]] = {}
    trained = None
    for name in ("tr38864", "earth"):
        out = POLICY_DIR if name == "earth" else POLICY_DIR.with_name(f"decisions-{name}")
        cpu0, t0 = _cpu_s(), time.perf_counter()
        trained = train(replace(config, power=POWER_MODELS[name]), out)
        train_wall, train_cpu = time.perf_counter() - t0, _cpu_s() - cpu0
        print(f"{name}: trained in {train_wall:.0f} s wall, {train_cpu:.0f} s CPU", flush=True)
        section = held_out(trained)
        section.pop("plot_data")
        (out / "evaluation.json").write_text(json.dumps(section, indent=2) + "\n")
        sections[name] = section
        timing[name] = {
            "train_wall_s": round(train_wall, 1),
            "train_cpu_s": round(train_cpu, 1),
            "train_stage_s": section["train_seconds"],
        }
    assert trained is not None
    section = sections["earth"]  # the served policies timed below: EARTH's, the default

    d = trained.data
    t = d.block_starts("test")
    modes = np.zeros_like(d.clusters)
    energy = np.concatenate(
        [energy_obs(d, d.clusters, int(b), p, modes, modes) for b in t[:8] for p in range(4)]
    )
    ctx = context(d, None, 0)
    sites, steps = ctx.valid(d.test_start, d.test_start + 12)
    slices = slice_obs(ctx, sites, steps)
    n = min(len(energy), len(slices))
    ids = [d.site_ids[int(i)] for i in sites[:n]]
    serving = _serving(POLICY_DIR, energy[:n], slices[:n], ids)
    e, s = section["energy"], section["slices"]
    figures = {
        **{k: serving[k] for k in ("single_p50_us", "single_p99_us", "batched_decisions_per_s")},
        "train_wall_s": timing["earth"]["train_wall_s"],
        "train_cpu_s": timing["earth"]["train_cpu_s"],
        "train_stage_s": timing["earth"]["train_stage_s"],
        "train_by_power_model": timing,
        "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "serving": serving,
        "preset": config.to_dict(),
        "policy_version": section["policy_version"],
        "held_out": {"energy": e, "slices": s},
        "power_models": by_power_model(sections),
        "targets": {name: _targets(name, sec["energy"]) for name, sec in sections.items()},
        "acceptance": {
            "dqn_energy_saved_pct": e["dqn"]["energy_saved_pct"],
            "dqn_qos_violation_rate": e["dqn"]["qos_violation_rate"],
            "dqn_beats_threshold_reward": e["dqn"]["reward"] > e["threshold"]["reward"],
            "ppo_sla_satisfaction": s["ppo"]["sla_satisfaction"],
            "ppo_reserved_vs_static_pct": s["ppo"]["reserved_vs_static_pct"],
            "ppo_beats_forecast_proportional_reward": s["ppo"]["reward"]
            > s["proportional_forecast"]["reward"],
        },
        # What no method could beat on these days (docs/decisions.md, "Ceilings").
        "ceilings": {
            "energy_saved_pct": e.get("hindsight_bound", {}).get("energy_saved_pct"),
            "energy_saved_pct_by_power_model": {
                name: sec["energy"].get("hindsight_bound", {}).get("energy_saved_pct")
                for name, sec in sections.items()
            },
            "sla_satisfaction_hindsight": s["hindsight_bound"]["sla_satisfaction"],
            "sla_satisfaction_without_foresight": s["hindsight_bound"][
                "sla_satisfaction_without_foresight"
            ],
        },
    }
    print(json.dumps({k: figures[k] for k in ("targets", "acceptance", "ceilings")}, indent=2))
    print(f"wrote {write_result('decisions', figures)}")


def ceilings() -> None:
    """``python -m bench.decisions --ceilings``: without any RL training, the default
    preset's held-out baselines and hindsight ceiling under each power model (minutes,
    where the full benchmark takes one training per model)."""
    from dataclasses import replace

    from fedge.decisions import POWER_MODELS
    from fedge.simulation._decision_train import config_data, decision_preset
    from fedge.simulation._energy_env import (
        always_on,
        best_threshold,
        ceiling_ratios,
        hindsight_bound,
        random_policy,
        rollout,
        threshold_policy,
    )

    load_before = os.getloadavg()[0]
    c = decision_preset("default")
    t0 = time.perf_counter()
    data, _ = config_data(c)
    starts = data.block_starts("test")
    models: dict[str, Any] = {}
    for name, power in POWER_MODELS.items():
        d = replace(data, power=power)
        sleep_below, off_below, val_reward = best_threshold(d)
        traces = {
            "always_on": rollout(d, starts, always_on),
            "threshold": rollout(d, starts, threshold_policy(sleep_below, off_below)),
            "random": rollout(d, starts, random_policy(c.seed, len(power.modes))),
        }
        base = float(traces["always_on"].power_w.sum())
        energy: dict[str, Any] = {m: t.summary(base) for m, t in traces.items()}
        energy["threshold"]["thresholds"] = {
            "sleep_below": sleep_below,
            "off_below": off_below,
            "validation_reward": round(val_reward, 5),
        }
        bound = hindsight_bound(d, starts)
        if bound is not None:
            energy["hindsight_bound"] = bound
            ceiling_ratios(energy)
        models[name] = {"energy": energy, "power_model": power.describe()}
        print(name, json.dumps({m: r.get("energy_saved_pct") for m, r in energy.items()}))
    mean_load = float(data.load[:, data.test_start :].mean())
    figures = {
        "what": "no RL: the default preset's held-out baselines and hindsight ceiling per "
        "power model; the DQN's figures are the full benchmark's (decisions.json)",
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "preset": c.to_dict(),
        "held_out_mean_load": round(mean_load, 4),
        "power_models": models,
    }
    print(f"wrote {write_result('decisions_ceilings', figures)}")


if __name__ == "__main__":
    import sys

    if "--ceilings" in sys.argv[1:]:
        ceilings()
    else:
        main()
