"""Send a round step's messages and collect the replies, polling briskly.

Flower's HTTP Grid sleeps three seconds between pulls, so every round step (hello, train,
evaluate) ends up to three seconds after its last reply arrived: on a two-step round that
is seconds of idle time per round for every run. A pull is one cheap request to the
SuperLink, so the round loop polls on a short interval that backs off while nothing
arrives, up to ``max_poll_s``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["exchange"]

FIRST_POLL_S = 0.1
MAX_POLL_S = 1.0


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float | None,
    *,
    first_poll_s: float = FIRST_POLL_S,
    max_poll_s: float = MAX_POLL_S,
) -> list[Message]:
    """Push ``messages`` and pull their replies until all arrived or ``timeout`` (seconds,
    ``None`` waits for every reply) ran out; returns the replies that arrived."""
    pending = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    poll = first_poll_s
    while pending:
        got = list(grid.pull_messages(pending))
        replies += got
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not pending:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        poll = first_poll_s if got else min(poll * 2, max_poll_s)
        time.sleep(poll if deadline is None else min(poll, deadline - now))
    return replies
