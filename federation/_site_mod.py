"""The site side of compressed, sealed rounds: a Flower ClientApp mod.

The mod sits between the transport and the app's ``train``/``evaluate`` functions, which
stay unaware of it: it opens and decodes the global model on the way in, and on the way
out turns the trained weights into a delta, adds the error-feedback residual, compresses,
and seals. Who the site is (its identity, the coordinator's public keys, its own state
directory) comes from the :class:`Site` the app resolves from its own side (the node
config on a SuperNode), never from the server's message. A train or evaluate message
that is not sealed is refused unless the site allows plain rounds (the simulation's
``codec="none"`` runs do; a deployed node never does), so no server can have a site
hand over its update in clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedge.federation._channel import EVALUATE, TRAIN, SiteChannel
from fedge.federation._codec import Arrays, CodecSpec, decode
from fedge.federation._errors import FederationError
from fedge.federation._plan import FederationPlan
from fedge.federation._residual import (
    ESTIMATE_FILE,
    ResidualStore,
    compress_difference,
    compress_with_feedback,
)
from fedge.federation._update import frame, unframe
from fedge.models import PreparedSite
from fedge.security import ContentType, SiteIdentity, SitePublicKeys

SEALED: Final = "fedge-sealed"
_ENVELOPE_FIELDS: Final = ("init", "oneshot", "env", "resp", "secret")
FEEDBACK_BASE = "feedback-base"  # tracked feedback: the estimate the payload is against


class Uplink(Protocol):
    """What a site does to its own reply beyond sealing it (the simulation's attackers)."""

    def payload(self, delta: Arrays, spec: CodecSpec, rng: np.random.Generator) -> bytes | None:
        """A payload to send instead of the honest one, or None."""
        ...

    def fields(self, fields: dict[str, bytes], state_dir: Path) -> dict[str, bytes]:
        """The sealed fields as they leave the site."""
        ...


@dataclass(frozen=True)
class Site:
    """One site as its ClientApp knows itself; resolved on the site's side only."""

    index: int  # local: the training seed (and the simulation's data); binds nothing
    identity: SiteIdentity
    coordinator: SitePublicKeys
    state_dir: Path
    # The site's cells, each prepared with its own scaler (the simulation's site is one).
    task: Callable[[FederationPlan], PreparedSite | Sequence[PreparedSite]]
    rng: Callable[[int], np.random.Generator]  # per round: stochastic rounding, top-k ties
    uplink: Uplink | None = None
    allow_plain: bool = False


SiteResolver = Callable[[Context], Site]


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


def sealed_mod(resolve: SiteResolver) -> Mod:
    """The mod for sites that ``resolve`` describes."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        return _sealed(resolve(context), msg, context, call_next)

    return mod


def _sealed(site: Site, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    content = msg.content
    kind_name = msg.metadata.message_type
    if kind_name not in (MessageType.TRAIN, MessageType.EVALUATE):
        return call_next(msg, context)
    if SEALED not in content.config_records:
        if site.allow_plain:
            return call_next(msg, context)
        raise FederationError(
            f"refusing an unsealed {kind_name} message: this site only answers sealed rounds"
        )
    kind = TRAIN if kind_name == MessageType.TRAIN else EVALUATE
    ctl = content.config_records[SEALED]
    config = content.config_records["config"]
    server_round = _int(config.get("server-round"))
    channel = SiteChannel(site.identity, site.coordinator, site.state_dir)
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
    rng = site.rng(server_round)
    spoiled = site.uplink.payload(delta, spec, rng) if site.uplink is not None else None
    if spoiled is not None:
        payload_out = spoiled
    elif control.get("feedback", "residual") == "tracked":
        store = ResidualStore(site.state_dir, ESTIMATE_FILE)
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
        store = ResidualStore(site.state_dir)
        chan = channel.channel()
        decay = float(control.get("decay", 1.0))
        residual = store.load(chan, delta, server_round, decay)
        payload_out, residual = compress_with_feedback(delta, residual, spec, rng)
        store.save(chan, residual, server_round)
    fields = channel.seal_up(
        server_round, kind, frame(metrics, payload_out), ContentType.MODEL_UPDATE
    )
    if site.uplink is not None:
        fields = site.uplink.fields(fields, site.state_dir)
    reply.content = RecordDict({SEALED: ConfigRecord(dict(fields))})
    return reply
