"""The hierarchy on held-out days: forecasts -> DQN modes -> PPO shares -> outcomes.

The trained policies run through :class:`fedge.decisions.DecisionService` (the ONNX
files the coordinator serves, through the same service), against the baselines on the same days; the threshold
heuristic's thresholds are chosen on the validation days.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import MINUTES_PER_DAY
from fedge.decisions import (
    POWER_MODELS,
    DecisionData,
    DecisionService,
    SliceContext,
    energy_obs,
    slice_obs,
)
from fedge.simulation._config import SimulationConfig
from fedge.simulation._decision_train import DecisionProgress, Trained, config_for_run, train
from fedge.simulation._energy_env import (
    EnergyPolicy,
    EnergyTrace,
    always_on,
    best_threshold,
    ceiling_ratios,
    hindsight_bound,
    random_policy,
    rollout,
    threshold_policy,
)
from fedge.simulation._slice_env import (
    SlicePolicy,
    SliceTrace,
    context,
    evaluate,
    proportional_current,
    proportional_forecast,
    static_shares,
)
from fedge.simulation._slice_env import hindsight_bound as slice_bound
from fedge.simulation._source import SiteSource


def service_policies(trained: Trained) -> tuple[DecisionService, EnergyPolicy, SlicePolicy]:
    data = trained.data
    service = DecisionService(trained.out_dir, data.site_ids)
    ids = np.array(data.site_ids)

    def energy(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.int64]:
        return service.strategic(list(ids[sites]), obs).modes

    def slices(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = service.tactical(list(ids[sites]), obs).shares.astype(np.float64)
        return out

    return service, energy, slices


def held_out(trained: Trained) -> dict[str, Any]:
    """Every method on the test days; returns the report section and its figures."""
    data = trained.data
    seed = trained.config.seed
    service, dqn, ppo = service_policies(trained)
    starts = data.block_starts("test")
    sleep_below, off_below, val_reward = best_threshold(data)
    traces = {
        "always_on": rollout(data, starts, always_on),
        "dqn": rollout(data, starts, dqn),
        "threshold": rollout(data, starts, threshold_policy(sleep_below, off_below)),
        "random": rollout(data, starts, random_policy(seed, len(data.power.modes))),
    }
    base = float(traces["always_on"].power_w.sum())
    energy: dict[str, Any] = {m: t.summary(base) for m, t in traces.items()}
    energy["threshold"]["thresholds"] = {
        "sleep_below": sleep_below,
        "off_below": off_below,
        "validation_reward": round(val_reward, 5),
    }
    bound = hindsight_bound(data, starts)
    if bound is not None:
        energy["hindsight_bound"] = bound
        ceiling_ratios(energy)

    ctx = context(data, traces["dqn"], seed)
    lo, hi = int(starts[0]), int(starts[-1]) + 3
    slice_traces = {
        "ppo": evaluate(ctx, lo, hi, ppo),
        "static": evaluate(ctx, lo, hi, static_shares),
        "proportional_current": evaluate(ctx, lo, hi, proportional_current),
        "proportional_forecast": evaluate(ctx, lo, hi, proportional_forecast),
    }
    static_reserved = float(slice_traces["static"].reserved.mean())
    slices: dict[str, Any] = {m: t.summary(static_reserved) for m, t in slice_traces.items()}
    slices["hindsight_bound"] = slice_bound(ctx, lo, hi)

    latency = _latency(service, data, ctx)
    section = {
        "energy": energy,
        "slices": slices,
        "latency_us": latency,
        "held_out": {
            "days": trained.config.test_days,
            "clusters": len(data.clusters),
            "cluster_size": int(data.clusters.shape[1]),
            "site_steps_energy": int(traces["dqn"].modes.size),
        },
        "power_model": data.power.describe(),
        "forecaster": dict(data.forecaster),
        "policy_version": service.version,
        "policy_dir": str(trained.out_dir),
        "train_seconds": {k: round(v, 1) for k, v in trained.seconds.items()},
    }
    section["plot_data"] = plot_data(data, traces, slice_traces)
    return section


def _latency(service: DecisionService, data: DecisionData, ctx: SliceContext) -> dict[str, Any]:
    """One site's full decision (mode, then shares) through the service, one thread."""
    t = int(data.block_starts("test")[0])
    sites = data.clusters[:1]
    prev = np.zeros_like(sites)
    e_obs = energy_obs(data, sites, t, 0, prev.copy(), prev)
    s_idx, s_steps = ctx.valid(t, t + 3)
    s_obs = slice_obs(ctx, s_idx[:1], s_steps[:1])
    site = [data.site_ids[int(sites[0, 0])]]
    for _ in range(50):
        service.strategic(site, e_obs)
        service.tactical(site, s_obs)
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        service.strategic(site, e_obs)
        service.tactical(site, s_obs)
        samples.append((time.perf_counter_ns() - t0) / 1000.0)
    arr = np.array(samples)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p99": round(float(np.percentile(arr, 99)), 1),
        "what": "one site: strategic mode then slice shares via DecisionService, 1 thread",
    }


