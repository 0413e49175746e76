"""Introducing nodes as they are sampled: the round loop's Grid I/O before each round.

Nodes join a run at any time (a SuperNode starts late or comes back after a restart, the
simulation engine registers its virtual nodes in bursts). Before each round the
introducer samples the round's share of the registered nodes, then says hello
(:mod:`fedge.federation._hello`) only to the sampled nodes it has not bound yet, and
replaces those that fail or do not answer in time with others, so the cost of the hello
follows what a round samples, not how many nodes are registered. The strategy then sees
only the round's bound sample (:class:`BoundGrid`), so an honest node is never sampled
before it could be sent a sealed model.

A node whose answer fails (not enrolled, revoked, bad signature) is refused by name and
counted, and not asked again in this run; a node that did not answer in time is asked
again when it is next sampled. A node that proves a site already bound to another node
of the run is refused as ``duplicate_site`` (one site is one update per round): it takes
the site's place only once the older node has left the SuperLink (a restarted SuperNode
that registered again under a new node id).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid

from fedge.federation._accounting import Ledger, wire_size
from fedge.federation._channel import ServerChannel
from fedge.federation._errors import UpdateRejectedError
from fedge.federation._exchange import exchange
from fedge.federation._hello import Challenge, hello_message, verify_answer

log = logging.getLogger(__name__)

DUPLICATE_SITE = "duplicate_site"


class Introducer:
    """Samples each round's nodes and binds the new ones to enrolled sites; one per run."""

    def __init__(
        self,
        grid: Grid,
        channel: ServerChannel,
        ledger: Ledger,
        *,
        timeout: float = 120.0,
        settle_s: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.grid, self.channel, self.ledger = grid, channel, ledger
        self.timeout = timeout
        self.settle_s = settle_s  # how long the node list must stay unchanged at start
        self.refused: dict[int, str] = {}
        self.duplicates: dict[int, bytes] = {}  # node -> the site another node holds
        self.hellos = 0  # hello messages sent in this run
        self._rng = random.Random(seed)

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

    def present(self) -> list[int]:
        """The registered nodes that may take part. Bound nodes that left the SuperLink are
        let go; a node refused as a duplicate takes its site over once the site's node left."""
        ids = list(self.grid.get_node_ids())
        online = set(ids)
        for node in self.channel.bound_nodes():
            if node not in online:
                log.info("node %d left the run; its site may come back as another node", node)
                self.channel.unbind(node)
        for node, site in list(self.duplicates.items()):
            if node not in online:
                del self.duplicates[node]
            elif self.channel.node_of(site) is None:
                del self.duplicates[node]
                self.channel.bind(node, site)
                self.ledger.nodes_bound += 1
                log.info("node %d takes over site %s from a node that left", node, site.hex())
        return [n for n in ids if n not in self.refused and n not in self.duplicates]

    def sample(
        self, server_round: int, fraction: float, minimum: int, deadline: float
    ) -> list[int]:
        """The round's nodes: ``fraction`` of those present (at least ``minimum`` when there
        are as many), all bound; sampled ones that fail their hello are replaced from the
        rest until ``deadline`` (monotonic)."""
        present = self.present()
        want = min(len(present), max(int(len(present) * fraction), minimum))
        order = self._rng.sample(present, len(present))
        chosen: list[int] = []
        pos = 0
        while len(chosen) < want and pos < len(order):
            batch: list[int] = []
            while len(chosen) + len(batch) < want and pos < len(order):
                node = order[pos]
                pos += 1
                if self.channel.knows(node):
                    chosen.append(node)
                elif node not in self.refused and node not in self.duplicates:
                    batch.append(node)
            remaining = deadline - time.monotonic()
            if not batch or remaining <= 0:
                break
            chosen += self.hello(server_round, batch, min(self.timeout, remaining))
        return chosen

    def hello(self, server_round: int, nodes: list[int], timeout: float) -> list[int]:
        """Say hello to ``nodes``; returns those bound to an enrolled site."""
        run_id = self.grid.run.run_id
        challenges: dict[int, Challenge] = {}
        msgs: list[Message] = []
        for node in nodes:
            content, challenge = hello_message(self.channel.identity, run_id, node)
            challenges[node] = challenge
            msgs.append(_query(content, node))
        self.hellos += len(msgs)
        self.ledger.hello_down += sum(wire_size(m) for m in msgs)
        bound: list[int] = []
        for reply in exchange(self.grid, msgs, timeout):
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
                self.ledger.refuse_hello(server_round, exc.reason)
                continue
            holder = self.channel.node_of(site_id)
            if holder is not None and holder != node:
                log.warning(
                    "hello: node %d refused (%s): site %s is node %d in this run",
                    node, DUPLICATE_SITE, site_id.hex(), holder,
                )  # fmt: skip
                self.duplicates[node] = site_id
                self.ledger.refuse_hello(server_round, DUPLICATE_SITE)
                continue
            self.channel.bind(node, site_id)
            self.ledger.nodes_bound += 1
            bound.append(node)
        for node in challenges:
            log.warning("hello: node %d did not answer; asking again when next sampled", node)
        return bound


def _query(content: RecordDict, node: int) -> Message:
    return Message(content=content, dst_node_id=node, message_type=MessageType.QUERY)


class BoundGrid(Grid):
    """The run's Grid as the strategy should see it: the round's sample, only nodes bound
    to enrolled sites (every bound node until a sample is set)."""

    def __init__(self, inner: Grid, channel: ServerChannel) -> None:
        self.inner, self.channel = inner, channel
        self.selected: list[int] | None = None

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
        if self.selected is not None:
            return [n for n in self.selected if self.channel.knows(n)]
        return [n for n in self.inner.get_node_ids() if self.channel.knows(n)]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return exchange(self.inner, messages, timeout)
