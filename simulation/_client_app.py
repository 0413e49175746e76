"""The simulation's ClientApp: fedge's site app, with simulated identities and attackers.

What a deployed node reads from its node config, a simulated site gets from the harness
(``fedge.simulation._federated``) out of band, through ``$FEDGE_SIM_HARNESS`` in the
worker's environment: the run's key seed, the state directory, the attack plan. None of
it travels in a Flower message. The site's index is the simulation engine's
``partition-id``; its data is the plan's ``data_spec`` (the simulation's own sites).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

import numpy as np
from flwr.app import Context

from fedge.federation import Site, site_app
from fedge.simulation._adversary import AdversaryPlan, AttackingUplink
from fedge.simulation._errors import SimulationError
from fedge.simulation._identities import simulated_identity, site_name
from fedge.simulation._site_task import site_task

HARNESS_ENV: Final = "FEDGE_SIM_HARNESS"


@dataclass(frozen=True)
class Harness:
    """What the simulation harness tells its own workers about a run."""

    key_seed: int
    seed: int
    state_dir: str
    attacks: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "key_seed": self.key_seed,
                "seed": self.seed,
                "state_dir": self.state_dir,
                "attacks": self.attacks,
            }
        )


@lru_cache(maxsize=4)
def _harness(text: str) -> tuple[Harness, AdversaryPlan]:
    try:
        harness = Harness(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"${HARNESS_ENV} is not a harness description: {exc}") from exc
    return harness, AdversaryPlan.from_json(harness.attacks)


def simulated_site(context: Context) -> Site:
    text = os.environ.get(HARNESS_ENV)
    if not text:
        raise SimulationError(f"${HARNESS_ENV} is unset: this app runs under fedge simulate")
    harness, adversary = _harness(text)
    index = int(context.node_config["partition-id"])
    attack = adversary.role(index)

    return Site(
        index=index,
        identity=simulated_identity(harness.key_seed, site_name(index)),
        coordinator=simulated_identity(harness.key_seed, "server").public_keys(),
        state_dir=Path(harness.state_dir) / f"site-{index:05d}",
        task=lambda plan: (
            site_task(plan.data_spec, index, plan.forecast, plan.val_days, plan.test_days).prepared
        ),
        rng=lambda server_round: np.random.default_rng([harness.seed, index, server_round]),
        uplink=AttackingUplink(attack, adversary.boost) if attack else None,
        allow_plain=True,
    )


app = site_app(simulated_site)
