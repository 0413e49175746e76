"""The server side of a federated run: one Flower strategy driven over the Grid.

Used by the deployment ServerApp (``fedge.federation.server_app``) and by ``fedge simulate``,
so both run exactly the same rounds.

No round waits forever: each waits at most ``round-timeout`` for ``min-nodes`` nodes to
be there (bound to enrolled sites, in a sealed run) and again for as many of them to
answer its train and its evaluate messages; short of that the run fails with
:class:`FederationError`, saying how many came (the ServerApp reports it to the
coordinator, the run ends ``failed``). Flower's own sampling would wait for nodes forever.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log as flwr_log
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
from fedge.federation._codec import CodecSchedule, downlink_spec
from fedge.federation._errors import FederationError
from fedge.federation._exchange import exchange
from fedge.federation._introduce import BoundGrid
from fedge.federation._keys import ServerKeys
from fedge.federation._plan import FederationPlan
from fedge.federation._regional import Hierarchy, RegionalStrategy, tiers
from fedge.models import LoadForecaster, Weights, get_weights

log = logging.getLogger(__name__)


@dataclass
class RoundRecord:
    round: int
    train_loss: float | None
    eval_rmse: float | None
    val_loss: float | None = None  # the training objective on the sites' validation days
    participants: int | None = None  # updates accepted into the aggregate
    sampled: int | None = None  # nodes asked to train
    rejected: int | None = None  # updates refused (sealed) or not answered (plain)
    seconds: float | None = None  # the round's wall time: sampling, hellos, train, evaluate


@dataclass
class FederationOutcome:
    """``weights`` are the global model of ``best_round``: the round whose aggregated
    validation loss (sites' evaluate replies, validation days only) was lowest; a run
    whose sites reported none keeps its last round."""

    weights: Weights
    rounds: list[RoundRecord] = field(default_factory=list)
    comm: dict[str, Any] | None = None  # bytes and rejections of a sealed run (Ledger.summary)
    best_round: int | None = None


def initial_weights(plan: FederationPlan) -> Weights:
    torch.manual_seed(plan.seed)
    return get_weights(LoadForecaster(plan.forecast))


def run_rounds(
    grid: Grid,
    plan: FederationPlan,
    on_round: Callable[[int], None] | None = None,
    wrap: Callable[[Strategy], Strategy] | None = None,
    keys: ServerKeys | None = None,
    seal: Callable[[Strategy], Strategy] | None = None,
    hierarchy: Hierarchy | None = None,
) -> FederationOutcome:
    """``wrap`` (the coordinator's round reporter) sees the strategy as the Grid does.

    A sealed run (``plan.codec != "none"``) needs ``keys``: the server's identity and the
    enrolled sites. ``seal`` lets the simulation wrap the sealed strategy (its attackers
    act on the wire, between the sealed strategy and the Grid). A run with
    ``plan.regions`` needs ``hierarchy``: the regions' assignment and identities
    (docs/hierarchy.md; only the simulation builds one so far).
    """
    random.seed(plan.seed)  # Flower samples sites with the stdlib RNG
    sealed = plan.codec != "none"
    kwargs: dict[str, Any] = {
        # A sealed run's introducer samples each round (so it says hello only to the
        # sampled nodes); the strategy then takes every node of that sample.
        "fraction_train": 1.0 if sealed else plan.fraction_train,
        "fraction_evaluate": 1.0 if sealed else plan.fraction_evaluate,
        "min_train_nodes": plan.min_nodes,
        "min_evaluate_nodes": plan.min_nodes,
        "min_available_nodes": plan.min_nodes,
    }
    strategy = build_strategy(plan, kwargs)
    regional: RegionalStrategy | None = None
    if plan.regions:
        if hierarchy is None or hierarchy.regions.regions != plan.regions:
            raise FederationError(
                f"a run with {plan.regions} regions needs their assignment and identities "
                "(the regional tier runs in the simulation only so far: docs/hierarchy.md)"
            )
        regional = RegionalStrategy(
            strategy,
            hierarchy,
            CodecSchedule.parse(plan.region_codec or plan.codec),
            downlink_spec(plan.downlink_codec),
        )
        strategy = regional
    ledger = None
    introducer = None
    bound: BoundGrid | None = None
    view: Grid = grid
    if sealed:
        if keys is None:
            raise FederationError("a sealed run needs the server's keys and the enrolled sites")
        from fedge.federation._compressed import seal_strategy

        strategy, ledger, introducer = seal_strategy(grid, plan, strategy, keys)
        if regional is not None:
            regional.site_of = introducer.channel.site_id
        if seal is not None:
            strategy = seal(strategy)
        view = bound = BoundGrid(grid, introducer.channel)
        introducer.timeout = min(introducer.timeout, plan.round_timeout)
        introducer.wait_for_nodes(patience_s=min(60.0, plan.round_timeout))
    if wrap is not None:
        strategy = wrap(strategy)

    def before(server_round: int, fraction: float) -> None:  # Grid I/O between the hooks
        """Sample (and introduce) the round's nodes until ``min-nodes`` are there, for up to
        ``round-timeout``."""
        deadline = time.monotonic() + plan.round_timeout
        while True:
            if introducer is not None and bound is not None:
                bound.selected = introducer.sample(server_round, fraction, plan.min_nodes, deadline)
            count = len(list(view.get_node_ids()))
            if count >= plan.min_nodes:
                return
            if time.monotonic() >= deadline:
                there = "proved an enrolled site" if introducer is not None else "connected"
                raise FederationError(
                    f"round {server_round}: {count} of the {plan.min_nodes} nodes it needs "
                    f"(min-nodes) {there} within round-timeout {plan.round_timeout:g} s"
                )
            time.sleep(0.5)

    seconds: dict[int, float] = {}
    tally: dict[int, tuple[int, int]] = {}
    arrays, history, best_round = _loop(
        strategy,
        view,
        ArrayRecord.from_numpy_ndarrays(initial_weights(plan)),
        plan.num_rounds,
        (ConfigRecord(plan.to_config()), ConfigRecord(plan.to_config())),
        lambda r, train: before(r, plan.fraction_train if train else plan.fraction_evaluate),
        on_round,
        timeout=plan.round_timeout,
        min_replies=plan.min_nodes,
        seconds=seconds,
        tally=tally,
    )
    rounds = []
    for r in range(1, plan.num_rounds + 1):
        train, ev = history.get(r, (None, None))
        if ledger is not None:
            counts = ledger.round_counts(r)
        else:  # plain: every reply without an error is aggregated
            asked, answered = tally.get(r, (0, 0))
            counts = {"sampled": asked, "accepted": answered, "rejected": asked - answered}
        rounds.append(
            RoundRecord(
                round=r,
                train_loss=_number(train, "train_loss"),
                eval_rmse=_eval_rmse(ev),
                val_loss=_number(ev, "val_loss"),
                participants=counts.get("accepted"),
                sampled=counts.get("sampled"),
                rejected=counts.get("rejected"),
                seconds=round(seconds[r], 2) if r in seconds else None,
            )
        )
    weights = [np.asarray(a, dtype=np.float32) for a in arrays.to_numpy_ndarrays()]
    comm = ledger.summary() if ledger is not None else None
    if ledger is not None and comm is not None and regional is not None:
        comm["hierarchy"] = tiers(ledger, regional)
    return FederationOutcome(weights=weights, rounds=rounds, comm=comm, best_round=best_round)


_Metrics = tuple[MetricRecord | None, MetricRecord | None]


def _loop(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    num_rounds: int,
    configs: tuple[ConfigRecord, ConfigRecord],
    before: Callable[[int, bool], None],
    on_round: Callable[[int], None] | None,
    timeout: float = 3600.0,
    min_replies: int = 1,
    seconds: dict[int, float] | None = None,
    tally: dict[int, tuple[int, int]] | None = None,
) -> tuple[ArrayRecord, dict[int, _Metrics], int]:
    """Flower's ``Strategy.start`` round loop, with ``before(round, train)`` (sampling and
    node introductions) run as Grid I/O ahead of each round's train and evaluate messages,
    and a round that gets fewer than ``min_replies`` answers within ``timeout`` failed.

    Returns the global model of the round with the lowest aggregated validation loss (the
    last round when no site reported one) and that round's number: training loss keeps
    falling while the model starts to fit the sites' training days only."""
    train_config, eval_config = configs
    strategy.summary()
    history: dict[int, _Metrics] = {}
    best: tuple[float, int, ArrayRecord] | None = None
    for server_round in range(1, num_rounds + 1):
        flwr_log(logging.INFO, "[ROUND %s/%s]", server_round, num_rounds)
        started = time.perf_counter()
        before(server_round, True)
        asked = list(strategy.configure_train(server_round, arrays, train_config, grid))
        replies = _answered(
            exchange(grid, asked, timeout), server_round, "train", min_replies, timeout
        )
        if tally is not None:  # what a plain run reports: sent, and answered without error
            tally[server_round] = (len(asked), sum(1 for m in replies if not m.has_error()))
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = new_arrays
        before(server_round, False)
        replies = _answered(
            exchange(
                grid, strategy.configure_evaluate(server_round, arrays, eval_config, grid), timeout
            ),
            server_round, "evaluate", min_replies, timeout,
        )  # fmt: skip
        eval_metrics = strategy.aggregate_evaluate(server_round, replies)
        history[server_round] = (train_metrics, eval_metrics)
        if seconds is not None:
            seconds[server_round] = time.perf_counter() - started
        score = _validation_score(eval_metrics)
        if score is not None and (best is None or score < best[0]):
            best = (score, server_round, _copy(arrays))
        if on_round is not None:
            on_round(server_round)
    if best is None:
        return arrays, history, num_rounds
    return best[2], history, best[1]


def _copy(arrays: ArrayRecord) -> ArrayRecord:
    """A snapshot of the global model, safe from a strategy that updates it in place."""
    return ArrayRecord.from_numpy_ndarrays([np.array(a) for a in arrays.to_numpy_ndarrays()])


def _validation_score(metrics: MetricRecord | None) -> float | None:
    """The round's aggregated validation loss, else its validation RMSE; None if neither
    is a finite number (a round whose sites did not evaluate cannot be chosen)."""
    for value in (_number(metrics, "val_loss"), _eval_rmse(metrics)):
        if value is not None and np.isfinite(value):
            return value
    return None


def _answered(
    replies: Iterable[Message], server_round: int, kind: str, needed: int, timeout: float
) -> list[Message]:
    """The round's replies, when at least ``needed`` nodes answered without an error."""
    got = list(replies)
    answered = sum(1 for m in got if not m.has_error())
    if answered < needed:
        raise FederationError(
            f"round {server_round}: {answered} of the {needed} nodes it needs (min-nodes) "
            f"answered its {kind} messages within round-timeout {timeout:g} s"
        )
    return got


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
