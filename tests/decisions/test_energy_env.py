from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.decisions import (
    ACTIVE,
    CAP_OFF,
    DEFAULT_HEADROOM,
    ENERGY_OBS_DIM,
    ENERGY_OBS_NAMES,
    OFFLOAD_EFFICIENCY,
    SLEEP,
    DecisionData,
    DecisionError,
    DecisionInputError,
    energy_obs,
    make_clusters,
)
from fedge.simulation._energy_env import (
    P_FULL_W,
    EnergySavingEnv,
    always_on,
    hindsight_bound,
    random_policy,
    resolve,
    rollout,
    site_costs,
    site_power,
    threshold_policy,
    wake_power,
)


def test_earth_power_per_mode() -> None:
    modes = np.array([ACTIVE, ACTIVE, CAP_OFF, CAP_OFF, SLEEP])
    used = np.array([0.0, 1.0, 0.0, 0.5, 0.0])
    # EARTH macro: P0 130 W, Δp 4.7, Pmax 20 W, sleep 75 W; two carriers per site.
    expected = [2 * 130.0, 2 * (130 + 4.7 * 20), 130 + 75, 130 + 4.7 * 20 + 75, 2 * 75.0]
    np.testing.assert_allclose(site_power(modes, used), expected)
    assert pytest.approx(448.0) == P_FULL_W


def test_wake_up_costs_only_when_carriers_wake() -> None:
    prev = np.array([SLEEP, SLEEP, CAP_OFF, ACTIVE, ACTIVE])
    now = np.array([ACTIVE, CAP_OFF, ACTIVE, SLEEP, ACTIVE])
    extra = wake_power(prev, now)
    assert extra[0] == pytest.approx(2 * extra[1]) and extra[1] == pytest.approx(extra[2])
    assert extra[1] > 0 and extra[3] == 0 and extra[4] == 0


@settings(max_examples=200, deadline=None)
@given(
    modes=st.lists(st.integers(0, 2), min_size=8, max_size=8),
    demand=st.lists(st.floats(0.0, 1.3), min_size=24, max_size=24),
    prev=st.lists(st.integers(0, 2), min_size=8, max_size=8),
)
def test_offload_accounting(modes: list[int], demand: list[float], prev: list[int]) -> None:
    m = np.array(modes).reshape(2, 4)
    d = np.array(demand).reshape(2, 4, 3)
    out = resolve(m, d, np.array(prev).reshape(2, 4))
    # Every unit of demand is served at home, by a neighbour or not at all.
    np.testing.assert_allclose(out.own_served + out.offloaded_served + out.unserved, d, atol=1e-12)
    assert (out.unserved >= -1e-12).all()
    # A neighbour never takes more than its spare capacity, and pays the cell-edge penalty.
    assert (out.absorbed <= out.spare_before + 1e-12).all()
    np.testing.assert_allclose(
        out.absorbed.sum(axis=1) * OFFLOAD_EFFICIENCY, out.offloaded_served.sum(axis=1), atol=1e-12
    )
    # Nothing is left unserved while the cluster still had room for it.
    room = (out.spare_before - out.absorbed).sum(axis=1)
    assert ((out.unserved.sum(axis=1) < 1e-9) | (room < 1e-9)).all()
    # Headroom for the slices: offload never fills a site past it, nor does a reduced
    # mode load a site past it with its own demand; only an active site may exceed it,
    # and only with its own users.
    cap = np.array([1.0, 0.5, 0.0])[m][..., None]
    carried = out.own_served + out.absorbed
    absorbing = out.absorbed > 1e-12
    assert (carried[absorbing] <= DEFAULT_HEADROOM * cap.repeat(3, -1)[absorbing] + 1e-9).all()
    reduced = (m != ACTIVE)[..., None].repeat(3, -1)
    assert (carried[reduced] <= DEFAULT_HEADROOM * cap.repeat(3, -1)[reduced] + 1e-9).all()
    # Energy: the EARTH power of what each site carries, plus wake-up.
    used = out.own_served + out.absorbed
    expected = site_power(m, used).mean(axis=-1) + wake_power(np.array(prev).reshape(2, 4), m)
    np.testing.assert_allclose(out.power_w, expected)
    cost, unserved, violated = site_costs(out)
    assert (violated == (out.unserved > 1e-6).any(axis=-1)).all()
    assert (cost >= out.power_w / P_FULL_W - 1e-12).all()
    np.testing.assert_allclose(unserved, out.unserved.mean(axis=-1))


