"""Codec benchmark: ``python -m bench.codecs`` -> ``bench/results/codecs.json``.

The update is a real one: the reference LSTM trained for one epoch on a generated site,
minus its starting weights. ``ratio_on_wire`` compares whole Flower messages serialised
with Flower's protobuf: the plain fp32 reply (``arrays`` + ``metrics``) against the
steady-state sealed reply (session envelope, metrics inside). ``aggregate_1000_updates_s``
is one core opening 1,000 sealed top-k (3%) int8 updates (each with its own site's round
key), decoding them, checking them against the global model and forming the
example-weighted FedAvg mean.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.serverapp.strategy import FedAvg

from bench._common import write_result
from fedge.federation import CodecSpec, decode, encode, wire_size
from fedge.federation._channel import TRAIN, _round_session
from fedge.federation._sealed_strategy import SealedStrategy
from fedge.federation._site_mod import SEALED
from fedge.federation._update import apply_update, frame, unframe
from fedge.security import ContentType

CODECS = (
    "fp32",
    "fp16",
    "int8",
    "int8-channel",
    "int8+sr",
    "int4",
    "topk:0.03",
    "topk+global:0.03",
    "topk:0.01",
    "sign",
)


def _message(content: RecordDict) -> Message:
    meta = Metadata(1, "0" * 64, 7, 0, "1" * 64, "", time.time(), 600.0, "train")
    return make_message(metadata=meta, content=content)


def real_update() -> tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]], int]:
    """(global weights, one trained site's delta, its training examples)."""
    from fedge.models import ForecastSpec, LoadForecaster, get_weights, train_epochs
    from fedge.simulation._site_task import site_task

    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = ForecastSpec()
    data = json.dumps({"kind": "generator", "num_sites": 1, "days": 14, "seed": 0})
    prepared = site_task(data, 0, spec, 2, 3).prepared
    model = LoadForecaster(spec)
    before = get_weights(model)
    train_epochs(model, prepared.x_train, prepared.y_train, epochs=1, batch_size=64,
                 learning_rate=1e-3, seed=0)  # fmt: skip
    after = get_weights(model)
    return before, [a - b for a, b in zip(after, before, strict=True)], len(prepared.x_train)


def _rate(fn: Any, nbytes: int, min_s: float = 0.5) -> float:
    fn()
    runs, start = 0, time.process_time()  # CPU time: the dev machine is shared
    while (elapsed := time.process_time() - start) < min_s or runs < 3:
        fn()
        runs += 1
    return nbytes * runs / elapsed / 1e6


def _aggregate(
    envelopes: list[bytes],
    keys: list[bytes],
    peer: Any,
    global_w: list[np.ndarray],
    to_arrays: Callable[[int, bytes], list[np.ndarray]],
) -> float:
    """CPU seconds to open, decode, check and average the updates (FedAvg weights)."""
    start = time.process_time()
    total = [np.zeros_like(g, dtype=np.float64) for g in global_w]
    weight = 0
    for i, (env, key) in enumerate(zip(envelopes, keys, strict=True)):
        opened = _round_session(key, peer, 5, TRAIN, server_side=True).open(env)
        meta, payload = unframe(bytes(opened.plaintext))
        n = int(meta["num-examples"])
        for j, w in enumerate(to_arrays(i, payload)):
            total[j] += n * w
        weight += n
    mean = [(t / weight).astype(np.float32) for t in total]
    elapsed = time.process_time() - start
    assert all(np.isfinite(m).all() for m in mean)
    return elapsed


def main() -> None:
    global_w, delta, examples = real_update()
    raw_bytes = sum(d.nbytes for d in delta)
    metrics: dict[str, int | float | list[int] | list[float]] = {
        "num-examples": examples,
        "train_loss": 0.1,
    }
    plain = _message(
        RecordDict(
            {
                "arrays": ArrayRecord.from_numpy_ndarrays(
                    [g + d for g, d in zip(global_w, delta, strict=True)]
                ),
                "metrics": MetricRecord(metrics),
            }
        )
    )
    plain_bytes = wire_size(plain)
    secret, peer = os.urandom(32), os.urandom(16)
    rng = np.random.default_rng(0)
    codecs: dict[str, Any] = {}
    for name in CODECS:
        spec = CodecSpec.parse(name)
        payload = encode(delta, spec, rng)
        site = _round_session(secret, peer, 1, TRAIN, server_side=False)
        env = site.seal(frame(metrics, payload), ContentType.MODEL_UPDATE, 1)
        sealed = _message(RecordDict({SEALED: ConfigRecord({"env": env})}))
        on_wire = wire_size(sealed)
        codecs[name] = {
            "ratio_on_wire": round(plain_bytes / on_wire, 2),
            "encode_mb_s": round(_rate(lambda s=spec: encode(delta, s, rng), raw_bytes), 1),
            "decode_mb_s": round(_rate(lambda p=payload: decode(p), raw_bytes), 1),
            "bytes_per_update": on_wire,
            "payload_bytes": len(payload),
        }
        print(name, codecs[name], flush=True)

    # 1,000 sealed top-k updates, each from its own site, each a little different.
    spec = CodecSpec.parse("topk:0.03")
    envelopes, keys = [], []
    for i in range(1000):
        noisy = [d * np.float32(1 + 0.1 * rng.standard_normal()) for d in delta]
        site_secret = os.urandom(32)
        s = _round_session(site_secret, peer, 5, TRAIN, server_side=False)
        body = frame({"num-examples": examples + i, "train_loss": 0.1}, encode(noisy, spec, rng))
        envelopes.append(s.seal(body, ContentType.MODEL_UPDATE, 5))
        keys.append(site_secret)
    aggregate_s = _aggregate(
        envelopes, keys, peer, global_w, lambda _, p: apply_update(global_w, p)
    )
    # The same through the server's tracked feedback: each update is added to its site's
    # dense estimate (steady state: one is already held) and the mean is of global + estimate.
    tracker = SealedStrategy(
        FedAvg(),
        None,  # type: ignore[arg-type]  # _track never touches the channel
        lambda n, r: "topk:0.03",
        feedback="tracked",
    )
    for i in range(len(envelopes)):
        tracker._estimates.put(i, (1, [np.zeros_like(g) for g in global_w]))
    tracked_s = _aggregate(
        envelopes, keys, peer, global_w, lambda i, p: tracker._track(i, global_w, p, 1)
    )
    path = write_result(
        "codecs",
        {
            "codecs": codecs,
            "aggregate_1000_updates_s": round(aggregate_s, 3),
            "aggregate_1000_tracked_updates_s": round(tracked_s, 3),
            "aggregate_codec": "topk:0.03",
            "fp32_message_bytes": plain_bytes,
            "model_params": int(sum(d.size for d in delta)),
            "notes": "ratio_on_wire: plain fp32 Flower reply / sealed reply (session envelope, "
            "steady state); MB/s of fp32 update bytes per CPU second (one thread); aggregate: one core CPU time "
            "(open + decode + validate + weighted mean) for 1,000 updates",
        },
    )
    print(f"aggregate 1000 updates: {aggregate_s:.3f} s CPU -> {path}")


if __name__ == "__main__":
    main()
