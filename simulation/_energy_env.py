"""Strategic energy saving: a cluster of overlapping cells, each choosing a power mode.

Every 15 minutes each site of a cluster is ``active`` (coverage and capacity carriers),
``capacity_off`` (capacity carrier asleep: half the radio capacity) or asleep, both
carriers in ``deep_sleep``, ``light_sleep`` or ``micro_sleep`` (the sleep states the power
model offers: EARTH one, TR 38.864 three). Demand a site cannot carry goes to the
cluster's other sites, which take it up to their spare capacity at a cell-edge
efficiency penalty; whatever is left is unserved, a QoS violation. Power per carrier is
the model's (``fedge.decisions``: EARTH, Auer et al. 2011, or 3GPP TR 38.864). A sleep
state may only be entered for a block when its transition (entering and waking) fits in
the block; a site asked for one that does not fit stays active. A carrier leaving a
sleep state pays the state's transition energy in that block.

The modes, the observation a site sees and the power models are the decision runtime's
(``fedge.decisions``), shared with serving; the cluster's dynamics, costs, baselines and
the Gymnasium environment are the simulation's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from fedge.decisions import (
    ACTIVE,
    CAP_OFF,
    CAPACITY,
    CARRIER_STATES,
    DECISION_STEPS,
    DEFAULT_HEADROOM,
    EARTH_MACRO,
    ENERGY_OBS_DIM,
    ENERGY_OBS_NAMES,
    MODES,
    OFFLOAD_EFFICIENCY,
    SLEEP,
    CarrierPower,
    DecisionData,
    DecisionError,
    DecisionInputError,
    energy_obs,
    feasible_modes,
)

CARRIERS = 2
P_FULL_W = CARRIERS * EARTH_MACRO.full_w  # a fully loaded active EARTH macro site: 448 W
BLOCK_S = DECISION_STEPS * 5 * 60.0  # one decision block: 15 minutes
# Cost weights, fixed before any training: one unit = a fully loaded site for 15 minutes.
UNSERVED_WEIGHT = 10.0  # per unit of unserved demand (fraction of a site's capacity)
VIOLATION_WEIGHT = 1.0  # per site-step with any unserved demand
_EPS = 1e-6

# (observations, site indices) -> modes; baselines ignore the sites.
EnergyPolicy = Callable[[NDArray[np.float32], NDArray[np.int64]], NDArray[np.int64]]


@dataclass(frozen=True)
class Outcome:
    """One 15-minute block of a batch of clusters; arrays are (clusters, K[, substeps])."""

    demand: NDArray[np.float64]
    own_served: NDArray[np.float64]
    absorbed: NDArray[np.float64]  # capacity a site spends on neighbours' offloaded demand
    offloaded_served: NDArray[np.float64]  # a site's own demand carried by neighbours
    unserved: NDArray[np.float64]
    spare_before: NDArray[np.float64]  # capacity left after own demand, before offload
    power_w: NDArray[np.float64]  # (clusters, K): mean power over the block, wake-up included
    modes: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The modes in force: those asked for, with any that do not fit the block active."""


def executable(
    modes: NDArray[np.int64], power: CarrierPower = EARTH_MACRO, block_s: float = BLOCK_S
) -> NDArray[np.int64]:
    """``modes`` with every mode the model lacks or whose transition does not fit in the
    block replaced by ``active``; an index outside the vocabulary is refused."""
    m = np.asarray(modes, dtype=np.int64)
    if m.size and (m.min() < 0 or m.max() >= len(MODES)):
        raise DecisionInputError(f"modes must be in 0..{len(MODES) - 1}, got {np.unique(m)}")
    out: NDArray[np.int64] = np.where(feasible_modes(power, block_s)[m], m, ACTIVE)
    return out


def site_power(
    modes: NDArray[np.int64], used: NDArray[np.float64], power: CarrierPower = EARTH_MACRO
) -> NDArray[np.float64]:
    """Power of sites in ``modes`` carrying ``used`` (fraction of full site capacity)."""
    m = modes if used.ndim == modes.ndim else modes[..., None]
    asleep_w = power.asleep_w()
    active = CARRIERS * power.carrier(used)
    cap_off = power.carrier(used / CAPACITY[CAP_OFF]) + asleep_w[CAP_OFF]
    asleep = np.broadcast_to(CARRIERS * asleep_w[m], used.shape)
    out: NDArray[np.float64] = np.where(
        m == ACTIVE, active, np.where(m == CAP_OFF, cap_off, asleep)
    )
    return out


