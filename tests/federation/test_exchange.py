"""The round loop's push-and-pull: every reply collected, the timeout honoured."""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid

from fedge.federation._exchange import exchange


class _Nodes(Grid):
    """A Grid whose nodes each answer after ``delay_s[node]`` seconds (never if absent)."""

    def __init__(self, delay_s: dict[int, float]) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 0, 0
        self.delay_s = delay_s
        self.sent: dict[str, tuple[Message, float]] = {}
        self.pulls = 0

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{i}"
            self.sent[f"m{i}"] = (msg, time.monotonic())
            ids.append(f"m{i}")
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        now = time.monotonic()
        out = []
        for mid in list(message_ids):
            msg, at = self.sent[mid]
            delay = self.delay_s.get(msg.metadata.dst_node_id)
            if delay is not None and now - at >= delay:
                out.append(Message(RecordDict(), reply_to=msg))
        return out

    @property
    def run(self) -> object:  # type: ignore[override]
        raise NotImplementedError

    def set_run(self, run_id: object) -> None:
        raise NotImplementedError

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.delay_s)

    def send_and_receive(self, *args: object, **kwargs: object) -> Iterable[Message]:
        raise AssertionError("the round loop pulls itself")


def _messages(nodes: Iterable[int]) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]


def test_every_reply_is_collected_and_the_step_ends_when_the_last_arrives() -> None:
    grid = _Nodes({1: 0.0, 2: 0.3, 3: 0.6})
    start = time.monotonic()
    replies = exchange(grid, _messages([1, 2, 3]), timeout=60.0)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert time.monotonic() - start < 30.0  # the step ended on its replies, not its timeout


def test_a_node_that_never_answers_ends_the_step_at_its_timeout_with_the_others() -> None:
    grid = _Nodes({1: 0.0, 2: 0.1})  # node 3 never answers
    start = time.monotonic()
    replies = exchange(grid, _messages([1, 2, 3]), timeout=1.5)
    waited = time.monotonic() - start
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    assert 1.5 <= waited < 10.0  # ended by its timeout, not waiting on for the silent node
    # Backing off while nothing arrives: a handful of pulls, not one per 0.1 s.
    assert grid.pulls <= 8


def test_no_messages_means_no_pull() -> None:
    grid = _Nodes({})
    assert exchange(grid, [], timeout=5.0) == []
    assert grid.pulls == 0
