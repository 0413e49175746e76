"""The deployment ServerApp: ``flwr run`` starts it on a SuperLink with the run config.

The run config keys are :class:`federation.FederationPlan`'s fields with dashes
(``num-rounds``, ``strategy``, ``codec`` ...); ``output-dir``, when given, receives the
final global weights. With ``coordinator-url`` (set by the coordinator when it starts
the run) every round and the final model are reported to it (``federation/_report.py``).

A deployed run is always sealed: ``key-directory`` names the coordinator's export for
the run (the server's identity and the enrolled sites' public keys,
``fedge.federation._keys``), and ``codec = "none"`` means sealed but uncompressed (fp32).
The simulation-only settings (``attacks``, ``state-dir``) are refused here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedge.federation._errors import FederationError
from fedge.federation._keys import KEY_DIRECTORY, load_run_keys
from fedge.federation._plan import FederationPlan
from fedge.federation._report import RoundReporter
from fedge.federation._rounds import run_rounds

log = logging.getLogger(__name__)

app = ServerApp()


def deployed_plan(config: dict[str, Any]) -> FederationPlan:
    """The plan of a deployed run: sealed, with no simulation-only settings."""
    plan = FederationPlan.from_config(config)
    if plan.attacks or plan.state_dir:
        raise FederationError("attacks and state-dir are simulation settings, not a deployment's")
    if plan.codec == "none":
        plan = replace(plan, codec="fp32")
    return plan


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = dict(context.run_config)
    plan = deployed_plan(config)
    directory = str(config.get(KEY_DIRECTORY) or "")
    reporter = RoundReporter.from_config(config, plan)
    try:
        if not directory:
            raise FederationError(
                f"the run config names no {KEY_DIRECTORY}: a deployed run is sealed with the "
                "coordinator's keys (the coordinator sets it; docs/security.md)"
            )
        keys = load_run_keys(Path(directory))
        wrap = reporter.wrap if reporter is not None else None
        outcome = run_rounds(grid, plan, wrap=wrap, keys=keys)
        if reporter is not None:
            reporter.model(outcome.weights, outcome.best_round)
    except Exception as exc:
        if reporter is not None:
            reporter.failure(f"{type(exc).__name__}: {exc}")
        raise
    out = config.get("output-dir")
    if out:
        path = Path(str(out))
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "global_weights.npz", *outcome.weights)
        summary = {
            "rounds": [asdict(r) for r in outcome.rounds],
            "best_round": outcome.best_round,
            **(outcome.comm or {}),
        }
        (path / "run.json").write_text(json.dumps(summary, indent=1))
        log.info("global weights written to %s", path)
