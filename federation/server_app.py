"""The deployment ServerApp: ``flwr run`` starts it on a SuperLink with the run config.

The run config keys are :class:`federation.FederationPlan`'s fields with dashes
(``num-rounds``, ``strategy``, ``data-spec`` ...); ``output-dir``, when given, receives
the final global weights. With ``coordinator-url`` (set by the coordinator when it starts
the run) every round and the final model are reported to it (``federation/_report.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedge.federation._plan import FederationPlan
from fedge.federation._report import RoundReporter
from fedge.federation._rounds import run_rounds

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = dict(context.run_config)
    plan = FederationPlan.from_config(config)
    reporter = RoundReporter.from_config(config, plan)
    if reporter is None:
        outcome = run_rounds(grid, plan)
    else:
        try:
            outcome = run_rounds(grid, plan, wrap=reporter.wrap)
            reporter.model(outcome.weights)
        except Exception as exc:
            reporter.failure(f"{type(exc).__name__}: {exc}")
            raise
    out = config.get("output-dir")
    if out:
        path = Path(str(out))
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "global_weights.npz", *outcome.weights)
