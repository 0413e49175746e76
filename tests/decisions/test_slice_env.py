from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.decisions import (
    ACTION_DIM,
    BASE_FLOOR,
    CAP_OFF,
    MARGIN_RANGE,
    SHARES_DIM,
    SLEEP,
    SLICE_OBS_DIM,
    SLICE_OBS_NAMES,
    URLLC,
    URLLC_HEADROOM,
    DecisionData,
    DecisionError,
    DecisionInputError,
    expected_requirement,
    fit_carrier,
    shares_from_action,
)
from fedge.simulation._energy_env import always_on, rollout, threshold_policy
from fedge.simulation._slice_env import (
    SliceAllocationEnv,
    context,
    evaluate,
    hindsight_bound,
    outcome,
    proportional_current,
    proportional_forecast,
    requirement,
    slice_mix,
    static_shares,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-50, 50), min_size=ACTION_DIM, max_size=ACTION_DIM),
    st.lists(st.floats(-2, 3), min_size=SLICE_OBS_DIM, max_size=SLICE_OBS_DIM),
)
def test_shares_are_a_partition(action: list[float], obs: list[float]) -> None:
    shares = shares_from_action(np.array([action]), np.array([obs], dtype=np.float32))
    assert shares.shape == (1, SHARES_DIM)
    assert (shares >= 0).all() and shares.sum() == pytest.approx(1.0)


def test_margins_scale_the_expected_requirement() -> None:
    obs = np.zeros((1, SLICE_OBS_DIM), dtype=np.float32)
    obs[0, SLICE_OBS_NAMES.index("embb_now")] = 0.2
    obs[0, SLICE_OBS_NAMES.index("embb_fc")] = 0.3  # the larger of now and forecast
    obs[0, SLICE_OBS_NAMES.index("urllc_fc")] = 0.05
    obs[0, SLICE_OBS_NAMES.index("mmtc_now")] = 0.02
    base = expected_requirement(obs)
    np.testing.assert_allclose(
        base[0], [0.3 + BASE_FLOOR, (0.05 + BASE_FLOOR) * URLLC_HEADROOM, 0.02 + BASE_FLOOR]
    )
    shares = shares_from_action(np.array([[0.0, 1.0, -1.0]]), obs)
    np.testing.assert_allclose(
        shares[0, :3], base[0] * [1.0, MARGIN_RANGE, 1 / MARGIN_RANGE], rtol=1e-12
    )
    assert shares[0, 3] == pytest.approx(1 - shares[0, :3].sum())


def test_a_full_carrier_keeps_the_expected_requirement_first() -> None:
    base = np.array([[0.5, 0.2, 0.1], [0.7, 0.3, 0.2]])
    want = base * np.array([[1.5, 2.0, 1.0], [1.0, 1.0, 1.0]])
    shares = fit_carrier(want, base)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    # Row 0 fits its base (0.8): each slice keeps it, the slack goes by the extra asked.
    assert (shares[0] >= base[0] - 1e-12).all()
    np.testing.assert_allclose(shares[0] - base[0], [0.25 / 0.45 * 0.2, 0.2 / 0.45 * 0.2, 0.0])
    # Row 1 needs more than the carrier: split in proportion to the requirement.
    np.testing.assert_allclose(shares[1], base[1] / 1.2)
    fits = np.array([[0.1, 0.1, 0.1]])
    assert (fit_carrier(fits, fits) == fits).all()


def test_hindsight_bound_is_a_ceiling(data: DecisionData) -> None:
    ctx = context(data, None, 0)
    bound = hindsight_bound(ctx, data.test_start, data.steps)
    for policy in (static_shares, proportional_current, proportional_forecast):
        tr = evaluate(ctx, data.test_start, data.steps, policy)
        assert tr.met.mean() <= bound["sla_satisfaction"]
    assert 0 < bound["reserved_prb_pct"] <= 100.0
    quiet = context(replace(data, load=data.load * 0.1), None, 0)
    assert hindsight_bound(quiet, data.test_start, data.steps)["sla_satisfaction"] == 1.0


