"""The tactical (slice) observation and how a policy's margins become PRB shares.

Every 5 minutes an awake site splits its available PRBs between three slices: eMBB (the
bulk of the traffic), URLLC (a small, bursty share that needs 20% headroom for its
latency target) and mMTC (many small devices). The policy picks a margin per slice over
the slice's expected requirement (the larger of its last step and its forecast, URLLC
with its headroom), between 1/3 and 3 times; :func:`shares_from_action` turns margins
into shares, and the exported ONNX policy computes the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import TIME_FEATURE_NAMES, time_features
from fedge.decisions._data import DECISION_STEPS, DecisionData
from fedge.decisions._energy import ASLEEP, CAPACITY
from fedge.decisions._power import ACTIVE, CAP_OFF

SLICES: tuple[str, ...] = ("embb", "urllc", "mmtc")
EMBB, URLLC, MMTC = 0, 1, 2
URLLC_HEADROOM = 1.2  # URLLC must have 20% more PRBs than its demand
MARGIN_RANGE = 3.0  # a margin spans MARGIN_RANGE**-1 .. MARGIN_RANGE (action -1 .. 1)
BASE_FLOOR = 0.005  # expected share of a slice idle in the last step and the forecast

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
    *TIME_FEATURE_NAMES,
)
SLICE_OBS_DIM = len(SLICE_OBS_NAMES)
SHARES_DIM = len(SLICES) + 1  # the last share is left unreserved
SHARE_NAMES: tuple[str, ...] = (*SLICES, "unreserved")
ACTION_DIM = len(SLICES)  # one margin per slice


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
        m = ~ASLEEP[self.mode[:, lo:hi]]
        prev_known = ~np.isnan(self.host[:, lo - 1 : hi - 1])
        s, t = np.nonzero(m & prev_known)
        return s.astype(np.int64), (t + lo).astype(np.int64)


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
    cols = [
        (m == ACTIVE)[:, None],
        (m == CAP_OFF)[:, None],
        now,
        fc,
        peak[:, None],
        (absorbed / cap[:, 0])[:, None],
        time_features(d.minute_of_week[steps]),
    ]
    return np.concatenate(cols, axis=1).astype(np.float32)


def expected_requirement(obs: NDArray[np.float32]) -> NDArray[np.float64]:
    """Each slice's expected share: max(last step, forecast), URLLC with its headroom."""
    i_now, i_fc = SLICE_OBS_NAMES.index("embb_now"), SLICE_OBS_NAMES.index("embb_fc")
    o = np.asarray(obs, dtype=np.float64)
    base = np.maximum(o[:, i_now : i_now + len(SLICES)], o[:, i_fc : i_fc + len(SLICES)])
    base = np.clip(base, 0.0, None) + BASE_FLOOR
    base[:, URLLC] *= URLLC_HEADROOM
    out: NDArray[np.float64] = base
    return out


def fit_carrier(want: NDArray[np.float64], base: NDArray[np.float64]) -> NDArray[np.float64]:
    """Shares within one carrier: ``want`` when it fits; otherwise each slice first gets
    the smaller of its wish and its expected requirement, and the rest is split by how
    much more each wished for. Rows are >= 0 and sum to <= 1."""
    lo = np.minimum(want, base)
    lo_sum = lo.sum(axis=1, keepdims=True)
    extra = want - lo
    extra_sum = extra.sum(axis=1, keepdims=True)
    slack = np.clip(1.0 - lo_sum, 0.0, None)
    squeezed = np.where(
        lo_sum >= 1.0,
        lo / np.maximum(lo_sum, 1e-12),
        lo + extra * slack / np.maximum(extra_sum, 1e-12),
    )
    fits = want.sum(axis=1, keepdims=True) <= 1.0
    out: NDArray[np.float64] = np.where(fits, want, squeezed)
    return out


def shares_from_action(
    action: NDArray[np.floating[Any]], obs: NDArray[np.float32]
) -> NDArray[np.float64]:
    """Margins (one per slice, -1..1) over the expected requirement -> (eMBB, URLLC, mMTC,
    unreserved) shares, >= 0 and summing to 1."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    base = expected_requirement(obs)
    alloc = fit_carrier(base * MARGIN_RANGE**a, base)
    unreserved = np.clip(1.0 - alloc.sum(axis=1, keepdims=True), 0.0, None)
    return np.concatenate([alloc, unreserved], axis=1)