def plot_data(
    data: DecisionData,
    traces: dict[str, EnergyTrace],
    slice_traces: dict[str, SliceTrace],
) -> dict[str, Any]:
    """The first held-out day, compact: what the report's decision plots draw."""
    dqn = traces["dqn"]
    day = slice(0, min(data.steps_per_day // 3, len(dqn.starts)))
    starts = dqn.starts[day]
    clusters = [
        {
            "sites": [data.site_ids[int(s)] for s in data.clusters[c]],
            "modes": dqn.modes[day, c].T.tolist(),
            "demand": np.round(data.load[data.clusters[c]][:, starts].sum(axis=0), 4).tolist(),
        }
        for c in range(len(data.clusters))
    ]
    ppo = slice_traces["ppo"]
    site = int(ppo.sites[0])
    idx = np.nonzero(ppo.sites == site)[0][: data.steps_per_day]

    def hours(steps: NDArray[np.int64]) -> list[float]:
        out: list[float] = np.round(
            (data.minute_of_week[steps] % MINUTES_PER_DAY) / 60.0, 4
        ).tolist()
        return out

    return {
        "modes_day": {"hours": hours(starts), "clusters": clusters},
        "slice_day": {
            "site": data.site_ids[site],
            "hours": hours(ppo.steps[idx]),
            "requirement": np.round(ppo.demand[idx].T, 4).tolist(),
            "shares": {
                m: np.round(slice_traces[m].shares[idx, :3].T, 4).tolist()
                for m in ("ppo", "proportional_forecast", "static")
            },
        },
    }


def by_power_model(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per power model: its methods (ratios to its ceiling included), its ceiling, the
    model's figures and the policy trained under it."""
    return {
        name: {
            "energy": sec["energy"],
            "power_model": sec["power_model"],
            "policy_version": sec["policy_version"],
            "policy_dir": sec["policy_dir"],
        }
        for name, sec in sections.items()
    }


def run_decisions(
    config: SimulationConfig,
    source: SiteSource,
    run_dir: Path,
    progress: DecisionProgress | None = None,
) -> dict[str, Any]:
    """``fedge simulate --decisions``: train on the run's sites under each power model,
    score its held-out days. The section's own figures are EARTH's (the default model,
    policies in ``decisions/``); ``power_models`` holds every model's, TR 38.864's
    policies in ``decisions-tr38864/``."""
    base = replace(
        config_for_run(config.decision_preset, config.generator, config.seed),
        val_days=config.val_days,
        test_days=config.test_days,
    )
    sections: dict[str, dict[str, Any]] = {}
    data: DecisionData | None = None
    for name in ("earth", *(n for n in POWER_MODELS if n != "earth")):
        out = run_dir / ("decisions" if name == "earth" else f"decisions-{name}")
        config_m = replace(base, power=POWER_MODELS[name])
        trained = train(config_m, out, source=source, progress=progress, forecast=data)
        data = trained.data
        sections[name] = held_out(trained)
    section = sections["earth"]
    section["power_models"] = by_power_model(sections)
    section["preset"] = config.decision_preset
    return section
