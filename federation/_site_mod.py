"""The site side of compressed, sealed rounds: a Flower ClientApp mod, plus the hello reply.

The mod sits between the transport and the app's ``train``/``evaluate`` functions, which
stay unaware of it: it opens and decodes the global model on the way in, and on the way
out turns the trained weights into a delta, adds the error-feedback residual, compresses,
and seals. Messages without the ``fedge-sealed`` record pass through untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedge.federation._adversary import AdversaryPlan, spoil_delta, tamper
from fedge.federation._channel import EVALUATE, TRAIN, SiteChannel, simulated_identity
from fedge.federation._codec import CodecId, CodecSpec, decode, encode
from fedge.federation._errors import FederationError
from fedge.federation._residual import (
    ESTIMATE_FILE,
    ResidualStore,
    compress_difference,
    compress_with_feedback,
)
from fedge.federation._update import frame, unframe
from fedge.security import ContentType

SEALED: Final = "fedge-sealed"
HELLO: Final = "fedge-hello"
_ENVELOPE_FIELDS: Final = ("init", "oneshot", "env", "resp", "secret")
LAST_ENVELOPE: Final = "last_envelope.bin"


FEEDBACK_BASE = "feedback-base"  # tracked feedback: the estimate the payload is against


def site_index(context: Context) -> int:
    cfg = context.node_config
    for key in ("site-index", "partition-id"):
        if key in cfg:
            return int(cfg[key])
    raise FederationError(
        "node config names no site: start the SuperNode with --node-config 'site-index=N'"
    )


def hello_reply(msg: Message, context: Context) -> Message:
    """Answer the server's hello with this site's id, so it can bind node to site."""
    ctl = msg.content.config_records[HELLO]
    site = site_index(context)
    identity = simulated_identity(_int(ctl.get("sim-key-seed")), f"site-{site}")
    record = ConfigRecord({"site-id": identity.site_id, "site-index": site})
    return Message(content=RecordDict({HELLO: record}), reply_to=msg)


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    raise FederationError(f"expected an integer, got {value!r}")


def envelope_fields(record: ConfigRecord) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key in _ENVELOPE_FIELDS:
        value = record.get(key)
        if isinstance(value, bytes):
            out[key] = value
    return out


def sealed_update_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    content = msg.content
    if SEALED not in content.config_records:
        return call_next(msg, context)
    kind = TRAIN if msg.metadata.message_type == MessageType.TRAIN else EVALUATE
    ctl = content.config_records[SEALED]
    config = content.config_records["config"]
    server_round = _int(config.get("server-round"))
    site = site_index(context)
    seed = _int(ctl.get("sim-key-seed"))
    site_dir = Path(str(ctl.get("state-dir"))) / f"site-{site:05d}"
    channel = SiteChannel(
        simulated_identity(seed, f"site-{site}"),
        simulated_identity(seed, "server").public_keys(),
        site_dir,
    )
    control, payload = unframe(channel.open_down(server_round, kind, envelope_fields(ctl)))
    global_arrays = decode(payload)
    msg.content = RecordDict(
        {"arrays": ArrayRecord.from_numpy_ndarrays(global_arrays), "config": config}
    )
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    metrics: dict[str, Any] = dict(reply.content.metric_records["metrics"])
    if kind == EVALUATE:
        fields = channel.seal_up(server_round, kind, frame(metrics), ContentType.METRICS)
        reply.content = RecordDict({SEALED: ConfigRecord(dict(fields))})
        return reply

    trained = [
        np.asarray(a, np.float32) for a in reply.content.array_records["arrays"].to_numpy_ndarrays()
    ]
    delta = [(t - g).astype(np.float32) for t, g in zip(trained, global_arrays, strict=True)]
    spec = CodecSpec.parse(str(control.get("codec")))
    attacks = AdversaryPlan.from_json(str(config.get("attacks", "")))
    attack = attacks.role(site)
    rng = np.random.default_rng([seed, site, server_round])
    if attack in ("boosted", "nonfinite", "misshaped"):
        bad = spoil_delta(attack, delta, attacks.boost)
        if attack == "boosted":
            payload_out = encode(bad, spec, rng)
        else:  # a raw fp32 payload: the codecs themselves refuse such input
            payload_out = encode(bad, CodecSpec(CodecId.FP32))
    elif control.get("feedback", "residual") == "tracked":
        store = ResidualStore(site_dir, ESTIMATE_FILE)
        chan = channel.channel()
        held = _int(control.get("feedback-seq", 0))  # the server's count of our updates
        estimate = store.load_estimate(chan, delta, held)
        base = held if estimate is not None else 0  # 0: start over (the server will too)
        if estimate is None:
            estimate = [np.zeros_like(d) for d in delta]
        payload_out, estimate = compress_difference(delta, estimate, spec, rng)
        store.save(chan, estimate, server_round, seq=base + 1)
        metrics[FEEDBACK_BASE] = base
    else:
        store = ResidualStore(site_dir)
        chan = channel.channel()
        decay = float(control.get("decay", 1.0))
        residual = store.load(chan, delta, server_round, decay)
        payload_out, residual = compress_with_feedback(delta, residual, spec, rng)
        store.save(chan, residual, server_round)
    fields = channel.seal_up(
        server_round, kind, frame(metrics, payload_out), ContentType.MODEL_UPDATE
    )
    if attack == "tampered":
        fields["env"] = tamper(fields["env"])
    elif attack == "replayed":  # first time: send honestly, keep it; later: resend it
        last = site_dir / LAST_ENVELOPE
        if last.exists():
            fields = json_fields(last.read_text())
        else:
            last.write_text(fields_json(fields))
    reply.content = RecordDict({SEALED: ConfigRecord(dict(fields))})
    return reply


def fields_json(fields: dict[str, bytes]) -> str:
    return json.dumps({k: v.hex() for k, v in fields.items()})


def json_fields(text: str) -> dict[str, bytes]:
    return {k: bytes.fromhex(v) for k, v in json.loads(text).items()}
