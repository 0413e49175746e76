"""A deployed node trains on every cell of its site's store, each cell scaled on its own, and
reports the total; its site is its enrolled key, so two nodes with one key are one site."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.core import TARGET_INDEX, read_cell
from fedge.federation import FederationError, FederationPlan, load_run_keys, run_rounds
from fedge.federation._accounting import Ledger
from fedge.federation._channel import ServerChannel
from fedge.federation._introduce import DUPLICATE_SITE, Introducer
from fedge.federation._site_task import store_task
from fedge.federation.client_app import app as deployed_app
from fedge.models import ForecastSpec, prepare_site
from tests.support.flower import STEP, export_authority, make_site, write_store
from tests.support.grid import LocalGrid

DATA = '{"kind": "generator", "num_sites": 2, "days": 10, "seed": 0}'
VAL_DAYS = TEST_DAYS = 2


def _plan(**kw: Any) -> FederationPlan:
    base = FederationPlan(
        data_spec=DATA,
        num_rounds=1,
        local_epochs=0.1,
        codec="int8",
        val_days=VAL_DAYS,
        test_days=TEST_DAYS,
    )
    return replace(base, **kw)


def write_cells(path: Path, days: dict[str, int], seed: int = 3) -> None:
    """A store with one generated series per cell (``days`` each), ending now."""
    from fedge.edge_agent import KpiSample, Store
    from fedge.simulation import GeneratorConfig, SiteGenerator

    gen = SiteGenerator(GeneratorConfig(num_sites=len(days), days=max(days.values()), seed=seed))
    last = int(time.time() // STEP)
    store = Store(path, step_seconds=STEP)
    samples = []
    for i, (cell, n_days) in enumerate(days.items()):
        values = gen.site(i).values[-n_days * 86_400 // STEP :]
        first = last - len(values) + 1
        samples += [
            KpiSample(cell, float((first + k) * STEP), first + k,
                      tuple(None if np.isnan(v) else float(v) for v in values[k]))
            for k in range(len(values))
        ]  # fmt: skip
    store.commit_batch(samples, [], time.time())
    store.close()


def test_every_cell_is_prepared_with_its_own_scaler_and_short_cells_wait(tmp_path: Path) -> None:
    store = tmp_path / "agent.db"
    write_cells(store, {"c0": 10, "c1": 10, "c2": 1})  # c2 was added a day ago
    spec = ForecastSpec()
    cells = store_task(store, spec, VAL_DAYS, TEST_DAYS)
    assert len(cells) == 2
    for index, prepared in enumerate(cells):
        alone = read_cell(store, index)
        expected = prepare_site(
            alone.values, alone.minute_of_week(), alone.steps_per_day, spec,
            TARGET_INDEX, VAL_DAYS, TEST_DAYS,
        )  # fmt: skip
        np.testing.assert_array_equal(prepared.scaler.mean, expected.scaler.mean)
        np.testing.assert_array_equal(prepared.x_train, expected.x_train)
    assert not np.allclose(cells[0].scaler.mean, cells[1].scaler.mean)


def test_a_store_with_no_usable_cell_is_a_typed_error(tmp_path: Path) -> None:
    short = tmp_path / "short.db"
    write_cells(short, {"c0": 1})
    with pytest.raises(FederationError, match="none of the 1 cells"):
        store_task(short, ForecastSpec(), VAL_DAYS, TEST_DAYS)
    with pytest.raises(FederationError, match="site data"):
        store_task(tmp_path / "missing.db", ForecastSpec(), VAL_DAYS, TEST_DAYS)


def test_a_node_trains_on_all_its_cells_and_reports_their_total(tmp_path: Path) -> None:
    """Site 0 has three cells (two usable), site 1 one: the round's accepted updates count
    every training window of all three usable cells."""
    pub = tmp_path / "coordinator.pub"
    multi, single = tmp_path / "multi.db", tmp_path / "single.db"
    write_cells(multi, {"c0": 10, "c1": 10, "c2": 1})
    write_store(single)
    sites = [make_site(tmp_path / "s0", store=multi), make_site(tmp_path / "s1", store=single)]
    _, directory = export_authority(tmp_path, sites, pub)
    grid = LocalGrid(deployed_app)
    for node, site in enumerate(sites, start=1):
        grid.add_node(node, site.config(pub))
    plan = _plan(num_rounds=2)
    outcome = run_rounds(grid, plan, keys=load_run_keys(directory))
    windows = sum(
        len(p.x_train)
        for store in (multi, single)
        for p in store_task(store, plan.forecast, VAL_DAYS, TEST_DAYS)
    )
    assert outcome.comm is not None
    per_round = outcome.comm["comm"]["per_round"]
    assert [(r["accepted"], r["examples"]) for r in per_round] == [(2, windows)] * 2
    assert all(r.eval_rmse is not None and np.isfinite(r.eval_rmse) for r in outcome.rounds)


def test_two_nodes_with_one_site_key_are_one_site(tmp_path: Path) -> None:
    """The second node to prove a site already in the run is refused as duplicate_site and
    counted; the site's update is counted once per round."""
    pub = tmp_path / "coordinator.pub"
    store = tmp_path / "agent.db"
    write_store(store)
    a, b = make_site(tmp_path / "a", store=store), make_site(tmp_path / "b", store=store)
    twin = make_site(tmp_path / "a-twin", store=store, identity=a.identity)  # a's key, copied
    _, directory = export_authority(tmp_path, [a, b], pub)
    grid = LocalGrid(deployed_app)
    for node, site in enumerate((a, b, twin), start=1):
        grid.add_node(node, site.config(pub))
    outcome = run_rounds(grid, _plan(num_rounds=2), keys=load_run_keys(directory))
    assert outcome.comm is not None
    security = outcome.comm["security"]
    assert security["hello_refused"] == {DUPLICATE_SITE: 1} and security["nodes_bound"] == 2
    assert [(r.sampled, r.participants, r.rejected) for r in outcome.rounds] == [(2, 2, 0)] * 2
    first = outcome.comm["comm"]["per_round"][0]
    assert first[f"refused_{DUPLICATE_SITE}"] == 1
    # Exactly one of the two nodes holding a's key ever got a model.
    assert (a.state_dir / "channel.json").exists() != (twin.state_dir / "channel.json").exists()


