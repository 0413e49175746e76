"""Rich progress bars for the harness: one bar per method."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from fedge.simulation._run import RunProgress

_UNITS = {"fedavg": "rounds", "fedprox": "rounds", "local": "sites", "centralized": "rounds"}


class RichProgress(RunProgress):
    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start(self, task: str, total: int) -> None:
        label = f"{task} ({_UNITS.get(task, 'steps')})"
        self._tasks[task] = self._progress.add_task(label, total=total)

    def advance(self, task: str) -> None:
        if task in self._tasks:
            self._progress.advance(self._tasks[task])
