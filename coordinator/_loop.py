"""A scheduler's daemon thread that stops and starts again: a replica that steps down
stops its schedulers, and starts them once more when it is elected again."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Loop"]


class Loop:
    """Runs ``target`` on a daemon thread named ``name`` until :meth:`stop`; ``stopping``
    is the event ``target`` waits on between its steps."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name, self._target = name, target
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:  # again after a stop: elected once more
            self.stopping.clear()
            self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
