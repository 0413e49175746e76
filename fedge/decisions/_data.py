"""What the decision agents see, as arrays: site load, hour-ahead forecasts, clusters.

Demand is the site's own downlink PRB utilisation (fraction of one site's radio
capacity); the forecasts are the hour-ahead forecaster's, made at the end of each step.
The observation builders read only this, so whatever fills it (training, from a simulated
or imported fleet) hands a policy the inputs it learned on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.decisions._errors import DecisionError
from fedge.decisions._power import EARTH_MACRO, CarrierPower

HOUR_STEPS = 12  # forecast horizon of the decision layer: one hour of 5-minute steps
DECISION_STEPS = 3  # the strategic agent acts every 15 minutes
# The strategic layer leaves the tactical one room: a site in a reduced mode carries its
# own demand only up to this share of its available PRBs, and a neighbour takes offload
# only up to it. 0.84 is the highest load at which a split of the PRBs still meets every
# slice's SLA in 99% of steps without foresight of the URLLC burst, for the median site
# (URLLC share 0.115; derived in docs/decisions.md and checked by a test against
# simulation._slice_env.sla_at_load). Above it, energy saved costs slice SLAs. The
# default; ``DecisionData.headroom`` (``--headroom``) carries the one in force.
DEFAULT_HEADROOM = 0.84


@dataclass(frozen=True)
class DecisionData:
    """Per-site arrays on the common 5-minute grid; sites share one calendar."""

    site_ids: tuple[str, ...]
    archetypes: tuple[str, ...]
    load: NDArray[np.float64]  # (sites, steps): demand as a fraction of site capacity
    ues: NDArray[np.float64]  # (sites, steps): active UEs / the site's training maximum
    fc_load: NDArray[np.float64]  # (sites, steps, 12): forecast made at the end of step t
    fc_ues: NDArray[np.float64]  # (sites, steps, 12)
    minute_of_week: NDArray[np.int64]  # (steps,)
    steps_per_day: int
    val_start: int
    test_start: int
    clusters: NDArray[np.int64]  # (clusters, K): site indices of each neighbourhood
    headroom: float = DEFAULT_HEADROOM  # load the strategic layer may fill per site
    power: CarrierPower = EARTH_MACRO  # per-carrier power of the sites
    # Which forecaster made fc_load/fc_ues (method, rounds, spec, validation error): the
    # policies are only as good as the forecasts they learned on, so the record travels.
    forecaster: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_sites(self) -> int:
        return len(self.site_ids)

    @property
    def steps(self) -> int:
        return int(self.load.shape[1])

    def block_starts(self, split: str) -> NDArray[np.int64]:
        """Starts of the 15-minute decision blocks of a split with a full hour of forecast."""
        lo, hi = {
            "train": (0, self.val_start),
            "val": (self.val_start, self.test_start),
            "test": (self.test_start, self.steps),
        }[split]
        # The forecast a block reads is made at t-1, and a forecaster with a long lookback
        # makes none over the series' first hours.
        made = ~np.isnan(self.fc_load[:, :, 0]).any(axis=0)
        first = max(lo, HOUR_STEPS, int(np.argmax(made)) + 1 if made.any() else self.steps)
        first += (-first) % DECISION_STEPS
        last = min(hi, self.steps - HOUR_STEPS + 1)  # forecast at t-1 must reach t+11
        return np.arange(first, last - DECISION_STEPS + 1, DECISION_STEPS, dtype=np.int64)


def make_clusters(num_sites: int, size: int) -> NDArray[np.int64]:
    """Consecutive sites form a neighbourhood; a remainder too small to cluster is left out."""
    if size < 2:
        raise DecisionError(f"cluster size must be >= 2, got {size}")
    n = num_sites // size
    if n < 1:
        raise DecisionError(f"{num_sites} sites cannot form a cluster of {size}")
    return np.arange(n * size, dtype=np.int64).reshape(n, size)


def check_headroom(headroom: float) -> None:
    if not 0.0 < headroom <= 1.0:  # NaN fails too
        raise DecisionError(f"headroom must be in (0, 1] of a site's PRBs, got {headroom}")
