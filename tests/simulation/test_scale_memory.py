"""Memory follows the sites sampled, not the sites registered: a sealed run over 2,000
registered simulated sites, 8 sampled a round, counted object by object (no timings).

The run is fedge's own: the simulation's ClientApp on every node of an in-process Grid
(each message through Flower's protobuf), the server's round loop with the simulated key
directory, int8 deltas with tracked error feedback."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.serverapp.strategy import Strategy

from fedge.federation import FederationPlan, run_rounds
from fedge.federation._estimates import EstimateStore
from fedge.federation._keys import ServerKeys
from fedge.federation._sealed_strategy import SealedStrategy
from fedge.models import ForecastSpec
from fedge.security import SitePublicKeys, UnknownSender
from fedge.simulation._client_app import HARNESS_ENV, Harness
from fedge.simulation._client_app import app as client_app
from fedge.simulation._identities import (
    SimulatedRegistry,
    simulated_directory,
    simulated_identity,
    site_name,
)
from fedge.simulation._site_task import _site_task
from tests.support.grid import LocalGrid

REGISTERED = 2000
ROUNDS = 2
SAMPLED = 8  # per round: fraction 0.004 of 2,000


def _alive(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


def test_a_run_over_many_registered_sites_holds_only_the_sampled_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = 7
    monkeypatch.setenv(HARNESS_ENV, Harness(seed, 0, str(tmp_path / "state")).to_json())
    keys_before = _alive(SitePublicKeys)
    directory = simulated_directory(seed, REGISTERED)
    registry = directory.registry
    assert isinstance(registry, SimulatedRegistry)
    # enrolling every site held no site's keys
    assert _alive(SitePublicKeys) - keys_before == 0
    keys = ServerKeys(simulated_identity(seed, "server"), directory)

    grid = LocalGrid(client_app)
    for node in range(REGISTERED):
        grid.add_node(10_000 + node, {"partition-id": node, "num-partitions": REGISTERED})
    spec = {"kind": "generator", "num_sites": REGISTERED, "days": 6, "seed": 0}
    plan = FederationPlan(
        data_spec=json.dumps(spec, sort_keys=True), num_rounds=ROUNDS, local_epochs=0.05,
        codec="int8", val_days=1, test_days=1,
        forecast=ForecastSpec(lookback=12, horizon=3, hidden=(8, 4)),
        fraction_train=SAMPLED / REGISTERED, fraction_evaluate=SAMPLED / REGISTERED,
    )  # fmt: skip
    strategies: list[Strategy] = []

    def keep(strategy: Strategy) -> Strategy:
        strategies.append(strategy)
        return strategy

    _site_task.cache_clear()
    outcome = run_rounds(grid, plan, keys=keys, seal=keep)

    assert outcome.comm is not None
    sampled = [r.sampled for r in outcome.rounds]
    assert sampled == [SAMPLED] * ROUNDS
    assert [r.participants for r in outcome.rounds] == sampled  # every honest update in
    bound = outcome.comm["security"]["nodes_bound"]
    at_most = 2 * SAMPLED * ROUNDS  # train and evaluate samples of every round
    assert SAMPLED <= bound <= at_most
    # The server derived keys only for the sites that said hello, and holds no more.
    assert registry.derived == bound
    assert registry.cached_records() <= bound
    # Key objects in this process, both ends (the sites' identities and their copies of the
    # server's keys, the server's cache and parsed keys): a few per bound site, never per
    # registered one.
    assert _alive(SitePublicKeys) - keys_before <= 4 * bound + 4 < REGISTERED
    # Only sampled sites were generated and prepared (in this process: the workers).
    assert _site_task.cache_info().misses <= at_most
    # The strategy's error-feedback estimates: one per node that trained, at most.
    (sealed,) = strategies
    assert isinstance(sealed, SealedStrategy)
    estimates = sealed._estimates
    assert isinstance(estimates, EstimateStore)
    assert 0 < len(estimates) <= SAMPLED * ROUNDS
    assert estimates.in_memory() <= estimates.capacity


def test_the_simulated_directory_finds_a_site_by_its_id_and_refuses_others() -> None:
    directory = simulated_directory(3, 50)
    site = simulated_identity(3, site_name(41)).public_keys()
    assert directory.keys(site.site_id).to_bytes() == site.to_bytes()
    assert directory.keys(site.site_id).to_bytes() == site.to_bytes()  # from the cache
    registry = directory.registry
    assert isinstance(registry, SimulatedRegistry) and registry.derived == 1
    with pytest.raises(UnknownSender):
        directory.keys(simulated_identity(3, site_name(50)).site_id)  # not registered
    with pytest.raises(UnknownSender):
        directory.keys(b"\x00" * 16)
    directory.revoke(site.site_id)  # a revocation is kept like any registry's
    with pytest.raises(Exception, match="revoked"):
        directory.keys(site.site_id)


def test_the_simulated_registry_keeps_at_most_its_cache() -> None:
    registry = SimulatedRegistry(5, 30, cache=4)
    for i in range(12):
        assert registry.get_site(simulated_identity(5, site_name(i)).site_id) is not None
    assert registry.cached_records() == 4 and registry.derived == 12


def test_estimates_spill_to_disk_and_come_back_exact() -> None:
    store = EstimateStore(capacity=2)
    rng = np.random.default_rng(0)
    held = {n: (n + 1, [rng.standard_normal((3, 4)).astype(np.float32)]) for n in range(6)}
    for node, value in held.items():
        store.put(node, value)
    assert store.in_memory() == 2 and len(store) == 6
    assert store.count(0) == 1  # known without reading it back
    for node, (count, arrays) in held.items():
        got = store.get(node)
        assert got is not None and got[0] == count
        np.testing.assert_array_equal(got[1][0], arrays[0])
        assert store.in_memory() <= 2
    store.pop(3)
    assert store.get(3) is None and store.count(3) is None and len(store) == 5


def test_an_estimate_store_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="capacity"):
        EstimateStore(capacity=0)
