"""Tactical slice allocation: every 5 minutes a site splits its PRBs between slices.

A site carries three slices: eMBB (the bulk of the traffic), URLLC (a small, bursty
share that needs 20% headroom for its latency target) and mMTC (many small devices,
following the number of attached UEs). The policy reserves a share of the available
PRBs (the strategic mode sets what is available) for each slice and leaves the rest
unreserved; an SLA is met when every slice got at least its requirement.

The policy does not pick shares from nothing: it picks a margin per slice over the
slice's expected requirement (the larger of its last step and its forecast, URLLC with
its headroom), between 1/3 and 3 times. What a slice needs is mostly known; how much
to hedge against the next five minutes is the decision. The observation and the margin
arithmetic are the decision runtime's (``fedge.decisions``); the traffic model, rewards,
baselines and the Gymnasium environment are the simulation's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from fedge.decisions import (
    ACTION_DIM,
    ACTIVE,
    CAPACITY,
    DECISION_STEPS,
    MMTC,
    SHARES_DIM,
    SLEEP,
    SLICE_OBS_DIM,
    SLICE_OBS_NAMES,
    SLICES,
    URLLC,
    URLLC_HEADROOM,
    DecisionData,
    DecisionError,
    DecisionInputError,
    SliceContext,
    shares_from_action,
    slice_obs,
)
from fedge.simulation._energy_env import EnergyTrace

URLLC_BURST_SIGMA = 0.25  # log-normal burstiness of URLLC per 5-minute step
URLLC_SHARE = (0.08, 0.15)  # per-site range of URLLC's share of the PRB demand
MMTC_PER_UE = (0.04, 0.08)  # per-site PRB share of mMTC at the training-maximum UE count
# Reward weights, fixed before any training: URLLC satisfaction first.
SATISFACTION_WEIGHTS = np.array([1.0, 2.0, 0.5])
SLA_BONUS = 1.0
OVER_RESERVATION_COST = 1.0  # per unit of PRB share reserved beyond the requirement

# (observations, site indices) -> shares; baselines ignore the sites.
SlicePolicy = Callable[[NDArray[np.float32], NDArray[np.int64]], NDArray[np.float64]]


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


def _lognormal_cdf(x: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """CDF of the mean-one log-normal burst (Abramowitz & Stegun 7.1.26 erf, error < 2e-7)."""
    z = (np.log(np.maximum(x, 1e-300)) + 0.5 * sigma**2) / (sigma * np.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * np.abs(z))
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = np.sign(z) * (1.0 - poly * np.exp(-z * z))
    out: NDArray[np.float64] = np.where(x > 0, 0.5 * (1.0 + erf), 0.0)
    return out


def _best_split_chance(
    h: NDArray[np.float64], u: NDArray[np.float64], f: NDArray[np.float64], grid: int
) -> NDArray[np.float64]:
    """Best chance over URLLC shares s that the SLA holds at load h, URLLC share u and
    mMTC share f: the mMTC slice gets f·h, URLLC s, eMBB the rest, and it holds when
    (h - 1 + s) / (u·h) <= burst <= s / (1.2·u·h)."""
    uh = np.maximum(u * h, 1e-12)
    room = np.clip(1.0 - f * h, 0.0, None)
    s = room[:, None] * np.linspace(0.0, 1.0, grid)[None, :]
    hi = s / (URLLC_HEADROOM * uh[:, None])
    lo = (h[:, None] - 1.0 + s) / uh[:, None]
    p = _lognormal_cdf(hi, URLLC_BURST_SIGMA) - _lognormal_cdf(lo, URLLC_BURST_SIGMA)
    best: NDArray[np.float64] = np.clip(p.max(axis=1), 0.0, 1.0)
    return np.where(f * h > 1.0, 0.0, best)


def sla_at_load(load: float, urllc_share: float, grid: int = 2000) -> float:
    """The best chance of meeting the SLA at ``load`` of the available PRBs, without
    foresight of the burst (mMTC share 0: it is known and does not move the split)."""
    one = np.ones(1)
    return float(_best_split_chance(one * load, one * urllc_share, one * 0.0, grid)[0])


def sla_without_foresight(
    ctx: SliceContext, sites: NDArray[np.int64], steps: NDArray[np.int64], grid: int = 200
) -> NDArray[np.float64]:
    """Per site-step, the best chance any split has of meeting the SLA when the step's
    carried load and mMTC demand are known exactly but not its URLLC burst, which the
    traffic model draws independently every step: a ceiling for every causal policy."""
    cap = CAPACITY[ctx.mode[sites, steps]]
    h = ctx.host[sites, steps] / cap
    own = ctx.own[sites, steps]
    load = ctx.data.load[sites, steps]
    f = np.divide(own[:, MMTC], load, out=np.zeros_like(load), where=load > 0)
    return _best_split_chance(h, ctx.urllc_share[sites], f, grid)


def hindsight_bound(ctx: SliceContext, lo: int, hi: int) -> dict[str, Any]:
    """Two ceilings on the SLA: every slice given exactly what it needed (steps whose slices
    need more than the carrier fail whatever the split), and the best any policy can do
    without foreseeing the URLLC burst."""
    sites, steps = ctx.valid(lo, hi)
    need = requirement(ctx, sites, steps).sum(axis=1)
    causal = sla_without_foresight(ctx, sites, steps)
    return {
        "sla_satisfaction": round(float((need <= 1.0 + 1e-9).mean()), 5),
        "reserved_prb_pct": round(100.0 * float(np.minimum(need, 1.0).mean()), 3),
        "sla_satisfaction_without_foresight": round(float(causal.mean()), 5),
        "what": "hindsight: every slice given exactly what it needed; without foresight: the "
        "step's load known, its URLLC burst not; ceilings, not methods",
    }


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
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
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
        if a.shape[1] != ACTION_DIM or not np.isfinite(a).all():
            raise DecisionInputError(f"action must be {ACTION_DIM} finite margins, got {a}")
        shares = shares_from_action(a, self._obs[self._i : self._i + 1])
        r, met, _ = outcome(shares, self._req[self._i : self._i + 1])
        self._i += 1
        truncated = self._i >= self._end
        obs = self._obs[min(self._i, len(self._obs) - 1)]
        return obs, float(r[0]), False, truncated, {"sla_met": bool(met[0])}
