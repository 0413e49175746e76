"""Run the federation apps on Flower's simulation runtime (Ray backend) in this process.

The harness is the simulation's key authority: it draws a key seed per run, enrolls every
simulated site in an in-process directory for the server, and hands the seed, the state
directory and the attack plan to its own ClientApp's workers through their environment
(``fedge.simulation._client_app``), never through a Flower message.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedge.federation import (
    FederationError,
    FederationOutcome,
    FederationPlan,
    Hierarchy,
    RegionMap,
    ServerKeys,
    run_rounds,
)
from fedge.simulation._client_app import HARNESS_ENV, Harness
from fedge.simulation._client_app import app as client_app
from fedge.simulation._config import probe_ray
from fedge.simulation._errors import SimulationError
from fedge.simulation._identities import simulated_directory, simulated_identity, site_name
from fedge.simulation._vce import scaled_runtime


@dataclass
class FederatedRun:
    outcome: FederationOutcome
    wall_s: float
    site_rounds: int


def run_federated(
    plan: FederationPlan,
    num_sites: int,
    workers: int,
    on_round: Callable[[int], None] | None = None,
    quiet: bool = True,
    ray_address: str | None = None,
) -> FederatedRun:
    """One federated run over ``num_sites`` virtual SuperNodes, ``workers`` at a time, or
    one per CPU of the Ray cluster at ``ray_address``."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    holder: list[FederationOutcome] = []
    server_app = ServerApp()
    key_seed = secrets.randbits(62)
    state_dir = plan.state_dir or tempfile.mkdtemp(prefix="fedge-site-state-")
    harness = Harness(key_seed, plan.seed, state_dir, plan.attacks)
    keys = None
    if plan.codec != "none":
        keys = ServerKeys(
            simulated_identity(key_seed, "server"), simulated_directory(key_seed, num_sites)
        )
    tier = hierarchy(plan, key_seed, num_sites, Path(state_dir)) if plan.regions else None

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        _all_registered(grid, num_sites)
        holder.append(run_rounds(grid, plan, on_round, keys=keys, hierarchy=tier))

    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            # A new Ray instance of this run's own, even when `ray start` left a cluster on
            # this host: without an address Ray joins the host's latest cluster, which
            # refuses num_cpus (and would run the sites on someone else's workers).
            "address": "local",
            "num_cpus": workers,
            "num_gpus": 0,
            "include_dashboard": False,
            "logging_level": "ERROR",
            "log_to_driver": not quiet,
        },
    }
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.ERROR)  # also hides run_simulation's deprecation banner
    start = time.perf_counter()
    before = os.environ.get(HARNESS_ENV)
    os.environ[HARNESS_ENV] = harness.to_json()  # the workers inherit it (never the wire)
    try:
        if ray_address is not None:
            _join_cluster(ray_address, harness, quiet)
            backend_config = {"client_resources": backend_config["client_resources"]}
        with scaled_runtime():  # Flower's runtime, at a cost per sampled site
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_sites,
                backend_config=backend_config,  # type: ignore[arg-type]
            )
    except SimulationError:
        raise
    except Exception as exc:  # Flower and Ray raise untyped runtime errors
        raise SimulationError(f"federated run ({plan.strategy}) failed: {exc}") from exc
    finally:
        if ray_address is not None:
            _leave_cluster()
        flwr_logger.setLevel(level)
        if before is None:
            os.environ.pop(HARNESS_ENV, None)
        else:
            os.environ[HARNESS_ENV] = before
    wall = time.perf_counter() - start
    if not holder:
        raise SimulationError(f"federated run ({plan.strategy}) ended without a result")
    per_round = max(1, int(num_sites * plan.fraction_train))  # as Flower samples
    return FederatedRun(holder[0], wall, per_round * plan.num_rounds)


def _all_registered(grid: Grid, num_sites: int, patience_s: float = 600.0) -> None:
    """Wait for every virtual node: Flower registers them while the ServerApp starts, and a
    round sampled before they are all there samples from fewer (another set each run)."""
    deadline = time.monotonic() + patience_s
    while (count := len(list(grid.get_node_ids()))) < num_sites:
        if time.monotonic() >= deadline:
            raise SimulationError(
                f"{count} of the {num_sites} simulated sites registered in {patience_s:g} s"
            )
        time.sleep(0.2)


def hierarchy(plan: FederationPlan, key_seed: int, num_sites: int, state_dir: Path) -> Hierarchy:
    """The regional tier of a simulated run: site ``i`` in region ``floor(i * K / n)``
    (consecutive sites, so each region holds a mix of archetypes, as a metro does), every
    region and the coordinator with an identity of its own."""
    ids = [simulated_identity(key_seed, site_name(i)).site_id for i in range(num_sites)]
    try:
        regions = RegionMap.contiguous(ids, plan.regions)
    except FederationError as exc:
        raise SimulationError(f"--regions: {exc}") from exc
    return Hierarchy(
        regions,
        [simulated_identity(key_seed, f"region-{r}") for r in range(plan.regions)],
        simulated_identity(key_seed, "coordinator"),
        state_dir / "regions",
    )


def _join_cluster(address: str, harness: Harness, quiet: bool) -> None:
    """Connect this driver to the running cluster before Flower would start a local one
    (its Ray backend only initialises Ray when it is not already). The cluster's workers
    were started by ``ray start``, not by this process, so what they need from here goes
    in the job's runtime environment: the harness, this interpreter's import path, and
    telemetry off."""
    import ray

    probe_ray(address)  # again: the cluster may have gone since the run began
    env = {
        HARNESS_ENV: harness.to_json(),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    try:
        ray.init(
            address=address, runtime_env={"env_vars": env}, logging_level=logging.ERROR,
            log_to_driver=not quiet, include_dashboard=False,
        )  # fmt: skip
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError
        raise SimulationError(f"cannot join the Ray cluster at {address}: {exc}") from exc


def _leave_cluster() -> None:
    """Disconnect the driver; the cluster and its other jobs carry on."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
