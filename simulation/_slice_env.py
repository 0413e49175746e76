"""Tactical slice allocation: every 5 minutes a site splits its PRBs between slices.

A site carries three slices: eMBB (the bulk of the traffic), URLLC (a small, bursty
share that needs 20% headroom for its latency target) and mMTC (many small devices,
following the number of attached UEs). The policy reserves a share of the available
PRBs (the strategic mode sets what is available) for each slice and leaves the rest
unreserved; an SLA is met when every slice got at least its requirement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from simulation._decision_data import DECISION_STEPS, DecisionData
from simulation._energy_env import ACTIVE, CAP_OFF, CAPACITY, SLEEP, EnergyTrace
from simulation._errors import DecisionError, DecisionInputError

SLICES: tuple[str, ...] = ("embb", "urllc", "mmtc")
EMBB, URLLC, MMTC = 0, 1, 2
URLLC_HEADROOM = 1.2  # URLLC must have 20% more PRBs than its demand
URLLC_BURST_SIGMA = 0.25  # log-normal burstiness of URLLC per 5-minute step
URLLC_SHARE = (0.08, 0.15)  # per-site range of URLLC's share of the PRB demand
MMTC_PER_UE = (0.04, 0.08)  # per-site PRB share of mMTC at the training-maximum UE count
# Reward weights, fixed before any training: URLLC satisfaction first.
SATISFACTION_WEIGHTS = np.array([1.0, 2.0, 0.5])
SLA_BONUS = 1.0
OVER_RESERVATION_COST = 1.0  # per unit of PRB share reserved beyond the requirement
ACTION_BOUND = 4.0

SLICE_OBS_NAMES: tuple[str, ...] = (
    "mode_active",
    "mode_capacity_off",
    "embb_now",
    "urllc_now",
    "mmtc_now",
    "embb_fc",
    "urllc_fc",
    "mmtc_fc",
    "load_fc_peak_15min",
    "absorbed_now",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
)
SLICE_OBS_DIM = len(SLICE_OBS_NAMES)
SHARES_DIM = len(SLICES) + 1  # the last share is left unreserved

# (observations, site indices) -> shares; baselines ignore the sites.
SlicePolicy = Callable[[NDArray[np.float32], NDArray[np.int64]], NDArray[np.float64]]


@dataclass(frozen=True)
class SliceContext:
    """Per-site, per-step inputs of the tactical layer under a strategic plan (sites, steps)."""

    data: DecisionData
    own: NDArray[np.float64]  # (sites, steps, 3): each slice's own demand
    mode: NDArray[np.int64]  # strategic mode in force (SLEEP where not planned)
    host: NDArray[np.float64]  # load the site carries: own served + absorbed offload
    absorbed: NDArray[np.float64]
    urllc_share: NDArray[np.float64]  # (sites,)
    mmtc_per_ue: NDArray[np.float64]  # (sites,)

    def demand(self, sites: NDArray[np.int64], steps: NDArray[np.int64]) -> NDArray[np.float64]:
        """Slice demand carried by the host (own mix scaled to what it carries)."""
        own = self.own[sites, steps]
        total = own.sum(axis=-1, keepdims=True)
        mix = np.divide(own, total, out=np.full_like(own, 1.0 / 3), where=total > 0)
        out: NDArray[np.float64] = mix * self.host[sites, steps, None]
        return out

    def valid(self, lo: int, hi: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(site, step) pairs in [lo, hi) where the site is awake and its last step is known."""
        m = self.mode[:, lo:hi] != SLEEP
        prev_known = ~np.isnan(self.host[:, lo - 1 : hi - 1])
        s, t = np.nonzero(m & prev_known)
        return s.astype(np.int64), (t + lo).astype(np.int64)


