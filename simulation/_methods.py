"""Training the non-federated reference methods with the federated runs' compute budget.

``local`` gives each site exactly what a federated site gets: per round, ``local_epochs``
passes over its own windows with a fresh optimiser and the same learning-rate schedule;
``centralized`` makes as many passes over the pooled windows, so both see as many
gradient samples as FedAvg with full participation.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch
from numpy.typing import NDArray

from fedge.federation import FederationPlan
from fedge.models import LoadForecaster, Weights, get_weights, predict, train_epochs
from fedge.simulation._site_task import site_task

Tick = Callable[[], None] | None


def _passes(
    model: LoadForecaster,
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    plan: FederationPlan,
    seed: int,
    on_round: Tick = None,
) -> None:
    for r in range(plan.num_rounds):
        # One optimiser per round, as a federated site gets: Adam state does not carry over.
        train_epochs(
            model,
            x,
            y,
            epochs=plan.local_epochs,
            batch_size=plan.batch_size,
            learning_rate=plan.learning_rate_at(r + 1),
            seed=seed * 1_000_003 + r,
        )
        if on_round is not None:
            on_round()


def _train_local_site(args: tuple[FederationPlan, int]) -> tuple[int, NDArray[np.float32]]:
    plan, index = args
    torch.set_num_threads(1)
    torch.manual_seed(plan.seed)
    task = site_task(plan.data_spec, index, plan.forecast, plan.val_days, plan.test_days)
    model = LoadForecaster(plan.forecast)
    _passes(model, task.prepared.x_train, task.prepared.y_train, plan, plan.seed + index)
    return index, predict(model, task.prepared.x_test)


def train_local(
    plan: FederationPlan, sites: list[int], workers: int, on_site: Tick = None
) -> dict[int, NDArray[np.float32]]:
    """Each site alone; returns scaled test forecasts per site index."""
    out: dict[int, NDArray[np.float32]] = {}
    if workers == 1:
        for i in sites:
            out[i] = _train_local_site((plan, i))[1]
            if on_site is not None:
                on_site()
        return out
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for fut in as_completed([pool.submit(_train_local_site, (plan, i)) for i in sites]):
            index, forecast = fut.result()
            out[index] = forecast
            if on_site is not None:
                on_site()
    return out


def train_centralized(
    plan: FederationPlan, num_sites: int, workers: int, on_round: Tick = None
) -> Weights:
    """One model on every site's training windows pooled (each scaled by its own site)."""
    torch.set_num_threads(workers)
    torch.manual_seed(plan.seed)
    xs, ys = [], []
    for i in range(num_sites):
        p = site_task(plan.data_spec, i, plan.forecast, plan.val_days, plan.test_days).prepared
        xs.append(p.x_train)
        ys.append(p.y_train)
    model = LoadForecaster(plan.forecast)
    _passes(model, np.concatenate(xs), np.concatenate(ys), plan, plan.seed, on_round)
    return get_weights(model)
