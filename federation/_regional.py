"""Regional aggregators: sites send to their region, each region one update to the coordinator.

Flower has one server tier. :class:`RegionalStrategy` adds a second inside the ServerApp,
as the inner strategy of :class:`~fedge.federation.SealedStrategy` (docs/hierarchy.md):

* sites -> region: the sealed strategy opens each site's sealed, compressed update with
  the site's own error feedback, exactly as in a flat run, and hands the plain replies in;
* region: Flower's ``FedAvg`` aggregates the region's sites (weighted by their windows);
* region -> coordinator: the region sends the difference between its aggregate and the
  global model it received, compressed with the region's codec and its own tracked error
  feedback (EF21: both ends keep the region's estimate), sealed in a session envelope of
  the region's identity to the coordinator's (X-Wing handshake on first contact, then
  per-round keys: the same :mod:`fedge.federation._channel` a site uses);
* coordinator: the run's strategy (FedAvg, FedProx, ...) aggregates the K regional
  models, each weighted by the windows its region trained on, so with lossless codecs
  and one region the result is flat FedAvg's.

Downlinks mirror it: the coordinator seals the (compressed) global model once per region,
the region relays the same payload to its sites. Every hop's bytes are the serialised
Flower messages, counted in a :class:`Ledger` per tier. Evaluation replies take the same
path: a region sends one sealed metrics record (its sites' weighted means) up.

Sites are assigned by the coordinator, never by what a node claims: the region of a node
is the region of the enrolled site its hello proved (:class:`RegionMap`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from fedge.federation._accounting import Ledger, wire_size
from fedge.federation._channel import EVALUATE, TRAIN, ServerChannel, SiteChannel
from fedge.federation._codec import Arrays, CodecSchedule, CodecSpec, encode
from fedge.federation._errors import CodecError, FederationError, UpdateRejectedError
from fedge.federation._residual import compress_difference
from fedge.federation._site_mod import FEEDBACK_BASE, SEALED, envelope_fields
from fedge.federation._update import checked_delta, frame, unframe
from fedge.security import ContentType, KeyDirectory, SiteIdentity

log = logging.getLogger(__name__)

#: Node ids the coordinator gives its regions' links (a deployed region is a SuperNode
#: of the central SuperLink and gets its id from there).
REGION_NODE_BASE = 1 << 40


@dataclass(frozen=True)
class RegionMap:
    """The region (0..K-1) of every enrolled site, as the coordinator's registry holds it."""

    regions: int
    of_site: dict[bytes, int]

    def __post_init__(self) -> None:
        if self.regions < 1:
            raise FederationError(f"regions must be >= 1, got {self.regions}")
        bad = {r for r in self.of_site.values() if not 0 <= r < self.regions}
        if bad:
            raise FederationError(f"region index {sorted(bad)} outside 0..{self.regions - 1}")
        empty = set(range(self.regions)) - set(self.of_site.values())
        if empty:
            raise FederationError(f"region(s) {sorted(empty)} hold no site")

    @classmethod
    def contiguous(cls, site_ids: Sequence[bytes], regions: int) -> RegionMap:
        """Site ``i`` of ``n`` (in registry order) to region ``floor(i * K / n)``: K blocks
        of consecutive sites whose sizes differ by at most one."""
        n = len(site_ids)
        if not 1 <= regions <= n:
            raise FederationError(f"regions must be in [1, {n}] (the sites), got {regions}")
        return cls(regions, {s: i * regions // n for i, s in enumerate(site_ids)})

    def sizes(self) -> list[int]:
        counts = [0] * self.regions
        for r in self.of_site.values():
            counts[r] += 1
        return counts


@dataclass
class Hierarchy:
    """What the regional tier needs: the assignment, each region's identity (its key as a
    SuperNode of the central SuperLink), the coordinator's identity, and where the
    regions keep their channel state."""

    regions: RegionMap
    identities: list[SiteIdentity]
    coordinator: SiteIdentity
    state_dir: Path

    def __post_init__(self) -> None:
        if len(self.identities) != self.regions.regions:
            raise FederationError(
                f"{len(self.identities)} region identities for {self.regions.regions} regions"
            )


@dataclass
class _Region:
    """One region's side of its link to the coordinator."""

    channel: SiteChannel
    estimate: Arrays | None = None  # tracked feedback: what the coordinator holds of it
    seq: int = 0


@dataclass
class _Held:
    """The coordinator's copy of one region's estimate."""

    seq: int = 0
    estimate: Arrays = field(default_factory=list)


class RegionalStrategy(Strategy):
    """Per-region FedAvg under ``top``, the coordinator's strategy over the regions."""

    def __init__(
        self,
        top: Strategy,
        hierarchy: Hierarchy,
        codec: CodecSchedule,
        downlink: CodecSpec,
        ledger: Ledger | None = None,
    ) -> None:
        self.top = top
        self.map = hierarchy.regions
        self.codec = codec
        self.downlink = downlink
        self.ledger = ledger or Ledger(codec=str(codec.default), downlink_codec=str(downlink))
        directory = KeyDirectory()
        for ident in hierarchy.identities:
            directory.register(ident.public_keys())
        self.coordinator = ServerChannel(hierarchy.coordinator, directory)
        public = hierarchy.coordinator.public_keys()
        self._regions: list[_Region] = []
        for r, ident in enumerate(hierarchy.identities):
            self.coordinator.bind(REGION_NODE_BASE + r, ident.site_id)
            site_dir = hierarchy.state_dir / f"region-{r:04d}"
            self._regions.append(_Region(SiteChannel(ident, public, site_dir)))
        self._held: dict[int, _Held] = {}
        self._global: dict[int, Arrays] = {}
        # Set once the sites' sealed channel exists: node -> the enrolled site it proved.
        self.site_of: Callable[[int], bytes] | None = None

    def summary(self) -> None:
        self.top.summary()

    def region_of(self, node: int) -> int:
        if self.site_of is None:
            raise FederationError("the regional tier needs the sites' sealed channel")
        site = self.site_of(node)
        region = self.map.of_site.get(site)
        if region is None:
            raise UpdateRejectedError("unknown_region", f"site {site.hex()[:16]} has no region")
        return region

    # --- coordinator -> regions -> sites ---

    def _down(self, server_round: int, kind: int, arrays: ArrayRecord, sent: list[Message]) -> None:
        """The coordinator seals the global model once per region whose sites were sampled;
        each region opens it (and would relay the same payload to its sites)."""
        weights = [np.asarray(a, np.float32) for a in arrays.to_numpy_ndarrays()]
        self._global[server_round] = weights
        payload = encode(weights, self.downlink)
        regions = sorted({self.region_of(m.metadata.dst_node_id) for m in sent})
        if kind == TRAIN:
            self.ledger.sample(server_round, len(regions))
        mtype = MessageType.TRAIN if kind == TRAIN else MessageType.EVALUATE
        for r in regions:
            node = REGION_NODE_BASE + r
            fields = self.coordinator.seal_down(node, server_round, kind, frame({}, payload))
            msg = Message(
                content=RecordDict({SEALED: ConfigRecord(dict(fields))}),
                dst_node_id=node,
                message_type=mtype,
            )
            self.ledger.add_down(server_round, node, wire_size(msg))
            meta, body = unframe(self._regions[r].channel.open_down(server_round, kind, fields))
            if body != payload or meta:
                raise FederationError(f"region {r}: the global model did not arrive intact")

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = list(self.top.configure_train(server_round, arrays, config, grid))
        self._down(server_round, TRAIN, arrays, sent)
        return sent

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = list(self.top.configure_evaluate(server_round, arrays, config, grid))
        self._down(server_round, EVALUATE, arrays, sent)
        return sent

    # --- sites -> regions -> coordinator ---

    def _by_region(self, replies: Iterable[Message]) -> dict[int, list[Message]]:
        out: dict[int, list[Message]] = {}
        for reply in replies:
            out.setdefault(self.region_of(reply.metadata.src_node_id), []).append(reply)
        return dict(sorted(out.items()))

    def _up(
        self, server_round: int, kind: int, region: int, meta: dict[str, Any], payload: bytes
    ) -> tuple[dict[str, Any], bytes] | None:
        """The region seals ``meta`` + ``payload`` to the coordinator, which measures and
        opens it; None (counted by reason) when it does not open."""
        node = REGION_NODE_BASE + region
        content = ContentType.MODEL_UPDATE if kind == TRAIN else ContentType.METRICS
        fields = self._regions[region].channel.seal_up(
            server_round, kind, frame(meta, payload), content
        )
        msg = Message(
            content=RecordDict({SEALED: ConfigRecord(dict(fields))}),
            dst_node_id=0,
            message_type=MessageType.TRAIN if kind == TRAIN else MessageType.EVALUATE,
        )
        size = wire_size(msg)
        self.ledger.add_up(server_round, node, size)
        if kind == TRAIN:
            self.ledger.update_bytes.append(size)
            self.ledger.updates_sealed += 1
        try:
            opened = self.coordinator.open_up(
                node, server_round, kind, envelope_fields(msg.content.config_records[SEALED])
            )
            return unframe(opened)
        except (UpdateRejectedError, CodecError) as exc:
            reason = exc.reason if isinstance(exc, UpdateRejectedError) else "corrupt_payload"
            log.warning("round %d: region %d's update rejected (%s)", server_round, region, exc)
            if kind == TRAIN:
                self.ledger.reject(server_round, node, reason)
            return None

    def _regional_update(
        self, server_round: int, region: int, model: Arrays, metrics: dict[str, Any]
    ) -> Message | None:
        """Region: ``C(aggregate - global - estimate)``, up; coordinator: global + estimate."""
        glob = self._global[server_round]
        delta = [(m - g).astype(np.float32) for m, g in zip(model, glob, strict=True)]
        side = self._regions[region]
        estimate = side.estimate or [np.zeros_like(d) for d in delta]
        payload, new_estimate = compress_difference(delta, estimate, self.codec.at(server_round))
        opened = self._up(
            server_round, TRAIN, region, {**metrics, FEEDBACK_BASE: side.seq}, payload
        )
        if opened is None:
            side.estimate, side.seq = None, 0  # both ends start over
            self._held.pop(region, None)
            return None
        side.estimate, side.seq = new_estimate, side.seq + 1
        meta, body = opened
        base = meta.pop(FEEDBACK_BASE, None)
        node = REGION_NODE_BASE + region
        try:
            sent = checked_delta(glob, body)
            held = self._held.get(region, _Held())
            if base != held.seq:
                raise UpdateRejectedError(
                    "feedback_mismatch", f"update against estimate {base}, held {held.seq}"
                )
            est = (
                sent
                if held.seq == 0
                else [(e + d).astype(np.float32) for e, d in zip(held.estimate, sent, strict=True)]
            )
        except UpdateRejectedError as exc:
            log.warning("round %d: region %d's update rejected (%s)", server_round, region, exc)
            self.ledger.reject(server_round, node, exc.reason)
            side.estimate, side.seq = None, 0
            self._held.pop(region, None)
            return None
        self._held[region] = _Held(held.seq + 1, est)
        examples = meta.get("num-examples")
        self.ledger.accept(server_round, examples if isinstance(examples, int) else 0)
        arrays = [(g + e).astype(np.float32) for g, e in zip(glob, est, strict=True)]
        return _reply(node, MessageType.TRAIN, arrays, _numbers(meta))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        regional: list[Message] = []
        for region, msgs in self._by_region(replies).items():
            arrays, metrics = _FEDAVG.aggregate_train(server_round, msgs)
            if arrays is None:
                continue
            record = {**dict(metrics or {}), "num-examples": _examples(msgs)}
            model = [np.asarray(a, np.float32) for a in arrays.to_numpy_ndarrays()]
            reply = self._regional_update(server_round, region, model, record)
            if reply is not None:
                regional.append(reply)
        return self.top.aggregate_train(server_round, regional)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        regional: list[Message] = []
        for region, msgs in self._by_region(replies).items():
            metrics = _FEDAVG.aggregate_evaluate(server_round, msgs)
            if metrics is None:
                continue
            record = {**dict(metrics), "num-examples": _examples(msgs)}
            opened = self._up(server_round, EVALUATE, region, record, b"")
            if opened is not None:
                node = REGION_NODE_BASE + region
                regional.append(_reply(node, MessageType.EVALUATE, None, _numbers(opened[0])))
        self._global.pop(server_round, None)
        return self.top.aggregate_evaluate(server_round, regional)


#: Flower's FedAvg as each region's aggregator (it only aggregates; nothing is sampled).
_FEDAVG = FedAvg()


def _examples(msgs: list[Message]) -> int:
    total = 0
    for m in msgs:
        n = m.content["metrics"].get("num-examples") if "metrics" in m.content else None
        total += n if isinstance(n, int) else 0
    return total


def _numbers(meta: dict[str, Any]) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for k, v in meta.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise UpdateRejectedError("corrupt_payload", f"metric {k!r} is not a number")
        out[str(k)] = v
    return out


def _reply(
    node: int, mtype: str, arrays: Arrays | None, metrics: dict[str, int | float]
) -> Message:
    """The regional update as the coordinator's strategy takes it: a plain reply."""
    content = RecordDict({"metrics": MetricRecord(dict(metrics))})
    if arrays is not None:
        content["arrays"] = ArrayRecord.from_numpy_ndarrays(arrays)
    return Message(content=content, dst_node_id=node, message_type=mtype)


def tiers(sites: Ledger, regional: RegionalStrategy) -> dict[str, Any]:
    """Bytes per tier of a regional run: the sites' hop (their hellos included) from the
    sealed strategy's ledger, the regions' hop from the regional one."""
    s = sites.summary()["comm"]
    r = regional.ledger.summary()
    up = r["comm"]
    return {
        "regions": regional.map.regions,
        "sites_per_region": regional.map.sizes(),
        "region_codec": str(regional.codec.default),
        "bytes": {
            "sites_to_regions": s["bytes_up_total"],
            "regions_to_sites": s["bytes_down_total"],
            "regions_to_coordinator": up["bytes_up_total"],
            "coordinator_to_regions": up["bytes_down_total"],
        },
        "bytes_per_regional_update_mean": up["bytes_per_update_mean"],
        "regional_updates_by_round": {
            str(row["round"]): row["accepted"] for row in up["per_round"]
        },
        "per_round": up["per_round"],
        "security": r["security"],
    }