def test_all_asleep_serves_nothing_and_always_on_serves_all(data: DecisionData) -> None:
    d = np.full((1, 4, 3), 0.4)
    asleep = resolve(np.full((1, 4), SLEEP), d, np.full((1, 4), SLEEP))
    np.testing.assert_allclose(asleep.unserved, d)
    trace = rollout(data, data.block_starts("test"), always_on)
    assert not trace.violated.any()
    assert trace.summary()["energy_saved_pct"] == 0.0


def test_threshold_and_random_policies(data: DecisionData) -> None:
    starts = data.block_starts("val")
    base = float(rollout(data, starts, always_on).power_w.sum())
    never = rollout(data, starts, threshold_policy(0.0, 0.0)).summary(base)
    assert never["energy_saved_pct"] == 0.0 and never["mode_share"]["active"] == 1.0
    eager = rollout(data, starts, threshold_policy(0.4, 0.5)).summary(base)
    assert eager["energy_saved_pct"] > 0.0
    a = rollout(data, starts, random_policy(1)).modes
    b = rollout(data, starts, random_policy(1)).modes
    assert (a == b).all() and len(np.unique(a)) == 3


def test_block_starts_leave_room_for_the_hour(data: DecisionData) -> None:
    for split in ("train", "val", "test"):
        s = data.block_starts(split)
        assert (s % 3 == 0).all() and s.min() >= 12
        assert np.isfinite(data.fc_load[:, s - 1]).all()
    assert data.block_starts("test").min() >= data.test_start


def test_env_rewards_sum_to_saving_and_are_deterministic(data: DecisionData) -> None:
    env1, env2 = EnergySavingEnv(data, episode_blocks=8), EnergySavingEnv(data, episode_blocks=8)
    o1, i1 = env1.reset(seed=5)
    o2, i2 = env2.reset(seed=5)
    assert i1 == i2 and (o1 == o2).all() and o1.shape == (ENERGY_OBS_DIM,)
    rng = np.random.default_rng(0)
    k = data.clusters.shape[1]
    block_reward, truncated, steps = 0.0, False, 0
    while not truncated:
        a = int(rng.integers(0, 3))
        start_block = env1._block
        cluster, modes_before, prev = env1._cluster, env1._modes.copy(), env1._prev.copy()
        o1, r1, _, truncated, _ = env1.step(a)
        o2, r2, _, t2, _ = env2.step(a)
        assert (o1 == o2).all() and r1 == r2 and truncated == t2
        block_reward += r1
        steps += 1
        if steps % k == 0:
            modes_before[0, -1] = a
            t = int(env1.starts[start_block])
            d = data.load[cluster, t : t + 3]
            on = site_costs(resolve(np.zeros_like(modes_before), d, np.zeros_like(prev)))[0].sum()
            true = site_costs(resolve(modes_before, d, prev))[0].sum()
            assert block_reward == pytest.approx(on - true)
            block_reward = 0.0
    assert steps == 8 * k


def test_env_observation_sees_earlier_decisions(data: DecisionData) -> None:
    env = EnergySavingEnv(data, episode_blocks=4)
    env.reset(seed=0)
    i_asleep = ENERGY_OBS_NAMES.index("neighbours_asleep")
    i_spare = ENERGY_OBS_NAMES.index("neighbour_spare_15min")
    obs0, *_ = env.step(SLEEP)  # site 0 sleeps; site 1 now sees it
    assert obs0[i_asleep] == pytest.approx(1 / 3)
    env2 = EnergySavingEnv(data, episode_blocks=4)
    env2.reset(seed=0)
    obs_on, *_ = env2.step(ACTIVE)
    assert obs0[i_spare] < obs_on[i_spare]


