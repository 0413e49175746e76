"""An in-process Flower ``Grid`` for protocol tests: the real ClientApp on every node, each
message serialised to Flower's protobuf and back (as the transport does), every byte kept
for an eavesdropper, and nodes that can appear at any time."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid


@dataclass
class Wire:
    """Every message that crossed the grid, serialised, both ways."""

    down: list[bytes] = field(default_factory=list)
    up: list[bytes] = field(default_factory=list)

    def everything(self) -> bytes:
        return b"".join(self.down + self.up)


@dataclass(frozen=True)
class _Run:
    run_id: int


def _over_the_wire(msg: Message, log: list[bytes]) -> Message:
    blob = message_to_proto(msg).SerializeToString()
    log.append(blob)
    from flwr.proto.message_pb2 import Message as ProtoMessage

    proto = ProtoMessage()
    proto.ParseFromString(blob)
    return message_from_proto(proto)


class LocalGrid(Grid):
    """Nodes are (node id, node config) pairs answered by ``app`` in this process."""

    def __init__(self, app: ClientApp, run_id: int = 4242) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 0
        self.app = app
        self._run = _Run(run_id)
        self.nodes: dict[int, dict[str, Any]] = {}
        self.wire = Wire()
        self.sent = 0  # pushes: one per round step
        self.replies: dict[str, Message] = {}  # message id -> its node's answer, until pulled
        self.after_send: Callable[[LocalGrid], None] = lambda _grid: None
        self.apps: dict[int, ClientApp] = {}  # a node answered by another app (an attacker)

    def add_node(
        self, node_id: int, node_config: dict[str, Any], app: ClientApp | None = None
    ) -> None:
        self.nodes[node_id] = node_config
        if app is not None:
            self.apps[node_id] = app

    def set_run(self, run: Any) -> None:
        raise TypeError("LocalGrid serves one fixed run")

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    # The round loop pushes a step's messages and pulls the replies, as on a SuperLink.
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            reply = self.deliver(msg)
            self.replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        self.sent += 1
        self.after_send(self)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def deliver(self, msg: Message) -> Message:
        """One message to its node and the node's answer, both through the wire."""
        msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # what the SuperLink does
        arrived = _over_the_wire(msg, self.wire.down)
        node = msg.metadata.dst_node_id
        context = Context(self._run.run_id, node, dict(self.nodes[node]), RecordDict(), {})
        app = self.apps.get(node, self.app)
        try:
            reply = app(arrived, context)
        except Exception as exc:  # a ClientApp's failure reaches the server as an error reply
            reply = Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=arrived)
        return _over_the_wire(reply, self.wire.up)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        return list(self.pull_messages(ids))
