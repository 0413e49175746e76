"""Model lifecycle: sealed models over MQTT, the shadow gate, atomic swap, rollback."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedge.core import ModelBundle
from fedge.edge_agent import ModelManager, ModelRejected, Store, rollback
from fedge.edge_agent._config import AnomalyConfig, ModelConfig
from fedge.edge_agent._forecast import Features, ForecastEngine
from fedge.edge_agent._lifecycle import check_servable
from fedge.models import ForecastSpec, ModelError
from fedge.security import ContentType, OneShotSealer, SiteIdentity, save_identity
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Models,
    Mosquitto,
    RunningAgent,
    now_step,
    seed_history,
    site_values,
    write_config,
)
from tests.edge_agent.hostile import batch_of_one, hostile_models, spec_of, with_spec

KEK = b"test key-encryption key"


def seal(sender: SiteIdentity, site: SiteIdentity, payload: bytes, ctype: ContentType) -> bytes:
    return OneShotSealer(sender).seal(site.public_keys(), payload, ctype)


def bundle(version: str, path: Path) -> bytes:
    return ModelBundle(version, path.read_bytes()).encode()


def test_sealed_models_shadow_gate_swap_and_rollback(
    tmp_path: Path,
    broker: Mosquitto,
    client: Client,
    tiny_models: Models,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, coordinator, stranger = (SiteIdentity.generate() for _ in range(3))
    save_identity(tmp_path / "site.key", site, KEK, log2_n=10)
    (tmp_path / "kek").write_bytes(KEK)
    (tmp_path / "kek").chmod(0o600)
    (tmp_path / "coordinator.pub").write_bytes(coordinator.public_keys().to_bytes())
    values, _ = site_values(days=4)
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["a", "b"], values[:-30], last)
    cfg = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good), "shadow_margin": 0.05},
        security={
            "key_file": str(tmp_path / "site.key"),
            "kek_file": str(tmp_path / "kek"),
            "coordinator_keys": str(tmp_path / "coordinator.pub"),
        },
    )
    step = iter(range(last + 1, last + 30))

    def forecast_version() -> str:
        s = next(step)
        client.kpi("a", s * STEP, values[s - last - 30])
        return str(client.get("forecast")["model_version"])

    with RunningAgent(cfg) as agent:
        initial = forecast_version()
        # refused before any evaluation: tampered, wrong content type, unknown sender
        good = bundle("v-good", tiny_models.good)
        tampered = bytearray(seal(coordinator, site, good, ContentType.GLOBAL_MODEL))
        tampered[-100] ^= 1
        client.publish("model", bytes(tampered))
        client.publish("model", seal(coordinator, site, good, ContentType.CONTROL))
        client.publish("model", seal(stranger, site, good, ContentType.GLOBAL_MODEL))
        refusals = client.collect("verdict", 3)
        assert [d["accepted"] for d in refusals] == [False] * 3
        assert "signature" in refusals[0]["reason"] or "envelope" in refusals[0]["reason"]
        assert "not a global model" in refusals[1]["reason"]
        assert "not enrolled" in refusals[2]["reason"]
        # a worse model is rejected by the shadow gate; serving continues unchanged
        client.publish(
            "model",
            seal(coordinator, site, bundle("v-bad", tiny_models.bad), ContentType.GLOBAL_MODEL),
        )
        verdict = client.get("verdict")
        assert verdict["version"] == "v-bad" and verdict["accepted"] is False
        assert "worse than serving" in verdict["reason"]
        assert verdict["candidate_score"] > verdict["serving_score"] * 1.05
        assert verdict["windows"] >= 50
        assert forecast_version() == initial
        # an equally good model passes and serves from the next forecast on
        client.publish("model", seal(coordinator, site, good, ContentType.GLOBAL_MODEL))
        verdict = client.get("verdict")
        assert verdict["accepted"] is True, verdict
        assert verdict["serving_version"] == initial
        assert forecast_version() == "v-good"
        # replaying the same (validly sealed) version changes nothing
        client.publish("model", seal(coordinator, site, good, ContentType.GLOBAL_MODEL))
        assert "already known" in client.get("verdict")["reason"]
        # `fedge agent rollback` against the live store; the agent follows within ~1 s
        from fedge._cli import main

        monkeypatch.setattr(sys, "argv", ["fedge", "agent", "rollback", "--config", str(cfg)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code in (0, None)
        deadline = time.monotonic() + 20
        while agent.version != initial:
            assert time.monotonic() < deadline, "agent did not follow the rollback"
            time.sleep(0.05)
        assert forecast_version() == initial
    store = Store(tmp_path / "agent.db")
    try:
        states = {m.version: m.state for m in store.models()}
    finally:
        store.close()
    assert states == {initial: "serving", "v-good": "rolled_back", "v-bad": "rejected"}


def test_manager_first_model_unloadable_model_and_too_little_data(
    tmp_path: Path, tiny_models: Models
) -> None:
    store = Store(tmp_path / "s.db", step_seconds=STEP)
    try:
        mgr = ModelManager(store, ModelConfig(dir=tmp_path / "m", min_shadow_windows=10))
        assert mgr.load_serving() is None
        junk = mgr.consider(ModelBundle("junk", b"not onnx"), [])
        assert not junk.accepted and "not a loadable ONNX model" in junk.reason
        first = mgr.consider(ModelBundle("v1", tiny_models.good.read_bytes()), [])
        assert first.accepted and first.reason == "no model was serving"
        starved = mgr.consider(ModelBundle("v2", tiny_models.good.read_bytes()), [])
        assert not starved.accepted and "only 0 local windows" in starved.reason
        assert mgr.serving is not None and mgr.serving.version == "v1"
        with pytest.raises(ModelRejected, match="nothing earlier"):
            rollback(store)
    finally:
        store.close()
    empty = Store(tmp_path / "e.db")
    try:
        with pytest.raises(ModelRejected, match="no model is serving"):
            rollback(empty)
    finally:
        empty.close()


@pytest.fixture
def shadow_data(tmp_path: Path) -> tuple[Store, list[Features]]:
    values, _ = site_values(days=3)
    seed_history(tmp_path / "h.db", ["a", "b"], values, 7_000_000)
    store = Store(tmp_path / "h.db", step_seconds=STEP)
    return store, ForecastEngine(store, STEP, AnomalyConfig()).recent_features(2.0)


REFUSED_BEFORE_SCORING = {
    "lookback-24": "graph input axis 1 is 12, the forecast spec says 24",
    "lookback-6": "graph input axis 1 is 12, the forecast spec says 6",
    "n-features": "graph input axis 2",
    "horizon": "graph input axis 2",
    "no-metadata": "no forecast spec metadata",
    "metadata-not-json": "not JSON",
    "metadata-deep": "not JSON",
    "metadata-unknown": "unknown forecast spec field",
    "metadata-huge-window": "over the limit",
    "truncated": "not a loadable ONNX model",
    "garbage": "not a loadable ONNX model",
    "empty": "not a loadable ONNX model",
    "symbolic-wrong-weights": "model failed to run",
    "symbolic-wrong-output": "its spec promises",
    "lookback-over-window": "lookback 128 is longer than the 64 steps",
    "nan-forecasts": "non-finite forecast on a probe window",
}


def test_a_model_whose_spec_lies_is_a_recorded_rejection_and_serving_continues(
    tmp_path: Path, tiny_models: Models, shadow_data: tuple[Store, list[Features]]
) -> None:
    store, data = shadow_data
    good = tiny_models.good.read_bytes()
    try:
        mgr = ModelManager(store, ModelConfig(dir=tmp_path / "m", min_shadow_windows=10))
        assert mgr.consider(ModelBundle("v1", good), data).accepted
        for name, onnx_bytes in hostile_models(good, random.Random(5)):
            verdict = mgr.consider(ModelBundle(f"h-{name}", onnx_bytes), data)
            assert not verdict.accepted, name
            if name == "batch-of-one":
                assert "candidate failed shadow evaluation: model failed to run" in verdict.reason
                assert verdict.serving_score is not None and verdict.windows > 0
            else:
                assert REFUSED_BEFORE_SCORING[name] in verdict.reason, (name, verdict.reason)
                assert verdict.candidate_score is None
            assert len(verdict.reason) <= 300
            record = store.model(f"h-{name}")
            assert record is not None and record.state == "rejected", name
            assert record.reason == verdict.reason
            assert not (tmp_path / "m" / f"h-{name}.onnx").exists()
        assert mgr.serving is not None and mgr.serving.version == "v1"
    finally:
        store.close()


def test_a_serving_model_that_lies_is_refused_at_load(tmp_path: Path, tiny_models: Models) -> None:
    lying = tmp_path / "lying.onnx"
    lying.write_bytes(with_spec(tiny_models.good.read_bytes(), {"lookback": 24, "hidden": [16, 8]}))
    store = Store(tmp_path / "s.db", step_seconds=STEP)
    try:
        with pytest.raises(ModelRejected, match="graph input axis 1 is 12"):
            ModelManager(store, ModelConfig(dir=tmp_path / "m", initial=lying)).load_serving()
    finally:
        store.close()


class _Numpy:
    """A predictor that is not ONNX: what ``check_servable`` reads is only the protocol."""

    def __init__(self, spec: ForecastSpec, out: tuple[int, ...], fill: float = 0.0) -> None:
        self.spec, self.out, self.fill = spec, out, fill

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(self.out, self.fill, dtype=np.float32)


def test_check_servable_reads_the_forecast_it_gets() -> None:
    spec = ForecastSpec(horizon=2)
    check_servable(_Numpy(spec, (1, 2, 3)))
    with pytest.raises(ModelError, match=r"forecast shape \(1, 2, 4\)"):
        check_servable(_Numpy(spec, (1, 2, 4)))
    with pytest.raises(ModelError, match="non-finite"):
        check_servable(_Numpy(spec, (1, 2, 3), np.inf))
    with pytest.raises(ModelError, match="longer than the 8 steps"):
        check_servable(_Numpy(spec, (1, 2, 3)), max_lookback=8)


def test_a_serving_model_that_fails_shadow_evaluation_rejects_the_candidate(
    tmp_path: Path, tiny_models: Models, shadow_data: tuple[Store, list[Features]]
) -> None:
    """Forecasting one window at a time passes the probe but not a shadow batch."""
    store, data = shadow_data
    spec = ForecastSpec.from_dict(spec_of(tiny_models.good.read_bytes()))
    one = tmp_path / "one.onnx"
    one.write_bytes(batch_of_one(spec))
    try:
        mgr = ModelManager(
            store, ModelConfig(dir=tmp_path / "m", initial=one, min_shadow_windows=10)
        )
        serving = mgr.load_serving()
        assert serving is not None
        verdict = mgr.consider(ModelBundle("v2", tiny_models.good.read_bytes()), data)
        assert not verdict.accepted
        assert verdict.reason.startswith("serving model failed shadow evaluation: ")
        assert verdict.serving_version == serving.version
        assert mgr.serving is not None and mgr.serving.version == serving.version
    finally:
        store.close()