def test_slice_mix_adds_up_and_is_seeded(data: DecisionData) -> None:
    own, u, m = slice_mix(data, 0)
    assert (own >= 0).all() and u.shape == m.shape == (data.num_sites,)
    assert ((u >= 0.08) & (u <= 0.15)).all() and ((m >= 0.04) & (m <= 0.08)).all()
    np.testing.assert_allclose(own.sum(axis=-1), np.maximum(data.load, own[..., 1:].sum(-1)))
    again, *_ = slice_mix(data, 0)
    other, *_ = slice_mix(data, 1)
    assert (own == again).all() and not (own == other).all()


def test_baselines_split_every_prb(data: DecisionData) -> None:
    ctx = context(data, None, 0)
    for policy in (static_shares, proportional_current, proportional_forecast):
        tr = evaluate(ctx, data.test_start, data.steps, policy)
        np.testing.assert_allclose(tr.shares.sum(axis=1), 1.0)
        np.testing.assert_allclose(tr.reserved, 1.0)
    static = evaluate(ctx, data.test_start, data.steps, static_shares)
    assert static.shares[:, :3] == pytest.approx(1 / 3)


def test_requirement_and_outcome(data: DecisionData) -> None:
    ctx = context(data, None, 0)
    sites, steps = ctx.valid(data.test_start, data.test_start + 10)
    req = requirement(ctx, sites, steps)
    np.testing.assert_allclose(req[:, URLLC], ctx.demand(sites, steps)[:, URLLC] * URLLC_HEADROOM)
    exact = np.concatenate([req, np.clip(1 - req.sum(1, keepdims=True), 0, None)], axis=1)
    r_exact, met, reserved = outcome(exact, req)
    assert met.all() and reserved == pytest.approx(req.sum(axis=1))
    more = exact.copy()
    more[:, 0] += 0.1
    r_more, met_more, _ = outcome(more, req)
    assert met_more.all() and (r_more < r_exact).all()  # over-reservation costs
    less = exact.copy()
    less[:, URLLC] *= 0.5
    r_less, met_less, _ = outcome(less, req)
    assert not met_less.any() and (r_less < r_exact).all()


def test_strategic_mode_sets_capacity(data: DecisionData) -> None:
    trace = rollout(data, data.block_starts("test"), threshold_policy(0.4, 0.5))
    ctx = context(data, trace, 0)
    sites, steps = ctx.valid(data.test_start, data.steps)
    assert (ctx.mode[sites, steps] != SLEEP).all()
    i_off = SLICE_OBS_NAMES.index("mode_capacity_off")
    from fedge.decisions import slice_obs

    obs = slice_obs(ctx, sites, steps)
    off = ctx.mode[sites, steps] == CAP_OFF
    assert off.any() and (obs[off, i_off] == 1).all()
    # Capacity off halves the PRBs: the same demand needs twice the share.
    np.testing.assert_allclose(
        requirement(ctx, sites[off], steps[off]),
        2 * ctx.demand(sites[off], steps[off]) * np.array([1, URLLC_HEADROOM, 1]),
    )


def test_env_is_deterministic_and_validates(data: DecisionData) -> None:
    trace = rollout(data, data.block_starts("train"), always_on)
    ctx = context(data, trace, 0)
    lo, hi = int(trace.starts[0]), int(trace.starts[-1]) + 3
    e1, e2 = SliceAllocationEnv(ctx, lo, hi, 50), SliceAllocationEnv(ctx, lo, hi, 50)
    o1, _ = e1.reset(seed=9)
    o2, _ = e2.reset(seed=9)
    assert o1.shape == (SLICE_OBS_DIM,) and (o1 == o2).all()
    rng = np.random.default_rng(0)
    for n in range(50):
        a = rng.normal(size=ACTION_DIM).astype(np.float32)
        s1, r1, _, t1, i1 = e1.step(a)
        s2, r2, _, t2, _ = e2.step(a)
        assert (s1 == s2).all() and r1 == r2 and t1 == t2 and t1 == (n == 49)
        assert isinstance(i1["sla_met"], bool)
    with pytest.raises(DecisionInputError):
        e1.step(np.array([np.nan, 0, 0], dtype=np.float32))
    with pytest.raises(DecisionInputError):
        e1.step(np.zeros(SHARES_DIM, dtype=np.float32))
    with pytest.raises(DecisionError, match="no awake"):
        SliceAllocationEnv(ctx, data.test_start, data.steps)
