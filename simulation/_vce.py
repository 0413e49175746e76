"""Flower's simulation runtime at fleet scale: cost per sampled node, not per registered one.

Flower 1.41's runtime (``flwr.server.superlink.fleet.vce.vce_api``) does two things per
registered node that a run over 10,000 or 100,000 virtual sites cannot afford:

- before the first round it builds every node's run context (a ``DeprecatedRunInfoStore``
  holding a ``Context`` with the run's configuration), whether or not the node is ever
  sampled;
- every 0.1 s its feeder thread asks the link state for each node's next message, one
  call per node, and each call scans every pending message: nodes times messages under the
  state's lock, ten times a second, on the cores the sites train on.

``scaled_runtime()`` replaces both for the duration of one ``run_simulation``: contexts are
built when a node first gets a message, and the feeder collects every undelivered message
in one scan per poll. Messages, contexts and replies are Flower's own objects, handled as
its functions handle them; only when the link state is not the in-memory one (the only one
the simulation makes) does the feeder fall back to Flower's loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from queue import Queue
from typing import Any

from flwr.app import Message
from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY
from flwr.compat.client.run_info_store import DeprecatedRunInfoStore
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkState
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.supercore.date import now
from flwr.supercore.run import Run

__all__ = ["LazyRunInfoStores", "pending_messages", "scaled_runtime"]

_PATCH_LOCK = threading.Lock()  # one patched runtime at a time in this process


class LazyRunInfoStores(dict[int, DeprecatedRunInfoStore]):
    """``node id -> DeprecatedRunInfoStore``, each built (and its context registered) the
    first time the runtime looks the node up: Flower's workers index it as a dict."""

    def __init__(self, nodes: Mapping[int, int], run: Run, app_dir: str | None) -> None:
        super().__init__()
        self._nodes, self._run, self._app_dir = nodes, run, app_dir
        self._partitions = len(set(nodes.values()))
        self._lock = threading.Lock()

    def __missing__(self, node_id: int) -> DeprecatedRunInfoStore:
        with self._lock:  # Flower runs one worker thread per backend worker
            if dict.__contains__(self, node_id):
                return dict.__getitem__(self, node_id)
            partition = self._nodes[node_id]  # KeyError: not a node of this run
            store = DeprecatedRunInfoStore(
                node_id=node_id,
                node_config={PARTITION_ID_KEY: partition, NUM_PARTITIONS_KEY: self._partitions},
            )
            store.register_context(run_id=self._run.run_id, run=self._run, app_dir=self._app_dir)
            self[node_id] = store
            return store


_MADE: list[LazyRunInfoStores] = []  # the stores of the patched run (scaled_runtime's)


def _lazy_stores(
    nodes_mapping: dict[int, int], run: Run, app_dir: str | None = None
) -> dict[int, DeprecatedRunInfoStore]:
    stores = LazyRunInfoStores(nodes_mapping, run, app_dir)
    _MADE.append(stores)
    return stores


def pending_messages(state: InMemoryLinkState, nodes: Mapping[int, int]) -> list[Message]:
    """Every undelivered message to one of ``nodes``, marked delivered, in one pass over
    the state's messages (what ``get_message_ins(node, limit=1)`` per node returns over
    enough polls, in the same order per node)."""
    found: list[Message] = []
    with state.lock:
        state._check_stored_messages(set(state.message_ins_store))  # expired ones go
        for msg_id in list(state.message_ins_store):
            msg = state.message_ins_store.get(msg_id)
            if msg is None:
                continue
            if msg.metadata.delivered_at == "" and msg.metadata.dst_node_id in nodes:
                found.append(msg)
    delivered_at = now().isoformat()
    for msg in found:
        msg.metadata.delivered_at = delivered_at
    return found


def _feed(
    state: LinkState,
    queue: Queue[Message],
    nodes_mapping: dict[int, int],
    f_stop: threading.Event,
) -> None:
    if not isinstance(state, InMemoryLinkState):
        _ORIGINAL["add_messages_to_queue"](state, queue, nodes_mapping, f_stop)
        return
    while not f_stop.is_set():
        for msg in pending_messages(state, nodes_mapping):
            queue.put(msg)
        f_stop.wait(0.1)


_ORIGINAL: dict[str, Callable[..., Any]] = {
    "add_messages_to_queue": vce_api.add_messages_to_queue,
    "_register_node_info_stores": vce_api._register_node_info_stores,
}


@contextmanager
def scaled_runtime() -> Iterator[list[LazyRunInfoStores]]:
    """Flower's runtime with lazy contexts and a one-scan feeder, for one run; yields
    the run's context stores (once it has started), to show what it holds."""
    with _PATCH_LOCK:
        vce_api.add_messages_to_queue = _feed
        vce_api._register_node_info_stores = _lazy_stores
        _MADE.clear()
        try:
            yield _MADE
        finally:
            vce_api.add_messages_to_queue = _ORIGINAL["add_messages_to_queue"]
            vce_api._register_node_info_stores = _ORIGINAL["_register_node_info_stores"]