def wake_power(
    prev: NDArray[np.int64],
    modes: NDArray[np.int64],
    power: CarrierPower = EARTH_MACRO,
    block_s: float = BLOCK_S,
) -> NDArray[np.float64]:
    """Extra mean power over a block for carriers that leave a sleep state at its start:
    each pays its state's transition energy (EARTH: full-load power for the wake-up)."""
    before, after = CARRIER_STATES[prev], CARRIER_STATES[modes]  # (..., carriers)
    left = (before >= 0) & (before != after)
    energy = np.where(left, power.transition_j()[np.clip(before, 0, None)], 0.0).sum(axis=-1)
    out: NDArray[np.float64] = (energy / block_s).astype(np.float64)
    return out


def resolve(
    modes: NDArray[np.int64],
    demand: NDArray[np.float64],
    prev: NDArray[np.int64],
    headroom: float = DEFAULT_HEADROOM,
    power: CarrierPower = EARTH_MACRO,
) -> Outcome:
    """Serve ``demand`` (clusters, K, substeps) under ``modes`` (clusters, K).

    An active site carries its own demand up to its full capacity (no decision could
    do better); a reduced one only up to its headroom. Offload fills neighbours up to
    their headroom. Modes that do not fit the block are served as active.
    """
    modes = executable(modes, power)
    cap = CAPACITY[modes][..., None]
    room = headroom * cap
    own = np.minimum(demand, np.where(modes[..., None] == ACTIVE, cap, room))
    excess = demand - own
    spare = np.clip(room - own, 0.0, None)
    pool = excess.sum(axis=1, keepdims=True)
    spare_tot = spare.sum(axis=1, keepdims=True)
    servable = np.minimum(pool, spare_tot * OFFLOAD_EFFICIENCY)
    frac = np.divide(servable, pool, out=np.ones_like(pool), where=pool > 0)
    off_served = excess * frac
    share = np.divide(spare, spare_tot, out=np.zeros_like(spare), where=spare_tot > 0)
    absorbed = share * servable / OFFLOAD_EFFICIENCY
    used = own + absorbed
    watts = site_power(modes, used, power).mean(axis=-1) + wake_power(prev, modes, power)
    return Outcome(demand, own, absorbed, off_served, excess - off_served, spare, watts, modes)