def test_a_duplicate_takes_the_site_over_once_the_first_node_left(tmp_path: Path) -> None:
    """A SuperNode restarted under a new node id: while the old id is still registered the
    new one is a duplicate; once the old one left, the new one is the site's node."""
    pub = tmp_path / "coordinator.pub"
    store = tmp_path / "agent.db"
    write_store(store)
    a = make_site(tmp_path / "a", store=store)
    again = make_site(tmp_path / "a-again", store=store, identity=a.identity)
    _, directory = export_authority(tmp_path, [a], pub)
    keys = load_run_keys(directory)
    grid = LocalGrid(deployed_app)
    grid.add_node(1, a.config(pub))
    ledger = Ledger()
    introducer = Introducer(grid, ServerChannel(keys.identity, keys.directory), ledger)
    far = time.monotonic() + 60
    assert introducer.sample(1, 1.0, 1, far) == [1]
    grid.add_node(2, again.config(pub))
    assert introducer.sample(2, 1.0, 1, far) == [1]
    assert introducer.duplicates == {2: a.identity.site_id}
    assert ledger.hello_refused == {DUPLICATE_SITE: 1}
    del grid.nodes[1]  # the old node id is no longer registered
    assert introducer.sample(3, 1.0, 1, far) == [2]
    assert introducer.channel.node_of(a.identity.site_id) == 2
    assert not introducer.channel.knows(1) and ledger.nodes_bound == 2
    assert introducer.hellos == 2  # the takeover needed no second hello