def slice_mix(
    data: DecisionData, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Each site's own slice demand per step, from its PRB load and UE count (seeded)."""
    n, steps = data.load.shape
    rng = np.random.default_rng([seed, 7_770_001])
    u_share = np.asarray(rng.uniform(URLLC_SHARE[0], URLLC_SHARE[1], size=n), dtype=np.float64)
    m_per_ue = np.asarray(rng.uniform(MMTC_PER_UE[0], MMTC_PER_UE[1], size=n), dtype=np.float64)
    burst = rng.lognormal(-0.5 * URLLC_BURST_SIGMA**2, URLLC_BURST_SIGMA, size=(n, steps))
    urllc = u_share[:, None] * data.load * burst
    mmtc = np.minimum(m_per_ue[:, None] * data.ues, data.load)
    embb = np.clip(data.load - urllc - mmtc, 0.0, None)
    return np.stack([embb, urllc, mmtc], axis=-1), u_share, m_per_ue


def context(data: DecisionData, trace: EnergyTrace | None, seed: int) -> SliceContext:
    """The tactical inputs under a strategic plan; ``None``: every site always active."""
    own, u_share, m_per_ue = slice_mix(data, seed)
    n, steps = data.load.shape
    mode = np.full((n, steps), SLEEP, dtype=np.int64)
    host = np.full((n, steps), np.nan)
    absorbed = np.full((n, steps), np.nan)
    if trace is None:
        mode[:] = ACTIVE
        host[:] = data.load
        absorbed[:] = 0.0
    else:
        sites = data.clusters.ravel()
        for j, t in enumerate(trace.starts):
            sl = slice(int(t), int(t) + DECISION_STEPS)
            mode[sites, sl] = trace.modes[j].ravel()[:, None]
            host[sites, sl] = trace.served_load[j].reshape(len(sites), DECISION_STEPS)
            absorbed[sites, sl] = trace.absorbed[j].reshape(len(sites), DECISION_STEPS)
    return SliceContext(data, own, mode, host, absorbed, u_share, m_per_ue)


def slice_obs(
    ctx: SliceContext, sites: NDArray[np.int64], steps: NDArray[np.int64]
) -> NDArray[np.float32]:
    """Observation for allocating step ``steps`` of ``sites``, made at the end of step-1."""
    d = ctx.data
    prev = steps - 1
    cap = CAPACITY[ctx.mode[sites, steps]][:, None]
    now = ctx.demand(sites, prev) / cap
    fc_load = d.fc_load[sites, prev, 0]
    urllc_fc = ctx.urllc_share[sites] * fc_load
    mmtc_fc = np.minimum(ctx.mmtc_per_ue[sites] * d.fc_ues[sites, prev, 0], fc_load)
    embb_fc = np.clip(fc_load - urllc_fc - mmtc_fc, 0.0, None)
    absorbed = ctx.absorbed[sites, prev]
    absorbed = np.where(np.isnan(absorbed), 0.0, absorbed)
    own_fc = np.stack([embb_fc, urllc_fc, mmtc_fc], axis=1)
    total = own_fc.sum(axis=1, keepdims=True)
    mix = np.divide(own_fc, total, out=np.full_like(own_fc, 1.0 / 3), where=total > 0)
    fc = (own_fc + mix * absorbed[:, None]) / cap
    peak = (d.fc_load[sites, prev, :DECISION_STEPS].max(axis=1) + absorbed) / cap[:, 0]
    m = ctx.mode[sites, steps]
    mow = d.minute_of_week[steps]
    tod, dow = 2 * np.pi * (mow % 1440) / 1440.0, 2 * np.pi * mow / (7 * 1440.0)
    cols = [
        (m == ACTIVE)[:, None],
        (m == CAP_OFF)[:, None],
        now,
        fc,
        peak[:, None],
        (absorbed / cap[:, 0])[:, None],
        np.stack([np.sin(tod), np.cos(tod), np.sin(dow), np.cos(dow)], axis=1),
    ]
    return np.concatenate(cols, axis=1).astype(np.float32)


def shares_from_action(action: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Softmax over (eMBB, URLLC, mMTC, unreserved): shares are >= 0 and sum to 1."""
    a = np.clip(np.asarray(action, dtype=np.float64), -ACTION_BOUND, ACTION_BOUND)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    out: NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return out


def requirement(ctx: SliceContext, sites: NDArray[np.int64], steps: NDArray[np.int64]) -> Any:
    """PRB share of the available carrier(s) each slice needs in the step (URLLC headroom)."""
    cap = CAPACITY[ctx.mode[sites, steps]][:, None]
    req = ctx.demand(sites, steps) / cap
    req[:, URLLC] *= URLLC_HEADROOM
    return req


def outcome(
    shares: NDArray[np.float64], req: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    """(reward, SLA met, reserved share) per site-step."""
    alloc = shares[:, : len(SLICES)]
    sat = np.where(req > 0, np.minimum(1.0, alloc / np.maximum(req, 1e-12)), 1.0)
    met: NDArray[np.bool_] = np.asarray((alloc >= req - 1e-9).all(axis=1))
    over = np.clip(alloc - req, 0.0, None).sum(axis=1)
    reward: NDArray[np.float64] = (sat @ SATISFACTION_WEIGHTS) / SATISFACTION_WEIGHTS.sum()
    reward = reward + SLA_BONUS * met - OVER_RESERVATION_COST * over
    reserved: NDArray[np.float64] = alloc.sum(axis=1)
    return reward, met, reserved


def static_shares(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.float64]:
    """Equal thirds of every PRB: the configuration most networks ship with."""
    out = np.zeros((len(obs), SHARES_DIM))
    out[:, : len(SLICES)] = 1.0 / len(SLICES)
    return out


def _proportional(obs: NDArray[np.float32], first: int) -> NDArray[np.float64]:
    d = np.clip(obs[:, first : first + len(SLICES)].astype(np.float64), 0.0, None)
    total = d.sum(axis=1, keepdims=True)
    out = np.zeros((len(obs), SHARES_DIM))
    out[:, : len(SLICES)] = np.divide(
        d, total, out=np.full_like(d, 1.0 / len(SLICES)), where=total > 0
    )
    return out


def proportional_current(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.float64]:
    """All PRBs, split in proportion to each slice's demand in the last step."""
    return _proportional(obs, SLICE_OBS_NAMES.index("embb_now"))


def proportional_forecast(
    obs: NDArray[np.float32], sites: NDArray[np.int64]
) -> NDArray[np.float64]:
    """All PRBs, split in proportion to each slice's forecast for the next step."""
    return _proportional(obs, SLICE_OBS_NAMES.index("embb_fc"))


@dataclass
class SliceTrace:
    sites: NDArray[np.int64]
    steps: NDArray[np.int64]
    shares: NDArray[np.float64]
    demand: NDArray[np.float64]  # (n, 3): share of the available PRBs each slice needed
    reward: NDArray[np.float64]
    met: NDArray[np.bool_]
    reserved: NDArray[np.float64]

    def summary(self, static_reserved: float | None = None) -> dict[str, float]:
        reserved = float(self.reserved.mean())
        out = {
            "sla_satisfaction": round(float(self.met.mean()), 5),
            "reserved_prb_pct": round(100.0 * reserved, 3),
            "reward": round(float(self.reward.mean()), 5),
            "site_steps": len(self.met),
        }
        if static_reserved:
            out["reserved_vs_static_pct"] = round(100.0 * (reserved / static_reserved - 1.0), 3)
        return out


def evaluate(ctx: SliceContext, lo: int, hi: int, policy: SlicePolicy) -> SliceTrace:
    sites, steps = ctx.valid(lo, hi)
    shares = policy(slice_obs(ctx, sites, steps), sites)
    req = requirement(ctx, sites, steps)
    reward, met, reserved = outcome(shares, req)
    return SliceTrace(sites, steps, shares, req, reward, met, reserved)


class SliceAllocationEnv(gym.Env[NDArray[np.float32], NDArray[np.float32]]):
    """Gymnasium environment: one step allocates one awake site's PRBs for 5 minutes.

    The allocation does not change future demand, so each step's reward is its whole
    value (training uses gamma = 0); an episode is ``episode_steps`` consecutive awake
    steps of one site.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, ctx: SliceContext, lo: int, hi: int, episode_steps: int = 288) -> None:
        self.ctx = ctx
        sites, steps = ctx.valid(lo, hi)
        if len(sites) == 0:
            raise DecisionError("no awake site-steps to allocate in this span")
        order = np.lexsort((steps, sites))
        self._sites, self._steps = sites[order], steps[order]
        self._obs = slice_obs(ctx, self._sites, self._steps)
        self._req = requirement(ctx, self._sites, self._steps)
        self.episode_steps = min(episode_steps, len(sites))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (SLICE_OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-ACTION_BOUND, ACTION_BOUND, (SHARES_DIM,), np.float32)
        self._rng = np.random.default_rng(0)
        self._i = 0
        self._end = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._i = int(self._rng.integers(0, len(self._sites) - self.episode_steps + 1))
        self._end = self._i + self.episode_steps
        return self._obs[self._i], {}

    def step(
        self, action: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(1, -1)
        if a.shape[1] != SHARES_DIM or not np.isfinite(a).all():
            raise DecisionInputError(f"action must be {SHARES_DIM} finite logits, got {a}")
        shares = shares_from_action(a)
        r, met, _ = outcome(shares, self._req[self._i : self._i + 1])
        self._i += 1
        truncated = self._i >= self._end
        obs = self._obs[min(self._i, len(self._obs) - 1)]
        return obs, float(r[0]), False, truncated, {"sla_met": bool(met[0])}