def test_env_rejects_bad_actions_and_splits(data: DecisionData) -> None:
    env = EnergySavingEnv(data)
    env.reset(seed=0)
    with pytest.raises(DecisionInputError):
        env.step(3)
    with pytest.raises(DecisionInputError):
        env.step(-1)
    with pytest.raises(DecisionError, match="cluster size"):
        make_clusters(8, 1)
    with pytest.raises(DecisionError, match="cannot form"):
        make_clusters(3, 4)


def test_hindsight_bound_is_a_ceiling(data: DecisionData) -> None:
    starts = data.block_starts("test")
    bound = hindsight_bound(data, starts)
    assert bound is not None and bound["energy_saved_pct"] > 0
    base = float(rollout(data, starts, always_on).power_w.sum())
    checked = 0
    for sleep_below in (0.0, 0.1, 0.2):
        for off_below in (0.1, 0.3, 0.5):
            trace = rollout(data, starts, threshold_policy(sleep_below, off_below))
            if trace.unserved.max() > 0:
                continue
            checked += 1
            assert trace.summary(base)["energy_saved_pct"] <= bound["energy_saved_pct"]
    assert checked > 0


def test_hindsight_bound_of_an_idle_cluster_is_deep_sleep(data: DecisionData) -> None:
    idle = replace(data, load=np.zeros_like(data.load))
    bound = hindsight_bound(idle, idle.block_starts("test"))
    # Nothing to serve: every carrier asleep, 2 x 75 W against 2 x 130 W.
    assert bound is not None
    assert bound["energy_saved_pct"] == pytest.approx(100 * (1 - 75 / 130), abs=1e-3)


def test_hindsight_bound_refuses_clusters_too_large_to_enumerate(data: DecisionData) -> None:
    big = replace(data, clusters=make_clusters(data.num_sites, 8))
    assert hindsight_bound(big, big.block_starts("test")) is None


def test_headroom_is_where_the_slices_stop_meeting_their_sla() -> None:
    from fedge.simulation._slice_env import URLLC_SHARE, sla_at_load

    median_site = sum(URLLC_SHARE) / 2
    assert sla_at_load(DEFAULT_HEADROOM, median_site) >= 0.99
    assert sla_at_load(DEFAULT_HEADROOM + 0.01, median_site) < 0.99


def test_headroom_limits_what_neighbours_take() -> None:
    # Site 0 asleep with 0.6 of demand; three neighbours each carrying 0.5 of their own.
    modes = np.array([[SLEEP, ACTIVE, ACTIVE, ACTIVE]])
    demand = np.array([[[0.6] * 3, [0.5] * 3, [0.5] * 3, [0.5] * 3]])
    tight = resolve(modes, demand, modes, headroom=0.6)
    loose = resolve(modes, demand, modes, headroom=1.0)
    # 0.1 of room each at 0.6: 0.3 of PRBs serve 0.24 of demand; at 1.0 all of it fits.
    np.testing.assert_allclose(tight.unserved[0, 0], 0.6 - 3 * 0.1 * OFFLOAD_EFFICIENCY)
    np.testing.assert_allclose(loose.unserved[0, 0], 0.0, atol=1e-12)
    assert (tight.own_served[0, 1:] + tight.absorbed[0, 1:] <= 0.6 + 1e-12).all()


def test_observation_counts_room_under_the_headroom(data: DecisionData) -> None:
    t = int(data.block_starts("test")[0])
    modes = np.zeros_like(data.clusters)
    i = ENERGY_OBS_NAMES.index("neighbour_spare_15min")
    low = energy_obs(replace(data, headroom=0.5), data.clusters, t, 0, modes, modes)[:, i]
    high = energy_obs(replace(data, headroom=1.0), data.clusters, t, 0, modes, modes)[:, i]
    assert (low < high).all()
