"""The hierarchy on held-out days: forecasts -> DQN modes -> PPO shares -> outcomes.

The trained policies run through :class:`coordinator.DecisionService` (the ONNX files
the coordinator serves), against the baselines on the same days; the threshold
heuristic's thresholds are chosen on the validation days.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulation._decision_data import DecisionData
from simulation._decision_train import DecisionProgress, Trained, config_for_run, train
from simulation._energy_env import (
    EnergyPolicy,
    EnergyTrace,
    always_on,
    best_threshold,
    energy_obs,
    random_policy,
    rollout,
    threshold_policy,
)
from simulation._slice_env import (
    SLICES,
    SliceContext,
    SlicePolicy,
    SliceTrace,
    context,
    evaluate,
    proportional_current,
    proportional_forecast,
    slice_obs,
    static_shares,
)
from simulation._source import SiteSource

Figures = list[tuple[str, str]]


def service_policies(trained: Trained) -> tuple[Any, EnergyPolicy, SlicePolicy]:
    from coordinator import DecisionService

    data = trained.data
    service = DecisionService(trained.out_dir, data.site_ids)
    ids = np.array(data.site_ids)

    def energy(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.int64]:
        return service.strategic(list(ids[sites]), obs).modes

    def slices(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = service.tactical(list(ids[sites]), obs).shares.astype(np.float64)
        return out

    return service, energy, slices


def held_out(trained: Trained) -> tuple[dict[str, Any], Figures]:
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
        "random": rollout(data, starts, random_policy(seed)),
    }
    base = float(traces["always_on"].power_w.sum())
    energy: dict[str, Any] = {m: t.summary(base) for m, t in traces.items()}
    energy["threshold"]["thresholds"] = {
        "sleep_below": sleep_below,
        "off_below": off_below,
        "validation_reward": round(val_reward, 5),
    }

    ctx = context(data, traces["dqn"], seed)
    lo, hi = int(starts[0]), int(starts[-1]) + 3
    slice_traces = {
        "ppo": evaluate(ctx, lo, hi, ppo),
        "static": evaluate(ctx, lo, hi, static_shares),
        "proportional_current": evaluate(ctx, lo, hi, proportional_current),
        "proportional_forecast": evaluate(ctx, lo, hi, proportional_forecast),
    }
    static_reserved = float(slice_traces["static"].reserved.mean())
    slices = {m: t.summary(static_reserved) for m, t in slice_traces.items()}

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
        "policy_version": service.version,
        "policy_dir": str(trained.out_dir),
        "train_seconds": {k: round(v, 1) for k, v in trained.seconds.items()},
    }
    return section, figures(section, data, traces, ctx, slice_traces)


def _latency(service: Any, data: DecisionData, ctx: SliceContext) -> dict[str, Any]:
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


def figures(
    section: dict[str, Any],
    data: DecisionData,
    traces: dict[str, EnergyTrace],
    ctx: SliceContext,
    slice_traces: dict[str, SliceTrace],
) -> Figures:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from simulation._report import _figure_png

    out: Figures = []
    dqn = traces["dqn"]
    per_day = data.steps_per_day // 3
    day = slice(0, min(per_day, len(dqn.starts)))
    n = len(data.clusters)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.3 + 1.1 * n), squeeze=False)
    cmap = ListedColormap(["tab:green", "tab:orange", "tab:gray"])
    hours = (data.minute_of_week[dqn.starts[day]] % 1440) / 60.0
    for c, ax in enumerate(axes[:, 0]):
        modes = dqn.modes[day, c].T
        ax.imshow(
            modes,
            aspect="auto",
            cmap=cmap,
            vmin=0,
            vmax=2,
            interpolation="nearest",
            extent=(float(hours[0]), float(hours[-1]) + 0.25, modes.shape[0] - 0.5, -0.5),
        )
        ax.set_yticks(range(modes.shape[0]))
        ax.set_yticklabels([data.site_ids[int(s)] for s in data.clusters[c]], fontsize=7)
        twin = ax.twinx()
        demand = data.load[data.clusters[c]][:, dqn.starts[day]].sum(axis=0)
        twin.plot(hours + 0.125, demand, color="k", lw=1)
        twin.set_ylabel("demand", fontsize=7)
        ax.set_title(
            f"cluster {c}: DQN modes (green active, orange capacity off, grey sleep)", fontsize=8
        )
    axes[-1, 0].set_xlabel("hour of the first held-out day")
    out.append(("Strategic modes over a held-out day, per cluster", _figure_png(fig)))
    plt.close(fig)

    energy = section["energy"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, r in energy.items():
        ax.scatter(100 * r["qos_violation_rate"], r["energy_saved_pct"], s=60)
        ax.annotate(
            f"{m} (reward {r['reward']:.3f})",
            (100 * r["qos_violation_rate"], r["energy_saved_pct"]),
            fontsize=8,
        )
    ax.set(xlabel="site-steps with QoS violation (%)", ylabel="energy saved vs always-on (%)")
    ax.set_xscale("symlog", linthresh=0.1)
    out.append(("Energy saved vs QoS violations, per method", _figure_png(fig)))
    plt.close(fig)

    ppo = slice_traces["ppo"]
    site = int(ppo.sites[0])
    mask = ppo.sites == site
    steps = ppo.steps[mask][: data.steps_per_day]
    idx = np.nonzero(mask)[0][: len(steps)]
    x = (data.minute_of_week[steps] % 1440) / 60.0
    fig, axes = plt.subplots(len(SLICES), 1, figsize=(10, 6), sharex=True)
    for k, (ax, name) in enumerate(zip(axes, SLICES, strict=True)):
        ax.plot(x, ppo.demand[idx, k], color="k", lw=1, label="requirement")
        for m, style in (("ppo", "-"), ("proportional_forecast", ":"), ("static", "--")):
            tr = slice_traces[m]
            ax.plot(x, tr.shares[idx, k], style, lw=1, label=m)
        ax.set_ylabel(f"{name} share", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[0].set_title(
        f"{data.site_ids[site]}: PRB share reserved vs needed (first held-out day)", fontsize=9
    )
    axes[-1].set_xlabel("hour")
    out.append(("Slice shares vs demand", _figure_png(fig)))
    plt.close(fig)
    return out


def run_decisions(
    preset_name: str,
    source: SiteSource,
    generator: Any,
    val_days: int,
    test_days: int,
    seed: int,
    run_dir: Path,
    progress: DecisionProgress | None = None,
) -> tuple[dict[str, Any], Figures]:
    """``fedge simulate --decisions``: train on the run's sites, evaluate on its test days."""
    from dataclasses import replace

    config = replace(
        config_for_run(preset_name, generator, seed), val_days=val_days, test_days=test_days
    )
    trained = train(config, run_dir / "decisions", source=source, progress=progress)
    section, figs = held_out(trained)
    section["preset"] = preset_name
    return section, figs
