"""The server side of compressed, sealed rounds: a Flower ``Strategy`` around any other.

Its hooks only build and aggregate messages (the Grid does the I/O): ``configure_*`` seals
the inner strategy's messages per site, ``aggregate_*`` opens, verifies and decodes the
replies and hands the inner strategy plain ``arrays`` + ``metrics`` replies, so FedAvg,
FedProx, FedTrimmedAvg, FedMedian or Krum aggregate exactly as they would unsealed. A reply
that fails anywhere is excluded from the round, logged by node and counted by reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedge.federation._accounting import Ledger, wire_size
from fedge.federation._channel import EVALUATE, TRAIN, ServerChannel
from fedge.federation._codec import Arrays, CodecId, CodecSpec, encode
from fedge.federation._errors import CodecError, UpdateRejectedError
from fedge.federation._estimates import EstimateStore
from fedge.federation._site_mod import FEEDBACK_BASE, SEALED, envelope_fields
from fedge.federation._update import apply_update, checked_delta, frame, unframe

log = logging.getLogger(__name__)

CodecChooser = Callable[[int, int], str]  # (node id, round) -> codec spec


class SealedStrategy(Strategy):
    def __init__(
        self,
        inner: Strategy,
        channel: ServerChannel,
        codec_for: CodecChooser,
        *,
        residual_decay: float = 1.0,
        ledger: Ledger | None = None,
        downlink: CodecSpec | None = None,
        feedback: str = "tracked",
    ) -> None:
        self.inner = inner
        self.channel = channel
        self.codec_for = codec_for
        self.residual_decay = residual_decay
        # The site computes its delta against the global it decoded and the server adds
        # it to its own fp32 global, so quantising the downlink adds no drift: a site that
        # trained nothing returns exactly the server's global.
        self.downlink = downlink or CodecSpec(CodecId.FP32)
        # "tracked" (EF21): per node, how many of its updates the estimate holds, and it;
        # the least recently sampled spill to disk (memory follows the round's nodes).
        self.feedback = feedback
        self._estimates = EstimateStore()
        self.ledger = ledger or Ledger()
        self._global: dict[int, Arrays] = {}
        self._plain_measured: set[int] = set()

    def summary(self) -> None:
        self.inner.summary()

    # --- downlink ---

    def _seal_all(
        self, server_round: int, kind: int, arrays: ArrayRecord, messages: Iterable[Message]
    ) -> list[Message]:
        weights = [np.asarray(a, np.float32) for a in arrays.to_numpy_ndarrays()]
        self._global[server_round] = weights
        payload = encode(weights, self.downlink)
        out = []
        messages = list(messages)
        if kind == TRAIN:
            self.ledger.sample(server_round, len(messages))
        for m in messages:
            node = m.metadata.dst_node_id
            if not self.channel.knows(node):
                log.warning("round %d: node %d has no channel; not sent", server_round, node)
                if kind == TRAIN:
                    self.ledger.reject(server_round, node, "unknown_node")
                continue
            codec = self.codec_for(node, server_round)
            CodecSpec.parse(codec)
            control: dict[str, Any] = {"codec": codec, "decay": self.residual_decay}
            if self.feedback == "tracked":
                control["feedback"] = "tracked"
                control["feedback-seq"] = self._estimates.count(node) or 0
            fields = self.channel.seal_down(node, server_round, kind, frame(control, payload))
            config = ConfigRecord(dict(m.content.config_records["config"]))
            sealed = ConfigRecord(dict(fields))
            msg = Message(
                content=RecordDict({"config": config, SEALED: sealed}),
                dst_node_id=node,
                message_type=m.metadata.message_type,
            )
            self.ledger.add_down(server_round, node, wire_size(msg))
            out.append(msg)
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        inner = self.inner.configure_train(server_round, arrays, config, grid)
        return self._seal_all(server_round, TRAIN, arrays, inner)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        inner = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return self._seal_all(server_round, EVALUATE, arrays, inner)

    # --- uplink ---

    def _open(self, server_round: int, kind: int, reply: Message) -> tuple[dict[str, Any], bytes]:
        if reply.has_error():
            raise UpdateRejectedError("client_error", str(reply.error.reason))
        record = reply.content.config_records.get(SEALED)
        if record is None:
            raise UpdateRejectedError("unsealed", "reply is not sealed")
        if kind == TRAIN:
            self.ledger.updates_sealed += 1
        plaintext = self.channel.open_up(
            reply.metadata.src_node_id, server_round, kind, envelope_fields(record)
        )
        try:
            return unframe(plaintext)
        except CodecError as exc:
            raise UpdateRejectedError("corrupt_payload", str(exc)) from exc

    def _split(self, server_round: int, kind: int, replies: Iterable[Message]) -> list[Message]:
        """Valid replies, rewritten to plain arrays/metrics; the others logged and counted."""
        valid: list[Message] = []
        for reply in replies:
            node = reply.metadata.src_node_id
            size = wire_size(reply)
            self.ledger.add_up(server_round, node, size)
            if kind == TRAIN and not reply.has_error() and SEALED in reply.content.config_records:
                self.ledger.update_bytes.append(size)
            try:
                meta, payload = self._open(server_round, kind, reply)
                base = meta.pop(FEEDBACK_BASE, 0)
                metrics = MetricRecord(_metrics(meta))
                if kind == TRAIN:
                    glob = self._global[server_round]
                    arrays = (
                        self._track(node, glob, payload, base)
                        if self.feedback == "tracked"
                        else apply_update(glob, payload)
                    )
                    reply.content = RecordDict(
                        {"arrays": ArrayRecord.from_numpy_ndarrays(arrays), "metrics": metrics}
                    )
                    if server_round not in self._plain_measured:  # the unsealed fp32 reply
                        self._plain_measured.add(server_round)
                        self.ledger.plain_update_bytes.append(wire_size(reply))
                    examples = metrics.get("num-examples")
                    self.ledger.accept(server_round, examples if isinstance(examples, int) else 0)
                else:
                    reply.content = RecordDict({"metrics": metrics})
            except UpdateRejectedError as exc:
                log.warning(
                    "round %d: %s reply of node %d rejected (%s)",
                    server_round,
                    "train" if kind == TRAIN else "evaluate",
                    node,
                    exc,
                )
                if kind == TRAIN:
                    self.ledger.reject(server_round, node, exc.reason)
                    self._estimates.pop(node)  # the site starts over next time
                continue
            valid.append(reply)
        return valid

    def _track(self, node: int, glob: Arrays, payload: bytes, base: object) -> Arrays:
        """Tracked feedback: add the payload to the node's estimate; global + estimate."""
        if isinstance(base, bool) or not isinstance(base, int) or base < 0:
            raise UpdateRejectedError("corrupt_payload", f"{FEEDBACK_BASE} {base!r}")
        delta = checked_delta(glob, payload)
        held = self._estimates.get(node) if base != 0 else None  # none read back for a restart
        if base == 0:
            estimate = delta
        elif held is not None and held[0] == base:
            estimate = [(e + d).astype(np.float32) for e, d in zip(held[1], delta, strict=True)]
        else:
            raise UpdateRejectedError(
                "feedback_mismatch",
                f"update against estimate {base}, server holds {held[0] if held else 0}",
            )
        self._estimates.put(node, (base + 1, estimate))
        return [(g + e).astype(np.float32) for g, e in zip(glob, estimate, strict=True)]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid = self._split(server_round, TRAIN, replies)
        arrays, metrics = self.inner.aggregate_train(server_round, valid)
        counts = self.ledger.round_report(server_round)
        log.info("round %d: %s", server_round, counts)
        merged = MetricRecord({**dict(metrics or {}), **counts})
        return arrays, merged

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        valid = self._split(server_round, EVALUATE, replies)
        self._global.pop(server_round, None)
        return self.inner.aggregate_evaluate(server_round, valid)


def _metrics(meta: dict[str, Any]) -> dict[str, int | float | list[int] | list[float]]:
    out: dict[str, int | float | list[int] | list[float]] = {}
    for k, v in meta.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise UpdateRejectedError("corrupt_payload", f"metric {k!r} is not a number")
        out[str(k)] = v
    n = out.get("num-examples")
    if not isinstance(n, int) or n < 0:
        raise UpdateRejectedError("corrupt_payload", "num-examples missing or negative")
    return out
