"""The server side of a federated run: one Flower strategy driven over the Grid.

Used by the deployment ServerApp (``fedge.federation.server_app``) and by ``fedge simulate``,
so both run exactly the same rounds.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from fedge.core import TARGET_KPIS
from fedge.federation._plan import FederationPlan
from fedge.models import LoadForecaster, Weights, get_weights

log = logging.getLogger(__name__)


@dataclass
class RoundRecord:
    round: int
    train_loss: float | None
    eval_rmse: float | None
    participants: int | None = None


@dataclass
class FederationOutcome:
    weights: Weights
    rounds: list[RoundRecord] = field(default_factory=list)
    comm: dict[str, Any] | None = None  # bytes and rejections of a sealed run (Ledger.summary)


def initial_weights(plan: FederationPlan) -> Weights:
    torch.manual_seed(plan.seed)
    return get_weights(LoadForecaster(plan.forecast))


def run_rounds(
    grid: Grid,
    plan: FederationPlan,
    on_round: Callable[[int], None] | None = None,
    wrap: Callable[[Strategy], Strategy] | None = None,
) -> FederationOutcome:
    """``wrap`` (the coordinator's round reporter) sees the strategy as the Grid does."""
    random.seed(plan.seed)  # Flower samples sites with the stdlib RNG
    kwargs: dict[str, Any] = {
        "fraction_train": plan.fraction_train,
        "fraction_evaluate": plan.fraction_evaluate,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": 1,
    }
    strategy = build_strategy(plan, kwargs)
    ledger = None
    if plan.codec != "none":
        from fedge.federation._compressed import seal_strategy

        strategy, ledger = seal_strategy(grid, plan, strategy)
    if wrap is not None:
        strategy = wrap(strategy)
    config = ConfigRecord(plan.to_config())

    def round_done(server_round: int, _arrays: ArrayRecord) -> MetricRecord | None:
        if on_round is not None and server_round > 0:
            on_round(server_round)
        return None

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord.from_numpy_ndarrays(initial_weights(plan)),
        num_rounds=plan.num_rounds,
        train_config=config,
        evaluate_config=ConfigRecord(plan.to_config()),
        evaluate_fn=round_done,
    )
    rounds = []
    for r in range(1, plan.num_rounds + 1):
        train = result.train_metrics_clientapp.get(r)
        ev = result.evaluate_metrics_clientapp.get(r)
        rounds.append(
            RoundRecord(
                round=r,
                train_loss=_number(train, "train_loss"),
                eval_rmse=_eval_rmse(ev),
            )
        )
    weights = [np.asarray(a, dtype=np.float32) for a in result.arrays.to_numpy_ndarrays()]
    comm = ledger.summary() if ledger is not None else None
    return FederationOutcome(weights=weights, rounds=rounds, comm=comm)


def build_strategy(plan: FederationPlan, kwargs: dict[str, Any]) -> Strategy:
    """One of :data:`STRATEGIES` from Flower's own implementations."""
    if plan.strategy == "fedprox":
        return FedProx(proximal_mu=plan.proximal_mu, **kwargs)
    if plan.strategy == "fedtrimmedavg":
        return FedTrimmedAvg(beta=plan.trim_beta, **kwargs)
    if plan.strategy == "fedmedian":
        return FedMedian(**kwargs)
    if plan.strategy == "krum":
        return Krum(num_malicious_nodes=plan.krum_malicious, **kwargs)
    if plan.strategy == "fedavgm":  # server momentum: carries sparse updates across rounds
        return FedAvgM(server_momentum=plan.server_momentum, **kwargs)
    return FedAvg(**kwargs)


def _number(metrics: MetricRecord | None, key: str) -> float | None:
    value = metrics.get(key) if metrics else None
    return float(value) if isinstance(value, int | float) else None


def _eval_rmse(metrics: MetricRecord | None) -> float | None:
    """Range-normalised validation RMSE pooled over sites, averaged over target KPIs."""
    if not metrics:
        return None
    values = [_number(metrics, f"val_nmse_{k}") for k in TARGET_KPIS]
    if any(v is None for v in values):
        return None
    return float(np.mean([np.sqrt(v) for v in values if v is not None]))
