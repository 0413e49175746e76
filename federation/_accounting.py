"""Bytes on the Flower transport, measured by serialising the very messages sent and received.

Each :class:`flwr.app.Message` is turned into Flower's own protobuf (``message_to_proto``)
and its encoded length counted: that is what the gRPC transport carries (framing aside).
Nothing is estimated from tensor sizes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message
from flwr.common.serde import message_to_proto


def wire_size(msg: Message) -> int:
    return len(message_to_proto(msg).SerializeToString())


@dataclass
class Ledger:
    """Per-round, per-site byte counts and the security outcome of every reply."""

    codec: str = ""
    downlink_codec: str = "fp32"
    up: dict[int, dict[int, int]] = field(default_factory=dict)  # round -> node -> bytes
    down: dict[int, dict[int, int]] = field(default_factory=dict)
    update_bytes: list[int] = field(default_factory=list)  # sealed train replies
    plain_update_bytes: list[int] = field(default_factory=list)  # same replies, fp32 unsealed
    hello_up: int = 0
    hello_down: int = 0
    down_messages: int = 0  # sealed global models sent (train and evaluate)
    updates_sealed: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_nodes: dict[int, dict[int, str]] = field(default_factory=dict)
    sampled: dict[int, int] = field(default_factory=dict)  # round -> train messages asked for
    accepted_in: dict[int, int] = field(default_factory=dict)  # round -> updates aggregated
    nodes_bound: int = 0  # nodes that proved an enrolled site in their hello
    hello_refused: Counter[str] = field(default_factory=Counter)  # reason -> nodes
    refused_in: dict[int, Counter[str]] = field(default_factory=dict)  # round -> hellos
    examples_in: dict[int, int] = field(default_factory=dict)  # round -> training windows

    def sample(self, server_round: int, n: int) -> None:
        self.sampled[server_round] = self.sampled.get(server_round, 0) + n

    def accept(self, server_round: int, examples: int = 0) -> None:
        self.accepted += 1
        self.accepted_in[server_round] = self.accepted_in.get(server_round, 0) + 1
        self.examples_in[server_round] = self.examples_in.get(server_round, 0) + examples

    def refuse_hello(self, server_round: int, reason: str) -> None:
        self.hello_refused[reason] += 1
        self.refused_in.setdefault(server_round, Counter())[reason] += 1

    def round_counts(self, server_round: int) -> dict[str, int]:
        """Sampled, accepted and rejected train updates of one round."""
        return {
            "sampled": self.sampled.get(server_round, 0),
            "accepted": self.accepted_in.get(server_round, 0),
            "rejected": len(self.rejected_nodes.get(server_round, {})),
        }

    def round_report(self, server_round: int) -> dict[str, int]:
        """:meth:`round_counts`, the windows trained on in the accepted updates, and every
        refusal by reason: ``rejected_<reason>`` for updates, ``refused_<reason>`` for hellos."""
        out = {**self.round_counts(server_round), "examples": self.examples_in.get(server_round, 0)}
        for reason in self.rejected_nodes.get(server_round, {}).values():
            out[f"rejected_{reason}"] = out.get(f"rejected_{reason}", 0) + 1
        for reason, n in sorted(self.refused_in.get(server_round, Counter()).items()):
            out[f"refused_{reason}"] = n
        return out

    def add_down(self, server_round: int, node: int, n: int) -> None:
        per = self.down.setdefault(server_round, {})
        per[node] = per.get(node, 0) + n
        self.down_messages += 1

    def add_up(self, server_round: int, node: int, n: int) -> None:
        per = self.up.setdefault(server_round, {})
        per[node] = per.get(node, 0) + n

    def reject(self, server_round: int, node: int, reason: str) -> None:
        self.rejected[reason] += 1
        self.rejected_nodes.setdefault(server_round, {})[node] = reason

    def summary(self) -> dict[str, Any]:
        up = self.hello_up + sum(sum(v.values()) for v in self.up.values())
        down = self.hello_down + sum(sum(v.values()) for v in self.down.values())
        mean = sum(self.update_bytes) / len(self.update_bytes) if self.update_bytes else None
        plain = (
            sum(self.plain_update_bytes) / len(self.plain_update_bytes)
            if self.plain_update_bytes
            else None
        )
        sent_down = down - self.hello_down
        return {
            "comm": {
                "codec": self.codec,
                "downlink_codec": self.downlink_codec,
                "bytes_up_total": up,
                "bytes_down_total": down,
                "bytes_per_model_down_mean": round(sent_down / self.down_messages, 1)
                if self.down_messages
                else None,
                "bytes_per_update_mean": round(mean, 1) if mean is not None else None,
                "fp32_update_bytes": round(plain, 1) if plain is not None else None,
                "compression_ratio": round(plain / mean, 3) if mean and plain else None,
                "handshake_bytes": {"up": self.hello_up, "down": self.hello_down},
                "per_round": [
                    {
                        "round": r,
                        "up": sum(self.up.get(r, {}).values()),
                        "down": sum(self.down.get(r, {}).values()),
                        "sites_up": len(self.up.get(r, {})),
                        **self.round_report(r),
                    }
                    for r in sorted(set(self.up) | set(self.down) | set(self.sampled))
                ],
            },
            "security": {
                "updates_sealed": self.updates_sealed,
                "accepted": self.accepted,
                "rejected": dict(sorted(self.rejected.items())),
                "nodes_bound": self.nodes_bound,
                "hello_refused": dict(sorted(self.hello_refused.items())),
            },
        }
