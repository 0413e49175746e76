"""Reading an edge agent's SQLite store, read-only: the data a SuperNode trains on.

The agent (``fedge.edge_agent``) writes the store; the SuperNode's ClientApp
(``fedge.federation``) and the simulation read it. Both readers live here, with sqlite3
and numpy only, so the gNB's ClientApp never needs the agent's runtime or the simulation.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedge.core._errors import CoreError
from fedge.core._kpi import KPI_NAMES
from fedge.core._time import step_minute_of_week


class AgentStoreError(CoreError):
    """An agent store that is missing, unreadable, empty, or has no such cell."""


@dataclass(frozen=True)
class StoredCell:
    """One cell's KPIs on a regular step grid (NaN where no sample arrived)."""

    cell: str
    step_seconds: int
    steps: NDArray[np.int64]
    values: NDArray[np.float64]

    @property
    def steps_per_day(self) -> int:
        return 86_400 // self.step_seconds

    def minute_of_week(self) -> NDArray[np.int64]:
        return step_minute_of_week(self.steps, self.step_seconds)


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise AgentStoreError(f"{path}: no agent store")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise AgentStoreError(f"{path}: cannot open store read-only: {exc}") from exc


def stored_cells(path: Path) -> list[str]:
    """Cell ids in a store (sorted), read-only: the sites a SuperNode can train on."""
    db = _connect(path)
    try:
        return [r[0] for r in db.execute("SELECT DISTINCT cell FROM samples ORDER BY cell")]
    except sqlite3.Error as exc:
        raise AgentStoreError(f"{path}: {exc}") from exc
    finally:
        db.close()


def read_cell(path: Path, index: int) -> StoredCell:
    """The ``index``-th cell (sorted by id) of a store, on a regular grid."""
    db = _connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='step_seconds'").fetchone()
        cells = [r[0] for r in db.execute("SELECT DISTINCT cell FROM samples ORDER BY cell")]
        if row is None or not cells:
            raise AgentStoreError(f"{path}: the store holds no samples yet")
        if not 0 <= index < len(cells):
            raise AgentStoreError(f"{path}: cell index {index} outside 0..{len(cells) - 1}")
        rows = db.execute(
            f"SELECT step, {', '.join(KPI_NAMES)} FROM samples WHERE cell=? ORDER BY step",
            (cells[index],),
        ).fetchall()
    except sqlite3.Error as exc:
        raise AgentStoreError(f"{path}: {exc}") from exc
    finally:
        db.close()
    step_seconds = int(row[0])
    if step_seconds <= 0 or 86_400 % step_seconds:
        raise AgentStoreError(f"{path}: step_seconds {step_seconds} does not divide a day")
    first, last = int(rows[0][0]), int(rows[-1][0])
    grid = np.arange(first, last + 1, dtype=np.int64)
    values = np.full((len(grid), len(KPI_NAMES)), np.nan)
    for r in rows:
        values[int(r[0]) - first] = [np.nan if v is None else v for v in r[1:]]
    return StoredCell(cells[index], step_seconds, grid, values)
