"""Flower's simulation runtime at fleet scale (``fedge.simulation._vce``): a real run over
many registered virtual sites builds run contexts only for the nodes that got a message,
every sampled node is answered, and Flower's runtime is itself again afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.server.superlink.fleet.vce import vce_api
from flwr.supercore.run import Run

from fedge.federation import FederationPlan
from fedge.models import ForecastSpec
from fedge.simulation import _vce
from fedge.simulation._client_app import app as client_app
from fedge.simulation._errors import SimulationError
from fedge.simulation._federated import _all_registered, run_federated
from tests.support.grid import LocalGrid

REGISTERED = 600
TRAIN, EVALUATE = 4, 2


def test_contexts_are_built_on_first_lookup_and_only_for_the_run_s_nodes() -> None:
    stores = _vce.LazyRunInfoStores({11: 0, 12: 1, 13: 2}, Run.create_empty(run_id=5), None)
    assert len(stores) == 0
    context = stores[12].retrieve_context(run_id=5)
    assert context.node_config == {"partition-id": 1, "num-partitions": 3}
    assert stores[12] is stores[12] and len(stores) == 1
    with pytest.raises(KeyError):
        stores[99]  # not a node of this run
    assert len(stores) == 1


def test_a_run_over_many_registered_sites_holds_contexts_only_for_the_sampled(
    tmp_path: Path,
) -> None:
    original = (vce_api.add_messages_to_queue, vce_api._register_node_info_stores)
    spec = {"kind": "generator", "num_sites": REGISTERED, "days": 6, "seed": 0}
    plan = FederationPlan(
        data_spec=json.dumps(spec, sort_keys=True), num_rounds=2, local_epochs=0.05,
        val_days=1, test_days=1, forecast=ForecastSpec(lookback=12, horizon=3, hidden=(8, 4)),
        fraction_train=TRAIN / REGISTERED, fraction_evaluate=EVALUATE / REGISTERED,
        state_dir=str(tmp_path),
    )  # fmt: skip
    done = run_federated(plan, REGISTERED, workers=2)
    rounds = done.outcome.rounds
    # every site registered before the first sample (4 of 600, not of however many were up)
    assert [r.sampled for r in rounds] == [TRAIN, TRAIN]
    assert [r.participants for r in rounds] == [TRAIN, TRAIN]  # every sampled node answered
    assert all(r.eval_rmse is not None for r in rounds)
    (stores,) = _vce._MADE
    # a context per node that was sent a message (train and evaluate samples), no more
    assert TRAIN <= len(stores) <= 2 * (TRAIN + EVALUATE) < REGISTERED
    assert (vce_api.add_messages_to_queue, vce_api._register_node_info_stores) == original


def test_a_run_whose_sites_do_not_all_register_fails_clearly() -> None:
    grid = LocalGrid(client_app)
    grid.add_node(7, {"partition-id": 0, "num-partitions": 3})
    with pytest.raises(SimulationError, match="1 of the 3 simulated sites registered"):
        _all_registered(grid, 3, patience_s=0.3)
    _all_registered(grid, 1, patience_s=0.3)  # all there: no wait
