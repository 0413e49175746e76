"""Run the federation apps on Flower's simulation runtime (Ray backend) in this process."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedge.federation import FederationOutcome, FederationPlan, run_rounds
from fedge.federation.client_app import app as client_app
from fedge.simulation._errors import SimulationError


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
) -> FederatedRun:
    """One federated run over ``num_sites`` virtual SuperNodes, ``workers`` at a time."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    holder: list[FederationOutcome] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        holder.append(run_rounds(grid, plan, on_round))

    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
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
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_sites,
            backend_config=backend_config,  # type: ignore[arg-type]
        )
    except Exception as exc:  # Flower and Ray raise untyped runtime errors
        raise SimulationError(f"federated run ({plan.strategy}) failed: {exc}") from exc
    finally:
        flwr_logger.setLevel(level)
    wall = time.perf_counter() - start
    if not holder:
        raise SimulationError(f"federated run ({plan.strategy}) ended without a result")
    per_round = max(1, int(num_sites * plan.fraction_train))  # as Flower samples
    return FederatedRun(holder[0], wall, per_round * plan.num_rounds)