def site_costs(
    out: Outcome, power: CarrierPower = EARTH_MACRO
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """(cost, mean unserved, violated) per site for one block; reward is -cost. Power
    counts in units of a fully loaded site of the model in force."""
    unserved = out.unserved.mean(axis=-1)
    violated: NDArray[np.bool_] = np.asarray((out.unserved > _EPS).any(axis=-1))
    cost: NDArray[np.float64] = (
        out.power_w / (CARRIERS * power.full_w)
        + UNSERVED_WEIGHT * unserved
        + VIOLATION_WEIGHT * violated
    )
    return cost, unserved, violated


@dataclass
class EnergyTrace:
    """A method's blocks over a split: arrays are (blocks, clusters, K)."""

    starts: NDArray[np.int64]
    modes: NDArray[np.int64]
    power_w: NDArray[np.float64]
    cost: NDArray[np.float64]
    unserved: NDArray[np.float64]
    violated: NDArray[np.bool_]
    served_load: NDArray[np.float64]  # (blocks, clusters, K, substeps): own + absorbed
    absorbed: NDArray[np.float64]  # (blocks, clusters, K, substeps)
    mode_names: tuple[str, ...] = MODES[:3]  # the modes the power model in force offers

    def summary(self, baseline_energy: float | None = None) -> dict[str, Any]:
        energy = float(self.power_w.sum())
        out: dict[str, Any] = {
            "energy_kwh": round(energy * 0.25 / 1000.0, 3),
            "qos_violation_rate": round(float(self.violated.mean()), 5),
            "reward": round(-float(self.cost.mean()), 5),
            "unserved_demand_pct": round(100.0 * float(self.unserved.mean()), 4),
            "mode_share": {
                m: round(float((self.modes == i).mean()), 4) for i, m in enumerate(self.mode_names)
            },
        }
        ref = baseline_energy if baseline_energy is not None else energy
        out["energy_saved_pct"] = round(100.0 * (1.0 - energy / ref), 3) if ref > 0 else 0.0
        return out


def rollout(data: DecisionData, starts: NDArray[np.int64], policy: EnergyPolicy) -> EnergyTrace:
    """Run ``policy`` over consecutive blocks of every cluster at once (batched by cluster).

    A mode that does not fit the block is executed as active, and the sites after it
    see (and the trace records) the mode in force."""
    sites = data.clusters
    n, k = sites.shape
    prev = np.full((n, k), ACTIVE, dtype=np.int64)
    b = len(starts)
    modes_h = np.zeros((b, n, k), dtype=np.int64)
    power, cost, unserved = (np.zeros((b, n, k)) for _ in range(3))
    violated = np.zeros((b, n, k), dtype=bool)
    served = np.zeros((b, n, k, DECISION_STEPS))
    absorbed = np.zeros((b, n, k, DECISION_STEPS))
    for j, t in enumerate(starts):
        modes = np.full((n, k), ACTIVE, dtype=np.int64)
        for pos in range(k):
            obs = energy_obs(data, sites, int(t), pos, modes, prev)
            modes[:, pos] = executable(policy(obs, sites[:, pos]), data.power)
        load = data.load[sites, t : t + DECISION_STEPS]
        out = resolve(modes, load, prev, data.headroom, data.power)
        c, u, v = site_costs(out, data.power)
        modes_h[j], power[j], cost[j], unserved[j], violated[j] = modes, out.power_w, c, u, v
        served[j] = out.own_served + out.absorbed
        absorbed[j] = out.absorbed
        prev = modes
    return EnergyTrace(
        starts, modes_h, power, cost, unserved, violated, served, absorbed, data.power.modes
    )


def always_on(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.int64]:
    return np.full(len(obs), ACTIVE, dtype=np.int64)


def random_policy(seed: int, num_modes: int = 3) -> EnergyPolicy:
    """Uniform over the first ``num_modes`` modes (those of the power model in force)."""
    rng = np.random.default_rng(seed)
    return lambda obs, sites: rng.integers(0, num_modes, size=len(obs)).astype(np.int64)


def threshold_policy(sleep_below: float, off_below: float) -> EnergyPolicy:
    """Sleep when the hour's forecast peak is below ``sleep_below`` and the neighbours can
    take it, switch the capacity carrier off below ``off_below``, else stay active."""
    i_peak = ENERGY_OBS_NAMES.index("fc_peak_hour")
    i_spare = ENERGY_OBS_NAMES.index("neighbour_spare_hour")

    def policy(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.int64]:
        peak, spare = obs[:, i_peak], obs[:, i_spare]
        sleep = (peak < sleep_below) & (spare >= peak)
        off = peak < off_below
        return np.where(sleep, SLEEP, np.where(off, CAP_OFF, ACTIVE)).astype(np.int64)

    return policy


HINDSIGHT_MAX_COMBINATIONS = 3**7  # mode combinations per cluster the bound enumerates


def hindsight_candidates(power: CarrierPower, block_s: float = BLOCK_S) -> NDArray[np.int64]:
    """The modes the ceiling needs to try under ``power``: every mode that fits the block,
    with the sleep states (no capacity, wake-ups free) reduced to the cheapest that fits."""
    ok = np.nonzero(feasible_modes(power, block_s))[0]
    serving = [int(m) for m in ok if CAPACITY[m] > 0]
    asleep = [int(m) for m in ok if CAPACITY[m] == 0]
    if asleep:
        serving.append(min(asleep, key=lambda m: (power.asleep_w()[m], m)))
    return np.array(serving, dtype=np.int64)


def hindsight_bound(data: DecisionData, starts: NDArray[np.int64]) -> dict[str, Any] | None:
    """The most energy any policy could save with no unserved demand: per block and
    cluster, the least-power combination of the modes that fit the block under the power
    model in force, knowing the block's demand, wake-ups free.

    Not a method anyone can run; the ceiling the report puts next to the methods.
    ``None`` when the cluster is too large to enumerate.
    """
    n, k = data.clusters.shape
    candidates = hindsight_candidates(data.power)
    if len(candidates) ** k > HINDSIGHT_MAX_COMBINATIONS:
        return None
    grid = np.meshgrid(*[candidates] * k, indexing="ij")
    combos = np.array(grid).reshape(k, -1).T
    c = len(combos)
    modes = np.repeat(combos, n, axis=0)  # (c * n, k), combination-major
    energy_on = energy_best = 0.0
    for t in starts:
        demand = data.load[data.clusters, t : t + DECISION_STEPS]
        on = site_power(np.zeros((n, k), dtype=np.int64), demand, data.power)
        energy_on += float(on.mean(-1).sum())
        out = resolve(modes, np.tile(demand, (c, 1, 1)), modes, data.headroom, data.power)
        watts = out.power_w.sum(axis=1).reshape(c, n)
        feasible = (out.unserved <= _EPS).all(axis=(1, 2)).reshape(c, n)
        energy_best += float(np.where(feasible, watts, np.inf).min(axis=0).sum())
    saved = 100.0 * (1.0 - energy_best / energy_on) if energy_on > 0 else 0.0
    return {
        "energy_saved_pct": round(saved, 3),
        "qos_violation_rate": 0.0,
        "power_model": data.power.name,
        "modes_tried": [MODES[int(m)] for m in candidates],
        "what": "hindsight: least power per block knowing its demand, no unserved demand, "
        "only modes whose transition fits the block, wake-ups free; a ceiling, not a method",
    }


def ceiling_ratios(energy: dict[str, Any]) -> None:
    """Add each method's share of the hindsight ceiling's saving (``ratio_to_ceiling``)."""
    bound = energy.get("hindsight_bound")
    if not bound or bound["energy_saved_pct"] <= 0:
        return
    for name, r in energy.items():
        if name != "hindsight_bound" and "energy_saved_pct" in r:
            r["ratio_to_ceiling"] = round(r["energy_saved_pct"] / bound["energy_saved_pct"], 4)


THRESHOLD_GRID_SLEEP = tuple(round(x, 2) for x in np.arange(0.0, 0.41, 0.05))
THRESHOLD_GRID_OFF = tuple(round(x, 2) for x in np.arange(0.0, 0.51, 0.05))


def best_threshold(data: DecisionData) -> tuple[float, float, float]:
    """Grid search on the validation days by reward: (sleep_below, off_below, reward)."""
    starts = data.block_starts("val")
    best = (0.0, 0.0, -np.inf)
    for s in THRESHOLD_GRID_SLEEP:
        for o in THRESHOLD_GRID_OFF:
            r = -float(rollout(data, starts, threshold_policy(s, o)).cost.mean())
            if r > best[2]:
                best = (s, o, r)
    return best


class EnergySavingEnv(gym.Env[NDArray[np.float32], np.int64]):
    """Gymnasium environment of one cluster; one ``step`` is one site's decision.

    The reward of a site's decision is its marginal effect on the cluster's cost for the
    block (sites after it counted as active, without wake-up), so the rewards of a block
    sum to the always-on cost minus the block's true cost: maximising the return
    minimises the cluster's energy, unserved demand and violations together.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, data: DecisionData, split: str = "train", episode_blocks: int = 96) -> None:
        self.data = data
        self.starts = data.block_starts(split)
        if len(self.starts) < 2:
            raise DecisionError(f"the {split} split has no room for an episode")
        # One block is kept after every episode so its final observation is a real one.
        self.episode_blocks = min(episode_blocks, len(self.starts) - 1)
        self.k = data.clusters.shape[1]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (ENERGY_OBS_DIM,), np.float32)
        self.num_modes = len(data.power.modes)
        self.action_space = gym.spaces.Discrete(self.num_modes)
        self._rng = np.random.default_rng(0)
        self._cluster = data.clusters[:1]
        self._block = 0
        self._end = 0
        self._pos = 0
        self._modes = np.zeros((1, self.k), dtype=np.int64)
        self._prev = np.zeros((1, self.k), dtype=np.int64)
        self._partial = 0.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        c = int(self._rng.integers(0, len(self.data.clusters)))
        self._cluster = self.data.clusters[c : c + 1]
        self._block = int(self._rng.integers(0, len(self.starts) - self.episode_blocks))
        self._end = self._block + self.episode_blocks
        self._prev = np.full((1, self.k), ACTIVE, dtype=np.int64)
        self._new_block()
        return self._obs(), {"cluster": c}

    def _new_block(self) -> None:
        self._pos = 0
        self._modes = np.full((1, self.k), ACTIVE, dtype=np.int64)
        self._partial = self._cost(self._modes, upto=-1)

    def _cost(self, modes: NDArray[np.int64], upto: int) -> float:
        t = int(self.starts[self._block])
        prev = np.where(np.arange(self.k) <= upto, self._prev, modes)  # no wake after upto
        load = self.data.load[self._cluster, t : t + DECISION_STEPS]
        out = resolve(modes, load, prev, self.data.headroom, self.data.power)
        return float(site_costs(out, self.data.power)[0].sum())

    def _obs(self) -> NDArray[np.float32]:
        t = int(self.starts[self._block])
        obs = energy_obs(self.data, self._cluster, t, self._pos, self._modes, self._prev)
        return np.asarray(obs[0], dtype=np.float32)

    def step(
        self, action: int | np.integer[Any] | NDArray[Any]
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        a = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= a < self.num_modes:
            raise DecisionInputError(f"mode {a} is not one of 0..{self.num_modes - 1}")
        self._modes[0, self._pos] = executable(np.array([a]), self.data.power)[0]
        cost = self._cost(self._modes, upto=self._pos)
        reward = self._partial - cost
        self._partial = cost
        self._pos += 1
        truncated = False
        if self._pos == self.k:
            self._prev = self._modes.copy()
            self._block += 1
            truncated = self._block == self._end
            self._new_block()
        return self._obs(), reward, False, truncated, {}
