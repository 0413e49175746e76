"""Training smoke runs, ONNX parity with SB3, the DecisionService and its validation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from fedge.core import ENERGY_ONNX, MANIFEST, SLICE_ONNX
from fedge.decisions import (
    ENERGY_OBS_DIM,
    SHARES_DIM,
    SLICE_OBS_DIM,
    DecisionInputError,
    DecisionService,
    PolicyError,
    UnknownSiteError,
    energy_obs,
    shares_from_action,
    slice_obs,
)
from fedge.simulation._decision_eval import held_out
from fedge.simulation._decision_report import decision_html, decision_plots
from fedge.simulation._decision_train import Trained
from fedge.simulation._energy_env import rollout
from fedge.simulation._slice_env import context

pytestmark = pytest.mark.slow


def _energy_obs(trained: Trained) -> np.ndarray:
    d = trained.data
    rows = []
    for t in d.block_starts("val")[:20]:
        modes = np.random.default_rng(int(t)).integers(0, 3, size=d.clusters.shape)
        for pos in range(d.clusters.shape[1]):
            rows.append(energy_obs(d, d.clusters, int(t), pos, modes, modes))
    rng = np.random.default_rng(0)
    rows.append(rng.normal(0, 2, size=(200, ENERGY_OBS_DIM)).astype(np.float32))
    return np.concatenate(rows)


def _slice_obs(trained: Trained) -> np.ndarray:
    d = trained.data
    ctx = context(d, None, 0)
    sites, steps = ctx.valid(d.val_start, d.val_start + 60)
    rng = np.random.default_rng(1)
    return np.concatenate(
        [slice_obs(ctx, sites, steps), rng.normal(0, 2, size=(200, SLICE_OBS_DIM))]
    ).astype(np.float32)


def test_training_writes_policies_and_manifest(trained: Trained) -> None:
    out = trained.out_dir
    for name in (ENERGY_ONNX, SLICE_ONNX, MANIFEST, "energy_dqn.zip", "slice_ppo.zip"):
        assert (out / name).is_file()
    assert trained.dqn.num_timesteps >= trained.config.dqn_timesteps
    assert trained.ppo.num_timesteps >= trained.config.ppo_timesteps
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["sites"] == list(trained.data.site_ids)
    assert len(manifest["energy"]["obs"]) == ENERGY_OBS_DIM
    assert len(manifest["slices"]["shares"]) == SHARES_DIM


def test_dqn_onnx_matches_sb3(trained: Trained) -> None:
    obs = _energy_obs(trained)
    sess = ort.InferenceSession(str(trained.out_dir / ENERGY_ONNX))
    modes, q = sess.run(None, {"obs": obs})
    sb3, _ = trained.dqn.predict(obs, deterministic=True)
    assert (modes == sb3).all()
    import torch

    with torch.no_grad():
        q_ref = trained.dqn.q_net(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(q, q_ref, rtol=1e-4, atol=1e-5)


def test_ppo_onnx_matches_sb3(trained: Trained) -> None:
    obs = _slice_obs(trained)
    sess = ort.InferenceSession(str(trained.out_dir / SLICE_ONNX))
    (shares,) = sess.run(None, {"obs": obs})
    sb3, _ = trained.ppo.predict(obs, deterministic=True)
    np.testing.assert_allclose(shares, shares_from_action(sb3, obs), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-6)


def test_service_decides_with_versions(trained: Trained) -> None:
    ids = list(trained.data.site_ids)
    svc = DecisionService(trained.out_dir, ids)
    obs = _energy_obs(trained)[: len(ids)]
    dec = svc.strategic(ids, obs)
    assert dec.version == trained.manifest["version"] == svc.version
    assert dec.modes.shape == (len(ids),) and set(dec.modes) <= {0, 1, 2}
    assert dec.mode_names == ("active", "capacity_off", "deep_sleep")
    tac = svc.tactical(ids, _slice_obs(trained)[: len(ids)])
    assert tac.shares.shape == (len(ids), SHARES_DIM) and tac.version == svc.version
    assert svc.reload(trained.out_dir) == svc.version
    svc.remove_sites(ids[:1])
    with pytest.raises(UnknownSiteError, match=ids[0]):
        svc.strategic(ids[:1], obs[:1])
    svc.add_sites(ids[:1])
    assert svc.strategic(ids[:1], obs[:1]).modes.shape == (1,)


def test_service_rejects_bad_input(trained: Trained) -> None:
    ids = list(trained.data.site_ids)
    svc = DecisionService(trained.out_dir, ids)
    good = _energy_obs(trained)[:2]
    bad_cases = [
        (ids[:2], good[:, :-1], "must be \\(n, 17\\)"),
        (ids[:2], good[0], "must be \\(n, 17\\)"),
        (ids[:3], good, "3 site ids for 2"),
        ([], good[:0], "no sites"),
        (ids[0], good[:1], "not one string"),
        (ids[:2], [["x"] * 17] * 2, "not numeric"),
    ]
    for site_ids, obs, msg in bad_cases:
        with pytest.raises(DecisionInputError, match=msg):
            svc.strategic(site_ids, obs)
    for value in (np.nan, np.inf):
        broken = good.copy()
        broken[1, 3] = value
        with pytest.raises(DecisionInputError, match="NaN or inf \\(rows \\[1\\]\\)"):
            svc.strategic(ids[:2], broken)
    with pytest.raises(UnknownSiteError, match="site-99999"):
        svc.strategic([ids[0], "site-99999"], good)
    with pytest.raises(DecisionInputError, match="must be \\(n, 14\\)"):
        svc.tactical(ids[:2], good)


def test_service_rejects_bad_policy_dirs(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="manifest"):
        DecisionService(tmp_path, [])

    def copy(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(trained.out_dir, d)
        return d

    tampered = copy("tampered")
    blob = bytearray((tampered / SLICE_ONNX).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tampered / SLICE_ONNX).write_bytes(bytes(blob))
    with pytest.raises(PolicyError, match="digest"):
        DecisionService(tampered, [])

    missing = copy("missing")
    (missing / ENERGY_ONNX).unlink()
    with pytest.raises(PolicyError, match=ENERGY_ONNX):
        DecisionService(missing, [])

    wrong_version = copy("version")
    m = json.loads((wrong_version / MANIFEST).read_text())
    m["version"] = "0" * 16
    (wrong_version / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(PolicyError, match="does not match the policy files"):
        DecisionService(wrong_version, [])

    garbage = copy("garbage")
    (garbage / ENERGY_ONNX).write_bytes(b"not onnx")
    m = json.loads((garbage / MANIFEST).read_text())
    import hashlib

    m["energy"]["sha256"] = hashlib.sha256(b"not onnx").hexdigest()
    (garbage / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(PolicyError, match="not a loadable ONNX model"):
        DecisionService(garbage, [])

    (garbage / MANIFEST).write_text("{")
    with pytest.raises(PolicyError, match="not a readable policy manifest"):
        DecisionService(garbage, [])
    svc = DecisionService(trained.out_dir, [])
    with pytest.raises(PolicyError):
        svc.reload(tampered)
    assert svc.version == trained.manifest["version"]  # the old policies stay in service


def test_service_does_not_import_torch(trained: Trained) -> None:
    heavy = ("torch", "stable_baselines3", "gymnasium", "pandas", "fedge.simulation")
    code = (
        "import sys; from pathlib import Path; from fedge.decisions import DecisionService; "
        f"DecisionService(Path({str(trained.out_dir)!r}), []); "
        f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_held_out_report_section(trained: Trained) -> None:
    section = held_out(trained)
    for m in ("dqn", "always_on", "threshold", "random"):
        assert {"energy_saved_pct", "qos_violation_rate", "reward"} <= set(section["energy"][m])
    for m in ("ppo", "static", "proportional_current", "proportional_forecast"):
        assert {"sla_satisfaction", "reserved_prb_pct", "reward"} <= set(section["slices"][m])
    assert section["slices"]["static"]["reserved_prb_pct"] == 100.0
    assert section["energy"]["always_on"]["energy_saved_pct"] == 0.0
    assert 0 < section["latency_us"]["p50"] <= section["latency_us"]["p99"]
    # The DQN's held-out figures are what its modes produce, not a copy of a baseline.
    dqn_trace = rollout(
        trained.data,
        trained.data.block_starts("test"),
        lambda o, s: trained.dqn.predict(o, deterministic=True)[0].astype(np.int64),
    )
    assert section["energy"]["dqn"]["reward"] == pytest.approx(-dqn_trace.cost.mean(), abs=1e-5)
    report = {"decisions": json.loads(json.dumps(section))}
    titles = [t for t, png in decision_plots(report, lambda fig: "png")]
    assert len(titles) == 3 and "Slice shares vs demand" in titles
    page = decision_html(report)
    assert "Central decisions" in page and "Ceilings (hindsight, not methods)" in page
    assert "EARTH macro cell (Auer et al. 2011): P0 130.0 W" in page
    assert section["energy"]["hindsight_bound"]["energy_saved_pct"] > 0
    ceiling = section["slices"]["hindsight_bound"]
    for m in ("ppo", "static", "proportional_current", "proportional_forecast"):
        assert section["slices"][m]["sla_satisfaction"] <= ceiling["sla_satisfaction"]
    assert decision_plots({}, lambda fig: "png") == [] and decision_html({}) == ""
