"""``python -m bench.forecaster_choice``: forecaster variants compared on validation days.

An in-process emulation of FedAvg (every site trains one local epoch per round from the
global weights with the harness's seeds, batch size and cosine schedule; the server
averages weighted by windows) over a preset's first sites, for each variant of the
forecast spec. After every round the global model is scored on the sites' validation
days, never their test days: range-normalised RMSE and asymmetric cost (under-forecasts
x5, the report's) at 5, 15, 30 and 60 minutes, and the validation loss. Persistence on
the same days is the bar. ``fedge simulate``'s defaults (``SimulationConfig``) were chosen
from these figures (docs/simulation.md, "Choosing the forecaster").

    python -m bench.forecaster_choice --preset demo --sites 6 --rounds 5 \
        --variant 'base={"lookback": 12, "hidden": [128, 64], "beta_under": 5.0}'
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from bench._common import write_result
from fedge.core import TARGET_INDEX
from fedge.federation._plan import cosine_lr
from fedge.models import (
    ForecastSpec,
    LoadForecaster,
    evaluate_loss,
    get_weights,
    predict,
    set_weights,
    train_epochs,
)
from fedge.simulation._baselines import actuals, persistence
from fedge.simulation._config import preset
from fedge.simulation._site_task import SiteTask, site_task
from fedge.simulation._source import GeneratedSites

MINUTES = (5, 15, 30, 60)


def _scores(
    tasks: list[SiteTask], forecast: list[np.ndarray[Any, Any]], step: int
) -> dict[str, dict[str, float]]:
    out = {}
    for minutes in MINUTES:
        k = minutes // step
        sq, cost = [], []
        for t, fc in zip(tasks, forecast, strict=True):
            p = t.prepared
            act = actuals(t.series.values, p.val_ends, fc.shape[1], TARGET_INDEX)
            e = (fc[:, k - 1] - act[:, k - 1]) / p.scaler.range[list(TARGET_INDEX)]
            sq.append(e**2)
            cost.append(np.where(e < 0, 5.0, 1.0) * e**2)
        rmse = float(np.mean(np.sqrt(np.concatenate(sq).mean(axis=0))))
        out[str(minutes)] = {"rmse": rmse, "asymmetric_cost": float(np.concatenate(cost).mean())}
    return out


def emulate(
    tasks: list[SiteTask], spec: ForecastSpec, rounds: int, lr: float, batch: int, step: int
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = LoadForecaster(spec)
    glob = get_weights(model)
    history = []
    for r in range(1, rounds + 1):
        ws, ns, total = [], [], 0.0
        for i, t in enumerate(tasks):
            p = t.prepared
            set_weights(model, glob)
            loss = train_epochs(
                model,
                p.x_train,
                p.y_train,
                epochs=1.0,
                batch_size=batch,
                learning_rate=cosine_lr(lr, r - 1, rounds),
                seed=r * 7919 + i,
            )
            total += loss * len(p.x_train)
            ws.append(get_weights(model))
            ns.append(len(p.x_train))
        share = np.asarray(ns, dtype=np.float64) / sum(ns)
        glob = [
            np.tensordot(share, np.stack([w[j] for w in ws]), axes=1).astype(np.float32)
            for j in range(len(glob))
        ]
        set_weights(model, glob)
        fcs = [
            t.prepared.scaler.inverse(predict(model, t.prepared.x_val), TARGET_INDEX) for t in tasks
        ]
        val = sum(
            evaluate_loss(model, t.prepared.x_val, t.prepared.y_val) * len(t.prepared.x_val)
            for t in tasks
        )
        history.append(
            {
                "round": r,
                "train_loss": total / sum(ns),
                "val_loss": val / sum(len(t.prepared.x_val) for t in tasks),
                "by_horizon": _scores(tasks, fcs, step),
            }
        )
        print(spec.lookback, spec.hidden, spec.beta_under, history[-1], flush=True)
    return history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--sites", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[], help="name=JSON spec fields")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = preset(args.preset)
    gen = replace(cfg.generator, num_sites=args.sites)
    data_spec = json.dumps(GeneratedSites(gen).spec(), sort_keys=True)
    step = gen.step_minutes
    horizon = cfg.horizon_steps(step)
    variants = dict(v.split("=", 1) for v in args.variant) or {"default": "{}"}
    results: dict[str, Any] = {}
    tasks: list[SiteTask] = []
    for name, text in variants.items():
        fields = {
            "lookback": cfg.lookback,
            "hidden": list(cfg.hidden),
            "beta_under": cfg.beta_under,
        }
        fields.update(json.loads(text))
        spec = ForecastSpec.from_dict({**fields, "horizon": horizon})
        tasks = [
            site_task(data_spec, i, spec, cfg.val_days, cfg.test_days) for i in range(args.sites)
        ]
        t0 = time.perf_counter()
        history = emulate(tasks, spec, args.rounds, cfg.learning_rate, cfg.batch_size, step)
        results[name] = {
            "spec": spec.to_dict(),
            "rounds": history,
            "seconds": time.perf_counter() - t0,
        }
    pers = [
        persistence(t.series.values, t.prepared.val_ends, horizon, TARGET_INDEX).astype(np.float64)
        for t in tasks
    ]
    figures = {
        "preset": args.preset,
        "sites": args.sites,
        "rounds": args.rounds,
        "split": "validation days",
        "persistence": _scores(tasks, pers, step),
        "variants": results,
    }
    print(write_result(f"forecaster_choice_{args.preset}", figures))


if __name__ == "__main__":
    main()
