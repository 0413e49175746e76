"""Regional aggregators: ``--regions`` refused when it cannot work; a regional run on the
real site app (in-process Grid, every message through Flower's protobuf) sends exactly K
sealed regional updates a round, counted from the messages themselves; with lossless
codecs and one region it is flat FedAvg."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedge.federation import (
    FederationError,
    FederationOutcome,
    FederationPlan,
    RegionMap,
    ServerKeys,
    run_rounds,
)
from fedge.simulation._client_app import HARNESS_ENV, Harness
from fedge.simulation._client_app import app as client_app
from fedge.simulation._config import SimulationConfig, preset
from fedge.simulation._errors import SimulationError
from fedge.simulation._federated import hierarchy
from fedge.simulation._identities import simulated_directory, simulated_identity
from fedge.simulation._run import make_plan, open_source
from tests.support.grid import LocalGrid

SITES = 4


def _smoke(**changes: object) -> SimulationConfig:
    base = preset("smoke")
    gen = replace(base.generator, num_sites=SITES)
    return replace(base, generator=gen, **{"methods": ("fedavg",), **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"regions": 0, "codec": "int8"}, "--regions must be >= 1"),
        ({"regions": -3, "codec": "int8"}, "--regions must be >= 1"),
        ({"regions": SITES + 1, "codec": "int8"}, "more than the 4 sites"),
        ({"regions": 2}, "give --codec"),
        ({"regions": 2, "codec": "int8", "region_codec": "int9"}, "--region-codec"),
        ({"region_codec": "int8", "codec": "int8"}, "applies to a run with --regions"),
        ({"regions": True, "codec": "int8"}, "whole number"),
        ({"regions": 2, "codec": "int8", "methods": ("persistence",)}, "federated methods"),
    ],
)
def test_bad_regions_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        _smoke(**changes)


def test_the_plan_refuses_regions_without_sealing_or_a_hierarchy(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="give a codec"):
        FederationPlan(data_spec="{}", regions=2)
    with pytest.raises(FederationError, match="regions must be >= 0"):
        FederationPlan(data_spec="{}", codec="fp32", regions=-1)
    with pytest.raises(FederationError, match="in \\[1, 2\\]"):
        RegionMap.contiguous([b"a", b"b"], 3)
    plan = FederationPlan(data_spec="{}", codec="fp32", regions=2)
    with pytest.raises(FederationError, match="needs their assignment"):
        run_rounds(LocalGrid(client_app), plan, keys=None)


def test_contiguous_regions_are_balanced_and_deterministic() -> None:
    ids = [bytes([i]) for i in range(30)]
    regions = RegionMap.contiguous(ids, 10)
    assert regions.sizes() == [3] * 10
    assert [regions.of_site[i] for i in ids[:6]] == [0, 0, 0, 1, 1, 1]
    uneven = RegionMap.contiguous(ids, 7).sizes()
    assert sum(uneven) == 30 and max(uneven) - min(uneven) == 1


def _run(
    config: SimulationConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str
) -> tuple[FederationOutcome, LocalGrid]:
    """The run's rounds on a LocalGrid: the simulation's own ClientApp on every node."""
    source, _ = open_source(config, tmp_path / label)
    plan = make_plan(config, source, "fedavg")
    state = tmp_path / label / "state"
    key_seed = secrets.randbits(62)
    monkeypatch.setenv(HARNESS_ENV, Harness(key_seed, plan.seed, str(state)).to_json())
    grid = LocalGrid(client_app)
    for i in range(SITES):
        grid.add_node(1000 + i, {"partition-id": i})
    keys = ServerKeys(simulated_identity(key_seed, "server"), simulated_directory(key_seed, SITES))
    tier = hierarchy(plan, key_seed, SITES, state) if plan.regions else None
    return run_rounds(grid, replace(plan, min_nodes=SITES), keys=keys, hierarchy=tier), grid


def test_coordinator_receives_k_regional_updates_counted_from_the_wire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _smoke(codec="int8", regions=2, region_codec="topk+global:0.1", num_rounds=2)
    outcome, grid = _run(config, tmp_path, monkeypatch, "k2")
    assert outcome.comm is not None
    tiers = outcome.comm["hierarchy"]
    assert tiers["sites_per_region"] == [2, 2]
    assert tiers["regional_updates_by_round"] == {"1": 2, "2": 2}
    assert [r["sites_up"] for r in tiers["per_round"]] == [2, 2]  # one sender per region
    b = tiers["bytes"]
    # The sites' tier is every reply that crossed the grid, hellos included, byte for byte.
    assert b["sites_to_regions"] == sum(len(m) for m in grid.wire.up)
    assert b["regions_to_sites"] == outcome.comm["comm"]["bytes_down_total"]
    assert b["regions_to_coordinator"] == sum(r["up"] for r in tiers["per_round"])
    assert b["coordinator_to_regions"] == sum(r["down"] for r in tiers["per_round"])
    # 10% top-k of the regional delta: far smaller than the sites' int8 updates.
    site_update = outcome.comm["comm"]["bytes_per_update_mean"]
    assert tiers["bytes_per_regional_update_mean"] < 0.5 * site_update
    assert tiers["security"]["accepted"] == 4 and tiers["security"]["rejected"] == {}
    assert all(r.val_loss is not None and np.isfinite(r.val_loss) for r in outcome.rounds)


def test_one_lossless_region_is_flat_fedavg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lossless = {"codec": "fp32", "downlink_codec": "fp32", "num_rounds": 2}
    flat, _ = _run(_smoke(**lossless), tmp_path, monkeypatch, "flat")
    one, _ = _run(_smoke(regions=1, **lossless), tmp_path, monkeypatch, "one")
    assert one.comm is not None and one.comm["hierarchy"]["regional_updates_by_round"] == {
        "1": 1,
        "2": 1,
    }
    assert flat.best_round == one.best_round
    for a, b in zip(flat.weights, one.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    for fr, hr in zip(flat.rounds, one.rounds, strict=True):
        assert fr.val_loss == pytest.approx(hr.val_loss, rel=1e-5)
