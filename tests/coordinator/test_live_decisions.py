"""Live decisions: observations from ingested forecasts and actuals equal the training
builders' on the same inputs; stale inputs get the safe default; actions are signed."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fedge.coordinator import Coordinator, CoordinatorSettings, Role
from fedge.coordinator._live_decisions import (
    LIVE_MMTC_PER_UE,
    LIVE_URLLC_SHARE,
    NOW,
    SAFE_SHARES,
    SiteInputs,
    cluster_data,
    site_inputs,
)
from fedge.coordinator.api import create_app
from fedge.core import ACTION_CONTEXT, TARGET_KPIS, sign_request, step_minute_of_week
from fedge.decisions import (
    ACTIVE,
    DEFAULT_HEADROOM,
    HOUR_STEPS,
    MODES,
    SHARE_NAMES,
    SLEEP,
    DecisionData,
    SliceContext,
    energy_obs,
    slice_obs,
)
from fedge.security import InvalidSignature, SiteIdentity
from tests.coordinator.helpers import Fleet
from tests.coordinator.policies import write_policies

STEP = 300
A32 = "a" * 32
PRB, UES = TARGET_KPIS.index("dl_prb_util"), TARGET_KPIS.index("active_ues")
BODY_KEYS = {
    "action_id",
    "site_id",
    "kind",
    "mode",
    "shares",
    "decided_at",
    "valid_until",
    "policy_version",
    "source",
    "decision_id",
}


@dataclass
class Live:
    client: TestClient
    fleet: Fleet
    coordinator: Coordinator


@pytest.fixture
def live(settings: CoordinatorSettings, tmp_path: Path) -> Iterator[Live]:
    write_policies(tmp_path / "policies")
    configured = settings.model_copy(update={"policy_dir": tmp_path / "policies"})
    with TestClient(create_app(configured)) as client:
        coordinator: Coordinator = client.app.state.coordinator  # type: ignore[attr-defined]
        yield Live(client, Fleet.with_roles(client, list(Role)), coordinator)


def _values(prb: float, ues: float) -> list[float]:
    out = [1.0] * len(TARGET_KPIS)
    out[PRB], out[UES] = prb, ues
    return out


def _report(
    live: Live,
    site: SiteIdentity,
    made_step: int,
    fc: dict[str, list[tuple[float, float]]],
    actuals: dict[str, dict[int, tuple[float, float]]],
) -> None:
    """A signed forecast batch: per cell, one row per horizon of ``made_step``."""
    batch = {
        "model_version": "v1",
        "forecasts": [
            {"cell": c, "step": made_step + h + 1, "made_step": made_step, "values": _values(*v)}
            for c, rows in fc.items()
            for h, v in enumerate(rows)
        ],
        "actuals": [
            {"cell": c, "step": s, "values": _values(*v)}
            for c, rows in actuals.items()
            for s, v in rows.items()
        ],
    }
    body = json.dumps(batch).encode()
    path = "/api/v1/site/forecasts"
    answer = live.client.post(path, content=body, headers=sign_request(site, "POST", path, body))
    assert answer.status_code == 201, answer.text


Expected = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _expected_inputs(
    t: int,
    fc: dict[str, list[tuple[float, float]]],
    actuals: dict[str, dict[int, tuple[float, float]]],
) -> Expected:
    """What training's DecisionData would hold for this site (by hand, from the rows)."""
    steps = sorted({s for rows in actuals.values() for s in rows})
    mean = {s: np.mean([rows[s] for rows in actuals.values() if s in rows], axis=0) for s in steps}
    ue_max = max(1.0, *(float(v[1]) for v in mean.values()))
    load = np.array([mean[s][0] for s in range(t - 3, t)]) / 100.0
    ues = np.array([mean[s][1] for s in range(t - 3, t)]) / ue_max
    horizons = len(next(iter(fc.values())))
    per_h = np.mean([rows for rows in fc.values()], axis=0)  # (horizons, 2)
    pick = [min(j, horizons - 1) for j in range(HOUR_STEPS)]  # the longest horizon held
    return load, ues, per_h[pick, 0] / 100.0, per_h[pick, 1] / ue_max


def _training_data(ids: list[str], rows: list[Expected], t: int) -> DecisionData:
    """The training layout: steps t-3 .. t, the forecast made at the end of step t-1."""
    k = len(ids)
    load, ues = np.full((k, 4), np.nan), np.full((k, 4), np.nan)
    fc_load, fc_ues = np.full((k, 4, HOUR_STEPS), np.nan), np.full((k, 4, HOUR_STEPS), np.nan)
    for i, (ld, u, fl, fu) in enumerate(rows):
        load[i, :3], ues[i, :3], fc_load[i, 2], fc_ues[i, 2] = ld, u, fl, fu
    return DecisionData(
        site_ids=tuple(ids),
        archetypes=("urban",) * k,
        load=load,
        ues=ues,
        fc_load=fc_load,
        fc_ues=fc_ues,
        minute_of_week=step_minute_of_week(np.arange(t - 3, t + 1), STEP),
        steps_per_day=288,
        val_start=0,
        test_start=0,
        clusters=np.arange(k, dtype=np.int64).reshape(1, k),
        headroom=DEFAULT_HEADROOM,
    )


