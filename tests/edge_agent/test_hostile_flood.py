"""Acceptance: an agent on a real Mosquitto given 10,000 hostile KPI payloads and 100
hostile sealed models keeps running; each one is dead-lettered or rejected with a reason
and every valid KPI sent among them is stored."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from fedge.core import ModelBundle
from fedge.core._bundle import BUNDLE_MAGIC
from fedge.edge_agent import Store
from fedge.security import ContentType, OneShotSealer, SiteIdentity, save_identity
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Models,
    Mosquitto,
    RunningAgent,
    kpi_payload,
    now_step,
    seed_history,
    site_values,
    write_config,
)
from tests.edge_agent.hostile import hostile_kpi, hostile_models

pytestmark = pytest.mark.slow

KEK = b"test key-encryption key"
HOSTILE_KPIS = 10_000
HOSTILE_MODELS = 100
BATCHES = 20
VALID_CELLS = 10  # one valid sample per cell per batch: 200 in all


def publish_all(client: Client, kind: str, payloads: list[bytes]) -> None:
    """Publish without a round trip per message, then wait for every PUBACK."""
    topic = f"{client.base}/{kind}"
    infos = [client.client.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(timeout=60)
        assert info.is_published()


def raw_bundle(header: object, onnx: bytes) -> bytes:
    head = json.dumps(header).encode()
    return BUNDLE_MAGIC + len(head).to_bytes(4, "big") + head + onnx


def test_hostile_kpis_and_models_never_stop_the_agent(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    rng = random.Random(20_240_601)
    site, coordinator, stranger = (SiteIdentity.generate() for _ in range(3))
    save_identity(tmp_path / "site.key", site, KEK, log2_n=10)
    kek = tmp_path / "kek"
    kek.write_bytes(KEK)
    kek.chmod(0o600)
    (tmp_path / "coordinator.pub").write_bytes(coordinator.public_keys().to_bytes())
    values, _ = site_values(days=4)
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["a", "b"], values[:-30], last)  # shadow data
    cfg = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good)},
        security={
            "key_file": str(tmp_path / "site.key"),
            "kek_file": str(kek),
            "coordinator_keys": str(tmp_path / "coordinator.pub"),
        },
    )

    # 100 models: lying or broken ONNX in valid seals, and broken seals
    good = tiny_models.good.read_bytes()
    sealer = OneShotSealer(coordinator)

    def sealed(payload: bytes, ctype: ContentType = ContentType.GLOBAL_MODEL) -> bytes:
        return sealer.seal(site.public_keys(), payload, ctype)

    def envelope_kinds(i: int) -> list[tuple[str, bytes]]:
        valid = sealed(ModelBundle(f"seal-{i}", good).encode())
        flipped = bytearray(valid)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return [
            ("tampered-seal", bytes(flipped)),
            ("truncated-seal", valid[: rng.randrange(len(valid))]),
            ("random-bytes", rng.randbytes(rng.randrange(1, 2048))),
            ("empty", b""),
            ("wrong-content-type", sealed(ModelBundle(f"ct-{i}", good).encode(), ContentType.CONTROL)),
            ("stranger", OneShotSealer(stranger).seal(site.public_keys(), valid, ContentType.GLOBAL_MODEL)),
            ("not-a-bundle", sealed(rng.randbytes(300))),
            ("bad-digest", sealed(raw_bundle({"version": f"d-{i}", "sha256": "0" * 64}, good))),
            ("bad-version", sealed(raw_bundle({"version": "../../etc/x", "sha256": hashlib.sha256(good).hexdigest()}, good))),
            ("deep-header", sealed(BUNDLE_MAGIC + (3000).to_bytes(4, "big") + b"[" * 1500 + b"]" * 1500)),
        ]  # fmt: skip

    models: list[tuple[str, bytes]] = []
    round_ = 0
    while len(models) < HOSTILE_MODELS:
        for name, onnx in hostile_models(good, rng):
            models.append((name, sealed(ModelBundle(f"h{round_}-{name}", onnx).encode())))
        models += envelope_kinds(round_)
        round_ += 1
    models = models[:HOSTILE_MODELS]
    kinds = Counter(name for name, _ in models)
    assert len(kinds) >= 25, kinds

    # 10,000 hostile KPIs in batches, each batch with valid samples among them
    template = kpi_payload("h", (last + 1) * STEP, values[0])
    per_batch = HOSTILE_KPIS // BATCHES
    models_per_batch = HOSTILE_MODELS // BATCHES
    batches: list[tuple[list[bytes], list[bytes]]] = []
    valid_sent: list[tuple[str, int]] = []
    for j in range(BATCHES):
        kpis = [hostile_kpi(rng, template) for _ in range(per_batch)]
        for k in range(VALID_CELLS):
            step = last + 1 + j
            kpis.insert(rng.randrange(len(kpis) + 1), kpi_payload(f"v{k}", step * STEP, values[j]))
            valid_sent.append((f"v{k}", step))
        # a cell's samples go in step order: the valid ones keep theirs within the batch
        batches.append(
            (kpis, [p for _, p in models[j * models_per_batch : (j + 1) * models_per_batch]])
        )

    with RunningAgent(cfg) as agent:
        for kpis, sealed_models in batches:
            publish_all(client, "kpi", kpis[: len(kpis) // 2])
            publish_all(client, "model", sealed_models)
            publish_all(client, "kpi", kpis[len(kpis) // 2 :])
        letters = client.collect("deadletter", HOSTILE_KPIS, timeout=120)
        verdicts = client.collect("verdict", HOSTILE_MODELS, timeout=120)
        client.kpi("a", (last + 1) * STEP, values[-30])  # still forecasting afterwards
        forecast = client.get("forecast")
        while forecast["cell"] != "a":  # the valid cells' own forecasts came first
            forecast = client.get("forecast")
        errors = {
            s.labels["stage"]: s.value
            for m in agent.metrics.registry.collect()
            if m.name == "fedge_agent_errors"
            for s in m.samples
            if s.name.endswith("_total")
        }
        served = agent.version

    assert forecast["step_ts"] == (last + 1) * STEP and forecast["model_version"] == served
    assert served is not None and served.startswith("initial-")
    reasons = Counter(x["reason"] for x in letters)
    assert sum(reasons.values()) == HOSTILE_KPIS
    assert "internal" not in reasons, reasons  # every refusal is a schema rule, not a bug
    assert all(x["detail"] for x in letters)
    assert {"out_of_range", "too_deep", "non_finite", "not_json", "bad_cell"} <= set(reasons)
    assert [v["accepted"] for v in verdicts] == [False] * HOSTILE_MODELS
    assert all(v["reason"] for v in verdicts)
    assert not any("could not be judged" in v["reason"] for v in verdicts), verdicts
    assert errors == {}
    store = Store(tmp_path / "agent.db")
    try:
        missing = [(c, s) for c, s in valid_sent if store.sample(c, s) is None]
        assert missing == []
        assert "h" not in store.cells()
        rejected = [m for m in store.models() if m.state == "rejected"]
        judged = [v for v in verdicts if v["version"] is not None]
        assert {m.version for m in rejected} == {v["version"] for v in judged}
        assert all(m.reason for m in rejected)
    finally:
        store.close()
