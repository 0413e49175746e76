"""Introducing nodes as they appear: the round loop's Grid I/O before each round.

Nodes join a run at any time (a SuperNode starts late, the simulation engine registers
its virtual nodes in bursts), so before each round the loop says hello to every node id
it has not bound yet (:mod:`fedge.federation._hello`). The strategy then samples only
among bound nodes (:class:`BoundGrid`), so an honest node is never sampled before it could
be sent a sealed model. A node whose answer fails (not enrolled, revoked, bad signature)
is refused by name and counted, and not asked again in this run; a node that did not
answer in time is asked again before the next round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid

from fedge.federation._accounting import Ledger, wire_size
from fedge.federation._channel import ServerChannel
from fedge.federation._errors import UpdateRejectedError
from fedge.federation._hello import Challenge, hello_message, verify_answer

log = logging.getLogger(__name__)


class Introducer:
    """Binds new nodes to enrolled sites over the Grid; one per run."""

    def __init__(
        self,
        grid: Grid,
        channel: ServerChannel,
        ledger: Ledger,
        *,
        timeout: float = 120.0,
        settle_s: float = 1.0,
    ) -> None:
        self.grid, self.channel, self.ledger = grid, channel, ledger
        self.timeout = timeout
        self.settle_s = settle_s  # how long the node list must stay unchanged at start
        self.refused: dict[int, str] = {}

    def wait_for_nodes(self, patience_s: float = 60.0) -> None:
        """At run start: wait until some node is registered and the list stops growing."""
        deadline = time.monotonic() + patience_s
        seen: set[int] = set()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            nodes = set(self.grid.get_node_ids())
            if nodes != seen:
                seen, stable_since = nodes, time.monotonic()
            elif seen and time.monotonic() - stable_since >= self.settle_s:
                return
            time.sleep(0.1)

    def new_nodes(self) -> list[int]:
        return [
            n
            for n in self.grid.get_node_ids()
            if not self.channel.knows(n) and n not in self.refused
        ]

    def introduce(self) -> int:
        """Say hello to every node not bound or refused yet; returns how many were bound."""
        nodes = self.new_nodes()
        if not nodes:
            return 0
        run_id = self.grid.run.run_id
        challenges: dict[int, Challenge] = {}
        msgs: list[Message] = []
        for node in nodes:
            content, challenge = hello_message(self.channel.identity, run_id, node)
            challenges[node] = challenge
            msgs.append(_query(content, node))
        self.ledger.hello_down += sum(wire_size(m) for m in msgs)
        bound = 0
        for reply in self.grid.send_and_receive(msgs, timeout=self.timeout):
            self.ledger.hello_up += wire_size(reply)
            node = reply.metadata.src_node_id
            if node not in challenges:
                continue
            challenge = challenges.pop(node)
            try:
                site_id = verify_answer(
                    reply, challenge, self.channel.identity.site_id, self.channel.directory
                )
            except UpdateRejectedError as exc:
                if exc.reason == "client_error":  # e.g. the node's keys are not set up yet
                    log.warning("hello: node %d failed: %s", node, exc)
                    continue
                log.warning("hello: node %d refused (%s)", node, exc)
                self.refused[node] = exc.reason
                self.ledger.hello_refused[exc.reason] += 1
                continue
            self.channel.bind(node, site_id)
            self.ledger.nodes_bound += 1
            bound += 1
        for node in challenges:
            log.warning("hello: node %d did not answer; asking again next round", node)
        return bound


def _query(content: RecordDict, node: int) -> Message:
    return Message(content=content, dst_node_id=node, message_type=MessageType.QUERY)


class BoundGrid(Grid):
    """The run's Grid as the strategy should see it: only nodes bound to enrolled sites."""

    def __init__(self, inner: Grid, channel: ServerChannel) -> None:
        self.inner, self.channel = inner, channel

    def set_run(self, run: object) -> None:
        self.inner.set_run(run)  # type: ignore[arg-type]

    @property
    def run(self) -> object:  # type: ignore[override]
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.inner.get_node_ids() if self.channel.knows(n)]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)
