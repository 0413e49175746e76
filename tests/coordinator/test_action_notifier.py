"""The action notifier wakes waiting polls when actions are stored by any process on the
database (its watch of the newest action id), never loses a wake that lands between a
poll's read and its wait, stops watching when no poll waits, and does not spin while the
database is away."""

from __future__ import annotations

import asyncio
import time

from fedge.coordinator._actions import ActionNotifier


def test_the_watch_wakes_a_poll_when_another_process_stores_an_action() -> None:
    newest = [5]  # the database's newest action id, as another worker moves it
    notifier = ActionNotifier(lambda: newest[0], watch_s=0.01)

    async def scenario() -> None:
        await asyncio.wait_for(notifier.wait(30), 10)  # the watch's first read wakes once
        seen = notifier.generation
        waiting = asyncio.create_task(notifier.wait(30, seen))
        while notifier.waiting == 0:
            await asyncio.sleep(0.001)
        newest[0] = 6
        await asyncio.wait_for(waiting, 10)  # woken by the watch, not after its 30 s
        assert notifier.generation == seen + 1

    asyncio.run(scenario())


def test_a_wake_between_the_read_and_the_wait_is_not_lost() -> None:
    notifier = ActionNotifier()  # this process alone: notify() is the only wake

    async def scenario() -> None:
        seen = notifier.generation  # the poll reads its actions: none
        notifier.notify()  # an action stored before the poll waits
        await asyncio.wait_for(notifier.wait(30, seen), 5)  # returns at once

    asyncio.run(scenario())
    assert notifier.waiting == 0


def test_the_watch_stops_when_no_poll_waits() -> None:
    notifier = ActionNotifier(lambda: 1, watch_s=0.01)
    assert not notifier.watching
    asyncio.run(notifier.wait(0.05))
    deadline = time.monotonic() + 10
    while notifier.watching and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not notifier.watching


def test_an_unreadable_database_wakes_nobody() -> None:
    def away() -> int:
        raise ConnectionError("database away")

    notifier = ActionNotifier(away, watch_s=0.01)
    asyncio.run(notifier.wait(0.3))  # the poll's own timeout ends it, not a spurious wake
    assert notifier.generation == 0
