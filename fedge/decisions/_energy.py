"""The strategic (energy) observation: what one site of a cluster sees before it picks a mode.

Every 15 minutes each site of a cluster is ``active`` (coverage and capacity carriers),
``capacity_off`` (capacity carrier asleep: half the radio capacity), or asleep with both
carriers in ``deep_sleep``, ``light_sleep`` or ``micro_sleep`` (the sleep depths the power
model in force offers; ``fedge.core.POWER_MODES``). Decisions inside a cluster are sequential (site 0 first): each site sees
what the sites before it chose, which lets one shared per-site policy coordinate a cluster
of any size. Training and serving build the observation with the same function, so a
policy is served exactly the inputs it learned on.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedge.core import POWER_MODES, TIME_FEATURE_NAMES, time_features
from fedge.decisions._data import DECISION_STEPS, HOUR_STEPS, DecisionData
from fedge.decisions._power import ACTIVE

MODES: tuple[str, ...] = POWER_MODES
# Share of the site's radio capacity per mode: a sleeping site serves nothing.
CAPACITY = np.array([1.0, 0.5, 0.0, 0.0, 0.0])
ASLEEP = CAPACITY == 0.0  # per mode: the site has no PRBs (no tactical split)
# The previous mode as the observation shows it: active, capacity off, or asleep at any
# depth (which depth matters only for a wake-up's energy, a small share of a block).
PREV_GROUP = np.array([0, 1, 2, 2, 2], dtype=np.int64)
# Traffic served by a neighbour comes from cell-edge users: 1/0.8 PRBs per unit of demand.
OFFLOAD_EFFICIENCY = 0.8

ENERGY_OBS_NAMES: tuple[str, ...] = (
    "load_now",
    "fc_peak_0_15min",
    "fc_peak_15_30min",
    "fc_peak_30_45min",
    "fc_peak_45_60min",
    "fc_peak_hour",
    "neighbour_spare_15min",
    "neighbour_spare_hour",
    "neighbours_asleep",
    "neighbours_undecided",
    "prev_active",
    "prev_capacity_off",
    "prev_asleep",
    *TIME_FEATURE_NAMES,
)
ENERGY_OBS_DIM = len(ENERGY_OBS_NAMES)


def energy_obs(
    data: DecisionData,
    sites: NDArray[np.int64],
    t: int,
    position: int,
    modes: NDArray[np.int64],
    prev: NDArray[np.int64],
) -> NDArray[np.float32]:
    """Observation of the site at ``position`` of each cluster (rows of ``sites``) at block ``t``.

    Sites before ``position`` have chosen ``modes`` for this block; the ones after it are
    counted as active (what they are unless they choose otherwise).
    """
    n, k = sites.shape
    fc = data.fc_load[sites, t - 1].reshape(n, k, HOUR_STEPS // DECISION_STEPS, DECISION_STEPS)
    peaks = fc.max(axis=-1)  # (n, K, 4)
    now = data.load[sites, t - DECISION_STEPS : t].mean(axis=-1)
    assumed = np.where(np.arange(k)[None, :] < position, modes, ACTIVE)
    room = data.headroom * CAPACITY[assumed][..., None]
    net = np.clip(room - peaks, 0.0, None) * OFFLOAD_EFFICIENCY - np.clip(peaks - room, 0.0, None)
    others = np.arange(k) != position
    net_n = net[:, others].sum(axis=1)  # (n, 4)
    decided = others & (np.arange(k) < position)
    asleep = (assumed[:, decided] != ACTIVE).sum(axis=1) / max(1, k - 1)
    undecided = np.full(n, (k - 1 - position) / max(1, k - 1))
    prev_onehot = np.eye(3)[PREV_GROUP[prev[:, position]]]
    time = np.tile(time_features(data.minute_of_week[[t]]), (n, 1))
    own = peaks[:, position]
    cols = [
        now[:, position, None],
        own,
        own.max(axis=1, keepdims=True),
        net_n[:, :1],
        net_n.min(axis=1, keepdims=True),
        asleep[:, None],
        undecided[:, None],
        prev_onehot,
        time,
    ]
    return np.concatenate(cols, axis=1).astype(np.float32)
