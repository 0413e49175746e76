"""Training the non-federated reference methods, each keeping its best validated model.

``local`` gives each site what a federated site gets: per round, ``local_epochs`` passes
over its own windows with a fresh optimiser and the same learning-rate schedule; after
each round the model is scored on the site's own validation days and the best round is
the one kept (a site's model can overfit its dozen days). ``centralized`` is the upper
reference: one model on every site's windows pooled, trained to convergence (epochs until
the pooled validation loss stops improving for ``patience`` epochs, the learning rate
halved at each epoch that does not improve, at most ``max_epochs``), the best epoch kept.
Only validation days choose; test days are never looked at here.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from fedge.federation import FederationPlan
from fedge.models import (
    LoadForecaster,
    Weights,
    evaluate_loss,
    get_weights,
    predict,
    set_weights,
    train_epochs,
)
from fedge.simulation._errors import SimulationError
from fedge.simulation._site_task import site_task

Tick = Callable[[], None] | None
#: One row per round (epoch): ``round``, ``train_loss``, ``val_loss``.
LossRow = dict[str, float | int | None]

# The centralized reference's budget (docs/simulation.md, "Methods").
CENTRAL_MAX_EPOCHS = 30
CENTRAL_PATIENCE = 3


@dataclass
class LocalModel:
    forecast: NDArray[np.float32]  # scaled test forecasts of the best round
    best_round: int
    history: list[LossRow] = field(default_factory=list)


@dataclass
class CentralModel:
    weights: Weights
    best_epoch: int
    history: list[LossRow] = field(default_factory=list)


def _rounds(
    model: LoadForecaster,
    data: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]],
    plan: FederationPlan,
    seed: int,
    on_round: Tick = None,
) -> tuple[int, list[LossRow]]:
    """A federated site's rounds on its own; leaves ``model`` at its best validated round."""
    x, y, x_val, y_val = data
    best, best_loss, best_weights = 0, np.inf, get_weights(model)
    history: list[LossRow] = []
    for r in range(plan.num_rounds):
        # One optimiser per round, as a federated site gets: Adam state does not carry over.
        train_loss = train_epochs(
            model,
            x,
            y,
            epochs=plan.local_epochs,
            batch_size=plan.batch_size,
            learning_rate=plan.learning_rate_at(r + 1),
            seed=seed * 1_000_003 + r,
        )
        val_loss = evaluate_loss(model, x_val, y_val)
        history.append({"round": r + 1, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best_loss:
            best, best_loss, best_weights = r + 1, val_loss, get_weights(model)
        if on_round is not None:
            on_round()
    set_weights(model, best_weights)
    return best, history


def _train_local_site(args: tuple[FederationPlan, int]) -> tuple[int, LocalModel]:
    plan, index = args
    torch.set_num_threads(1)
    torch.manual_seed(plan.seed)
    p = site_task(plan.data_spec, index, plan.forecast, plan.val_days, plan.test_days).prepared
    model = LoadForecaster(plan.forecast)
    data = (p.x_train, p.y_train, p.x_val, p.y_val)
    best, history = _rounds(model, data, plan, plan.seed + index)
    return index, LocalModel(predict(model, p.x_test), best, history)


def train_local(
    plan: FederationPlan, sites: list[int], workers: int, on_site: Tick = None
) -> dict[int, LocalModel]:
    """Each site alone, its best round on its own validation days; per site index."""
    out: dict[int, LocalModel] = {}
    if workers == 1:
        for i in sites:
            out[i] = _train_local_site((plan, i))[1]
            if on_site is not None:
                on_site()
        return out
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for fut in as_completed([pool.submit(_train_local_site, (plan, i)) for i in sites]):
            index, trained = fut.result()
            out[index] = trained
            if on_site is not None:
                on_site()
    return out


def train_centralized(
    plan: FederationPlan,
    num_sites: int,
    workers: int,
    on_epoch: Tick = None,
    *,
    max_epochs: int = CENTRAL_MAX_EPOCHS,
    patience: int = CENTRAL_PATIENCE,
) -> CentralModel:
    """One model on every site's training windows pooled (each scaled by its own site),
    trained until the pooled validation loss stops improving."""
    if max_epochs < 1 or patience < 1:
        raise SimulationError(f"need max_epochs and patience >= 1, got {max_epochs}, {patience}")
    torch.set_num_threads(workers)
    torch.manual_seed(plan.seed)
    parts = [
        site_task(plan.data_spec, i, plan.forecast, plan.val_days, plan.test_days).prepared
        for i in range(num_sites)
    ]
    x, y = np.concatenate([p.x_train for p in parts]), np.concatenate([p.y_train for p in parts])
    x_val = np.concatenate([p.x_val for p in parts])
    y_val = np.concatenate([p.y_val for p in parts])
    del parts
    model = LoadForecaster(plan.forecast)
    lr = plan.learning_rate
    best, best_loss, best_weights, stale = 0, np.inf, get_weights(model), 0
    history: list[LossRow] = []
    for epoch in range(1, max_epochs + 1):
        train_loss = train_epochs(
            model,
            x,
            y,
            epochs=1.0,
            batch_size=plan.batch_size,
            learning_rate=lr,
            seed=plan.seed * 1_000_003 + epoch,
        )
        val_loss = evaluate_loss(model, x_val, y_val)
        history.append({"round": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if on_epoch is not None:
            on_epoch()
        if val_loss < best_loss:
            best, best_loss, best_weights, stale = epoch, val_loss, get_weights(model), 0
        else:
            stale += 1
            lr *= 0.5
            if stale >= patience:
                break
    return CentralModel(best_weights, best, history)