def _actions(live: Live, site: str | None = None) -> list[dict[str, object]]:
    query = f"?site_id={site}" if site else ""
    answer = live.client.get(f"/api/v1/actions{query}", headers=live.fleet.as_(Role.VIEWER))
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, object]] = answer.json()
    return rows


def _fleet_with_inputs(live: Live, now: float) -> tuple[list[SiteIdentity], list[Expected]]:
    """Three sites of one cluster, each with two cells, fresh forecasts and actuals."""
    t = int(now // STEP)
    rng = np.random.default_rng(5)
    sites = [live.fleet.enroll() for _ in range(3)]
    topology = {"clusters": [{"name": "north", "sites": [s.site_id.hex() for s in sites]}]}
    answer = live.client.put("/api/v1/topology", json=topology, headers=live.fleet.as_(Role.ADMIN))
    assert answer.status_code == 200, answer.text
    expected = []
    for k, site in enumerate(sites):
        now_level, fc_level = ((5.0, 50.0), (60.0, 60.0), (85.0, 20.0))[k]
        fc = {
            c: [(fc_level + float(rng.uniform(-5, 5)), float(rng.uniform(5, 40))) for _ in range(3)]
            for c in ("c0", "c1")
        }
        actuals = {
            c: {
                s: (now_level + float(rng.uniform(0, 5)), float(rng.uniform(5, 40)))
                for s in range(t - 8, t)
            }
            for c in ("c0", "c1")
        }
        _report(live, site, t - 1, fc, actuals)
        expected.append(_expected_inputs(t, fc, actuals))
    return sites, expected


def test_live_observations_equal_the_training_builders(live: Live) -> None:
    now = time.time()
    t = int(now // STEP)
    sites, expected = _fleet_with_inputs(live, now)
    ids = [s.site_id.hex() for s in sites]
    assert live.coordinator.live is not None
    _, inputs, _ = live.coordinator.live.read(t, now)
    got = [inputs[i] for i in ids]
    assert all(isinstance(g, SiteInputs) for g in got)
    rows = [g for g in got if isinstance(g, SiteInputs)]
    built = cluster_data(ids, ["urban"] * 3, rows, t, STEP)
    trained = _training_data(ids, expected, t)
    for name in ("load", "ues", "fc_load", "fc_ues", "minute_of_week", "clusters"):
        np.testing.assert_allclose(getattr(built, name), getattr(trained, name), rtol=1e-12)

    # the energy observations, position by position, and the modes the policy picks
    service = live.coordinator.decisions
    assert service is not None
    modes = np.full((1, 3), ACTIVE, dtype=np.int64)
    prev = modes.copy()
    for pos in range(3):
        live_obs = energy_obs(built, built.clusters, NOW, pos, modes, prev)
        train_obs = energy_obs(trained, trained.clusters, NOW, pos, modes, prev)
        np.testing.assert_allclose(live_obs, train_obs, rtol=1e-6)
        modes[0, pos] = service.strategic([ids[pos]], train_obs).modes[0]
    stored = live.coordinator.live.tick("strategic", now)
    assert len(stored) == 3
    by_site = {a["site_id"]: a for a in _actions(live)}
    assert [by_site[i]["mode"] for i in ids] == [MODES[m] for m in modes[0]]
    assert {a["source"] for a in by_site.values()} == {"federated_forecast"}
    assert len(set(modes[0].tolist())) > 1  # the inputs make the policy choose differently

    # the slice observation under the modes now in force, and the shares sent
    awake = [i for i, m in enumerate(modes[0]) if m != SLEEP]
    ctx = SliceContext(
        data=trained,
        own=np.stack(
            [
                np.clip(
                    trained.load
                    - LIVE_URLLC_SHARE * trained.load
                    - np.minimum(LIVE_MMTC_PER_UE * trained.ues, trained.load),
                    0.0,
                    None,
                ),
                LIVE_URLLC_SHARE * trained.load,
                np.minimum(LIVE_MMTC_PER_UE * trained.ues, trained.load),
            ],
            axis=-1,
        ),
        mode=np.repeat(modes[0][:, None], 4, axis=1),
        host=trained.load.copy(),
        absorbed=np.zeros_like(trained.load),
        urllc_share=np.full(3, LIVE_URLLC_SHARE),
        mmtc_per_ue=np.full(3, LIVE_MMTC_PER_UE),
    )
    sub = np.array(awake, dtype=np.int64)
    obs = slice_obs(ctx, sub, np.full(len(sub), NOW, dtype=np.int64))
    want = service.tactical([ids[i] for i in awake], obs).shares
    tactical = live.coordinator.live.tick("tactical", now)
    assert len(tactical) == len(awake)  # an asleep site has no PRBs to split
    sent = {a["site_id"]: a for a in _actions(live) if a["kind"] == "tactical"}
    for row, i in zip(want, awake, strict=True):
        shares = sent[ids[i]]["shares"]
        assert isinstance(shares, dict) and tuple(shares) == SHARE_NAMES
        assert sum(shares.values()) <= 1.0
        np.testing.assert_allclose(list(shares.values()), row, atol=2e-6)


def test_fewer_horizons_hold_the_longest_and_missing_steps_are_held() -> None:
    t, now = 1000, 1000 * STEP + 10.0
    forecasts = [("c0", t - 1 + h, t - 1, _values(10.0 * h, 4.0)) for h in (1, 2, 3)]
    actuals = [("c0", t - 1, _values(50.0, 8.0)), ("c0", t - 5, _values(30.0, 2.0))]
    got = site_inputs(forecasts, actuals, t, now, STEP, 600.0)
    assert isinstance(got, SiteInputs)
    assert got.fc_load.tolist() == [0.1, 0.2] + [0.3] * 10
    assert got.load.tolist() == [0.3, 0.3, 0.5]  # t-3, t-2 held from t-5
    assert got.ues.tolist() == [0.25, 0.25, 1.0]  # over the day's largest, 8 UEs
    # a forecast made a step earlier is shifted: step t is its second horizon
    older = [("c0", t - 2 + h, t - 2, _values(10.0 * h, 4.0)) for h in (1, 2, 3)]
    got = site_inputs(older, actuals, t, now, STEP, 600.0)
    assert isinstance(got, SiteInputs)
    assert got.fc_load.tolist() == [0.2] + [0.3] * 11


@pytest.mark.parametrize(
    ("made", "actual", "why"),
    [
        (None, 999, "no forecast"),
        (990, 999, "newest forecast"),
        (999, None, "no actuals"),
        (999, 990, "newest actual"),
    ],
)
def test_stale_or_missing_inputs_are_named(made: int | None, actual: int | None, why: str) -> None:
    t, now = 1000, 1000 * STEP + 10.0
    forecasts = [] if made is None else [("c0", made + 1, made, _values(10.0, 1.0))]
    actuals = [] if actual is None else [("c0", actual, _values(10.0, 1.0))]
    got = site_inputs(forecasts, actuals, t, now, STEP, 600.0)
    assert isinstance(got, str) and got.startswith(why)


def test_stale_sites_get_the_safe_default_recorded_as_such(live: Live) -> None:
    now = time.time()
    t = int(now // STEP)
    stale, silent = live.fleet.enroll(), live.fleet.enroll()
    old = t - 20  # forecasts and actuals of 20 steps ago: older than twice 300 s
    _report(live, stale, old, {"c0": [(5.0, 3.0)] * 3}, {"c0": {old: (5.0, 3.0)}})
    assert live.coordinator.live is not None
    assert len(live.coordinator.live.tick("strategic", now)) == 2
    assert len(live.coordinator.live.tick("tactical", now)) == 2
    for site in (stale, silent):
        rows = _actions(live, site.site_id.hex())
        assert {(a["kind"], a["source"]) for a in rows} == {
            ("strategic", "safe_default"),
            ("tactical", "safe_default"),
        }
        strategic = next(a for a in rows if a["kind"] == "strategic")
        tactical = next(a for a in rows if a["kind"] == "tactical")
        assert strategic["mode"] == "active" and strategic["shares"] is None
        assert tactical["shares"] == SAFE_SHARES and tactical["mode"] is None
    with live.coordinator.engine.connect() as conn:
        logged = conn.execute(text("SELECT kind, policy_version, action FROM decisions")).all()
    assert len(logged) == 4
    version = live.coordinator.decisions.version if live.coordinator.decisions else None
    for kind, policy_version, raw in logged:
        action = json.loads(raw) if isinstance(raw, str) else raw
        assert policy_version == version
        assert action["source"] == "safe_default" and action["reason"]
        assert ("mode" in action) == (kind == "strategic")


def test_an_action_is_signed_by_the_coordinator_and_matches_the_contract(live: Live) -> None:
    site = live.fleet.enroll()
    now = time.time()
    assert live.coordinator.live is not None
    [action_id] = live.coordinator.live.tick("strategic", now)
    path = "/api/v1/site/actions?after=0&wait=0"
    answer = live.client.get(path, headers=sign_request(site, "GET", path))
    assert answer.status_code == 200, answer.text
    [signed] = answer.json()["actions"]
    body = base64.b64decode(signed["body_base64"])
    signature = base64.b64decode(signed["signature_base64"])
    live.fleet.authority().verify_key().verify(signature, body, ACTION_CONTEXT)
    with pytest.raises(InvalidSignature):
        live.fleet.authority().verify_key().verify(signature, body + b" ", ACTION_CONTEXT)
    fields = json.loads(body)
    assert set(fields) == BODY_KEYS
    assert fields["action_id"] == action_id and fields["site_id"] == site.site_id.hex()
    assert fields["kind"] == "strategic" and fields["mode"] in MODES
    assert fields["shares"] is None
    assert fields["valid_until"] == fields["decided_at"] + 2 * 900.0
    assert fields["policy_version"] == live.coordinator.decisions.version  # type: ignore[union-attr]
    row = _actions(live)[0]
    assert row["decision_id"] == fields["decision_id"] and row["id"] == action_id


def test_one_worker_decides_a_slot(live: Live) -> None:
    """A second coordinator on the same database (another worker) skips a taken slot."""
    live.fleet.enroll()
    other = Coordinator(live.coordinator.settings, recover=False)
    try:
        assert other.live is not None and live.coordinator.live is not None
        now = time.time()
        assert len(live.coordinator.live.tick("strategic", now)) == 1
        assert other.live.tick("strategic", now) == []
        assert len(other.live.tick("tactical", now)) == 1
    finally:
        other.close()


def test_the_live_mix_is_the_training_median_site() -> None:
    from fedge.simulation._slice_env import MMTC_PER_UE, URLLC_SHARE

    assert sum(URLLC_SHARE) / 2 == pytest.approx(LIVE_URLLC_SHARE)
    assert sum(MMTC_PER_UE) / 2 == pytest.approx(LIVE_MMTC_PER_UE)


@pytest.mark.slow
def test_the_loop_decides_on_its_own_and_stops_on_close(
    settings: CoordinatorSettings, tmp_path: Path
) -> None:
    write_policies(tmp_path / "policies")
    fast = settings.model_copy(
        update={
            "policy_dir": tmp_path / "policies",
            "strategic_interval_seconds": 1.0,
            "tactical_interval_seconds": 1.0,
        }
    )
    with TestClient(create_app(fast)) as client:
        fleet = Fleet.with_roles(client, list(Role))
        site = fleet.enroll()
        path = "/api/v1/site/actions?after=0&wait=15"
        answer = client.get(path, headers=sign_request(site, "GET", path))
        assert answer.status_code == 200, answer.text
        assert answer.json()["actions"]
        coordinator: Coordinator = client.app.state.coordinator  # type: ignore[attr-defined]
        loop = coordinator.live
        assert loop is not None
    assert not loop._loop.running  # joined by close()


def test_live_decision_settings_are_bounded() -> None:
    from fedge.coordinator import SettingsError, load_settings

    assert load_settings(tactical_interval_seconds=7.0).forecast_age_limit == 14.0
    assert load_settings(max_forecast_age_seconds=30.0).forecast_age_limit == 30.0
    for bad in (
        {"strategic_interval_seconds": 0},
        {"tactical_interval_seconds": 86401},
        {"max_forecast_age_seconds": -1},
        {"decision_step_seconds": 0},
    ):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            load_settings(**bad)


def test_an_action_body_keeps_to_its_kind() -> None:
    from fedge.coordinator._actions import action_body

    common: dict[str, Any] = {
        "decided_at": 1.0,
        "valid_until": 2.0,
        "policy_version": "p",
        "source": "safe_default",
        "decision_id": 1,
    }
    ok = action_body(1, A32, "tactical", mode=None, shares=dict(SAFE_SHARES), **common)
    assert json.loads(ok)["shares"] == SAFE_SHARES
    over = {**SAFE_SHARES, "unreserved": 0.5}
    for kind, mode, shares in [
        ("strategic", "asleep", None),
        ("strategic", "active", dict(SAFE_SHARES)),
        ("tactical", "active", dict(SAFE_SHARES)),
        ("tactical", None, {"embb": 1.0}),
        ("tactical", None, over),
        ("tactical", None, {**SAFE_SHARES, "embb": float("nan")}),
    ]:
        with pytest.raises(ValueError, match="action"):
            action_body(1, A32, kind, mode=mode, shares=shares, **common)  # type: ignore[arg-type]
