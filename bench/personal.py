"""Personalised federation: which adaptation of the federated model to serve per site.

An in-process emulation of the simulation's FedAvg (full participation, each site's
``local_epochs`` from the global weights with the plan's seeds and learning-rate
schedule, the example-weighted mean) and of ``local`` (a site's rounds on its own, the
best validated round kept), then every method of ``simulation._personalised`` on the
federated weights. Scored on the test days like ``fedge simulate``; figures overall, per
archetype, and on the sites unlike the fleet's majority: those whose own model beats the
federated one on their test days (the gap the personalisation is meant to close; the
selection favours ``local``).

``python -m bench.personal [--preset demo] [--eval-sites N] [--cache DIR]``:
``bench/results/personal_<preset>.json``. The federated and local models are cached in
``--cache`` so a second run only re-runs the adaptations.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import write_result
from fedge.core import TARGET_INDEX
from fedge.federation import FederationPlan
from fedge.models import (
    ForecastSpec,
    LoadForecaster,
    evaluate_loss,
    get_weights,
    predict,
    set_weights,
    train_epochs,
)
from fedge.simulation._baselines import actuals
from fedge.simulation._config import PERSONALISED_METHODS
from fedge.simulation._config import preset as get_preset
from fedge.simulation._metrics import SiteScore, pool_scores, score_site
from fedge.simulation._personalised import personalise
from fedge.simulation._site_task import SiteTask, site_task
from fedge.simulation._source import GeneratedSites

LOOKBACK = 12


def _plan(name: str, overrides: dict[str, Any]) -> tuple[FederationPlan, int]:
    cfg = get_preset(name)
    gen = replace(cfg.generator, **{k: v for k, v in overrides.items() if k != "num_rounds"})
    cfg = replace(cfg, generator=gen, num_rounds=overrides.get("num_rounds", cfg.num_rounds))
    source = GeneratedSites(cfg.generator)
    steps = getattr(cfg, "horizon_minutes", 60) // cfg.generator.step_minutes
    plan = FederationPlan(
        data_spec=json.dumps(source.spec(), sort_keys=True),
        strategy="fedavg",
        num_rounds=cfg.num_rounds,
        fraction_train=1.0,
        fraction_evaluate=1.0,
        local_epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        proximal_mu=cfg.proximal_mu,
        seed=cfg.seed,
        val_days=cfg.val_days,
        test_days=cfg.test_days,
        # pinned: the cached models were trained with it (the reference forecaster)
        forecast=ForecastSpec(lookback=LOOKBACK, horizon=max(1, steps)),
    )
    return plan, source.num_sites


def _task(plan: FederationPlan, i: int) -> SiteTask:
    return site_task(plan.data_spec, i, plan.forecast, plan.val_days, plan.test_days)


def fedavg(plan: FederationPlan, num_sites: int) -> list[np.ndarray]:
    torch.manual_seed(plan.seed)
    model = LoadForecaster(plan.forecast)
    glob = get_weights(model)
    best, best_val = glob, np.inf
    for r in range(1, plan.num_rounds + 1):
        acc = [np.zeros_like(w, dtype=np.float64) for w in glob]
        total = 0
        val = 0.0
        for i in range(num_sites):
            p = _task(plan, i).prepared
            set_weights(model, glob)
            train_epochs(
                model, p.x_train, p.y_train, epochs=plan.local_epochs,
                batch_size=plan.batch_size, learning_rate=plan.learning_rate_at(r),
                seed=plan.seed * 1_000_003 + r * 7919 + i,
            )  # fmt: skip
            for k, w in enumerate(get_weights(model)):
                acc[k] += w * len(p.x_train)
            total += len(p.x_train)
        glob = [(a / total).astype(np.float32) for a in acc]
        set_weights(model, glob)
        for i in range(num_sites):
            p = _task(plan, i).prepared
            val += evaluate_loss(model, p.x_val, p.y_val) * len(p.x_val)
        print(f"fedavg round {r}: val {val:.2f}", flush=True)
        if val < best_val:  # the best validated round, as the simulation keeps
            best, best_val = glob, val
    return best


def local(plan: FederationPlan, i: int) -> np.ndarray:
    torch.manual_seed(plan.seed)
    p = _task(plan, i).prepared
    model = LoadForecaster(plan.forecast)
    best, best_val = get_weights(model), np.inf
    for r in range(plan.num_rounds):
        train_epochs(
            model, p.x_train, p.y_train, epochs=plan.local_epochs, batch_size=plan.batch_size,
            learning_rate=plan.learning_rate_at(r + 1), seed=(plan.seed + i) * 1_000_003 + r,
        )  # fmt: skip
        val = evaluate_loss(model, p.x_val, p.y_val)
        if val < best_val:
            best, best_val = get_weights(model), val
    set_weights(model, best)
    return predict(model, p.x_test)


def _score(task: SiteTask, scaled: np.ndarray) -> SiteScore:
    p = task.prepared
    fc = p.scaler.inverse(scaled, TARGET_INDEX)
    act = actuals(task.series.values, p.test_ends, p.y_test.shape[1], TARGET_INDEX)
    rng = p.scaler.range[list(TARGET_INDEX)]
    return score_site(task.series.site_id, task.series.archetype, act, fc, rng)


def _figures(scores: list[SiteScore]) -> dict[str, Any]:
    pooled = pool_scores(scores)
    return {k: round(pooled[k], 5) for k in ("rmse", "asymmetric_cost", "underprovision_rate")} | {
        "sites": len(scores)
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--eval-sites", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-personal"))
    ap.add_argument("--methods", default=",".join(PERSONALISED_METHODS))
    ap.add_argument("--sites", type=int, help="the preset's first N sites only")
    ap.add_argument("--step-minutes", type=int, help="resample the preset's sites")
    ap.add_argument("--rounds", type=int)
    args = ap.parse_args()
    torch.set_num_threads(1)
    overrides: dict[str, Any] = {
        k: v
        for k, v in (
            ("num_sites", args.sites),
            ("step_minutes", args.step_minutes),
            ("num_rounds", args.rounds),
        )
        if v is not None
    }
    plan, num_sites = _plan(args.preset, overrides)
    tag = args.preset + "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
    cache = args.cache / tag
    cache.mkdir(parents=True, exist_ok=True)
    n_eval = args.eval_sites or num_sites
    indices = sorted({int(i) for i in np.linspace(0, num_sites - 1, n_eval)})
    tasks = {i: _task(plan, i) for i in indices}
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    wfile = cache / "fedavg.npz"
    if wfile.exists():
        with np.load(wfile) as z:
            weights = [z[f"arr_{k}"] for k in range(len(z.files))]
    else:
        weights = fedavg(plan, num_sites)
        np.savez(wfile, *weights)
    seconds["fedavg"] = time.perf_counter() - t0
    model = LoadForecaster(plan.forecast)
    set_weights(model, weights)
    forecasts: dict[str, dict[int, np.ndarray]] = {
        "fedavg": {i: predict(model, t.prepared.x_test) for i, t in tasks.items()}
    }
    t0 = time.perf_counter()
    local_fc: dict[int, np.ndarray] = {}
    for i in indices:
        f = cache / f"local_{i}.npy"
        if not f.exists():
            np.save(f, local(plan, i))
            print(f"local site {i} done", flush=True)
        local_fc[i] = np.load(f)
    forecasts["local"] = local_fc
    seconds["local"] = time.perf_counter() - t0
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        forecasts[method] = personalise(method, weights, plan, tasks)
        seconds[method] = time.perf_counter() - t0
        print(f"{method} done in {seconds[method]:.1f} s", flush=True)

    scores = {m: {i: _score(tasks[i], fc[i]) for i in indices} for m, fc in forecasts.items()}
    unlike = [i for i in indices if scores["local"][i].nrmse < scores["fedavg"][i].nrmse]
    archetypes = sorted({t.series.archetype for t in tasks.values()})
    out: dict[str, Any] = {
        "preset": args.preset,
        "overrides": overrides,
        "horizon_steps": plan.forecast.horizon,
        "forecast": plan.forecast.to_dict(),
        "evaluated_sites": len(indices),
        "unlike_sites": [tasks[i].series.site_id for i in unlike],
        "methods": {},
        "seconds": {m: round(s, 1) for m, s in seconds.items()},
    }
    for m, by_site in scores.items():
        entry = {"all": _figures(list(by_site.values()))}
        if unlike:
            entry["unlike"] = _figures([by_site[i] for i in unlike])
        for a in archetypes:
            entry[a] = _figures([s for s in by_site.values() if s.archetype == a])
        entry["site_nrmse"] = {
            tasks[i].series.site_id: round(s.nrmse, 5) for i, s in by_site.items()
        }
        out["methods"][m] = entry
    path = write_result(f"personal_{tag}", out)
    for m, e in out["methods"].items():
        print(m, e["all"], e.get("unlike"))
    print(path)


if __name__ == "__main__":
    main()
