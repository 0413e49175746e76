"""The agent's durable state: one SQLite file in WAL mode.

Everything the agent acknowledges to the broker is committed here first, so a crash
(kill -9, power loss with ``synchronous = "full"``) never loses an acknowledged sample.
One writer (the agent's worker thread); readers (``fedge agent rollback``, the
SuperNode's ClientApp) open their own connections, which WAL allows concurrently.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, AgentStoreError, read_cell
from fedge.core import stored_cells as _stored_cells
from fedge.edge_agent._errors import StoreError
from fedge.edge_agent._kpi import KpiSample

SCHEMA_VERSION: Final = 1
_N = len(KPI_NAMES)
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    cell TEXT NOT NULL, step INTEGER NOT NULL, ts REAL NOT NULL, received REAL NOT NULL,
    {", ".join(f"{k} REAL" for k in KPI_NAMES)},
    PRIMARY KEY (cell, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts);
CREATE TABLE IF NOT EXISTS forecasts (
    cell TEXT NOT NULL, step INTEGER NOT NULL, made_step INTEGER NOT NULL,
    model_version TEXT NOT NULL, created REAL NOT NULL, values_json TEXT NOT NULL,
    PRIMARY KEY (cell, step, made_step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS forecasts_created ON forecasts (created);
CREATE TABLE IF NOT EXISTS scalers (
    cell TEXT PRIMARY KEY, scaler_json TEXT NOT NULL, samples INTEGER NOT NULL, fitted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, state TEXT NOT NULL,
    received REAL NOT NULL, decided REAL, serving_since REAL,
    serving_score REAL, candidate_score REAL, reason TEXT
);
CREATE TABLE IF NOT EXISTS federation_state (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, updated REAL NOT NULL
);
"""
MODEL_STATES: Final = ("serving", "retired", "rejected", "rolled_back")
CHECKPOINT_INTERVAL_S: Final = 0.25

log = logging.getLogger("fedge.agent.store")


@dataclass(frozen=True)
class ForecastRow:
    cell: str
    step: int  # the step forecast
    made_step: int  # the newest step the model saw
    model_version: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class ModelRecord:
    version: str
    path: Path
    sha256: str
    state: str
    received: float
    serving_since: float | None
    serving_score: float | None
    candidate_score: float | None
    reason: str | None


class Store:
    """SQLite in WAL mode; every public method is one transaction."""

    def __init__(
        self, path: Path, *, synchronous: str = "normal", step_seconds: int | None = None
    ) -> None:
        self.path = path
        self._synchronous = "FULL" if synchronous == "full" else "NORMAL"
        self._checkpointer: _Checkpointer | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={self._synchronous}")
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: store schema {row[0]}, this agent reads {SCHEMA_VERSION}"
                )
            if step_seconds is not None:
                self._check_step(step_seconds)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open store: {exc}") from exc

    def _check_step(self, step_seconds: int) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='step_seconds'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('step_seconds', ?)", (str(step_seconds),))
        elif int(row[0]) != step_seconds:
            raise StoreError(
                f"{self.path}: store was written with step_seconds={row[0]}, config says {step_seconds}"
            )

    @property
    def step_seconds(self) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key='step_seconds'").fetchone()
        return None if row is None else int(row[0])

    def start_checkpointer(self, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        """Checkpoint the WAL from a background thread instead of inside commits.

        SQLite's auto-checkpoint runs in whichever commit crosses 1,000 WAL pages: that
        commit copies the pages back and fsyncs twice before the batch can be acked, the
        agent's latency tail (20 ms p99, seconds under disk contention). Durability is
        unchanged: a commit is durable once in the WAL; checkpoints only move pages.
        """
        if self._checkpointer is not None:
            return
        try:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self._checkpointer = _Checkpointer(self.path, self._synchronous, interval_s)
        self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    # samples and forecasts ------------------------------------------------------------

    def commit_batch(
        self, samples: Iterable[KpiSample], forecasts: Iterable[ForecastRow], now: float
    ) -> None:
        """Samples and the forecasts made from them, atomically (then it is safe to ack)."""
        marks = ", ".join("?" * (4 + _N))
        with self._tx() as db:
            db.executemany(
                f"INSERT INTO samples VALUES ({marks})",
                [(s.cell, s.step, s.ts, now, *s.values) for s in samples],
            )
            db.executemany(
                "INSERT OR REPLACE INTO forecasts VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (f.cell, f.step, f.made_step, f.model_version, now, json.dumps(f.values))
                    for f in forecasts
                ],
            )

    def sample(self, cell: str, step: int) -> tuple[float | None, ...] | None:
        rows = self._query(
            f"SELECT {', '.join(KPI_NAMES)} FROM samples WHERE cell=? AND step=?", (cell, step)
        )
        return None if not rows else tuple(rows[0])

    def cells(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT cell FROM samples ORDER BY cell")]

    def recent_steps(self, cell: str, count: int) -> list[int]:
        rows = self._query(
            "SELECT step FROM samples WHERE cell=? ORDER BY step DESC LIMIT ?", (cell, count)
        )
        return [int(r[0]) for r in rows]

    def sample_count(self, cell: str | None = None) -> int:
        if cell is None:
            return int(self._query("SELECT count(*) FROM samples")[0][0])
        return int(self._query("SELECT count(*) FROM samples WHERE cell=?", (cell,))[0][0])

    def history(
        self, cell: str, first_step: int, last_step: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Stored steps in ``[first_step, last_step]`` and their KPIs (NaN: not reported)."""
        rows = self._query(
            f"SELECT step, {', '.join(KPI_NAMES)} FROM samples "
            "WHERE cell=? AND step BETWEEN ? AND ? ORDER BY step",
            (cell, first_step, last_step),
        )
        steps = np.array([r[0] for r in rows], dtype=np.int64)
        values = np.array(
            [[np.nan if v is None else v for v in r[1:]] for r in rows], dtype=np.float64
        ).reshape(len(rows), _N)
        return steps, values

    def forecasts_for(self, cell: str, made_step: int) -> list[ForecastRow]:
        rows = self._query(
            "SELECT step, model_version, values_json FROM forecasts "
            "WHERE cell=? AND made_step=? ORDER BY step",
            (cell, made_step),
        )
        return [
            ForecastRow(cell, int(r[0]), made_step, r[1], tuple(json.loads(r[2]))) for r in rows
        ]

    def residual_pairs(
        self, cell: str, limit: int
    ) -> list[tuple[int, tuple[float | None, ...], tuple[float, ...]]]:
        """(step, actual KPIs, one-step-ahead forecast) for the newest ``limit`` steps."""
        rows = self._query(
            f"SELECT s.step, {', '.join('s.' + k for k in KPI_NAMES)}, f.values_json "
            "FROM samples s JOIN forecasts f ON f.cell=s.cell AND f.step=s.step "
            "AND f.made_step=s.step-1 WHERE s.cell=? ORDER BY s.step DESC LIMIT ?",
            (cell, limit),
        )
        return [(int(r[0]), tuple(r[1 : 1 + _N]), tuple(json.loads(r[-1]))) for r in rows[::-1]]

    # scalers ----------------------------------------------------------------------------

    def scaler(self, cell: str) -> tuple[dict[str, Any], int] | None:
        rows = self._query("SELECT scaler_json, samples FROM scalers WHERE cell=?", (cell,))
        return None if not rows else (json.loads(rows[0][0]), int(rows[0][1]))

    def put_scaler(self, cell: str, scaler: dict[str, Any], samples: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO scalers VALUES (?, ?, ?, ?)",
                (cell, json.dumps(scaler), samples, time.time()),
            )

    # models -----------------------------------------------------------------------------

    def _model(self, row: Sequence[Any]) -> ModelRecord:
        return ModelRecord(
            row[0], Path(row[1]), row[2], row[3], row[4], row[6], row[7], row[8], row[9]
        )

    def models(self) -> list[ModelRecord]:
        return [self._model(r) for r in self._query("SELECT * FROM models ORDER BY received")]

    def model(self, version: str) -> ModelRecord | None:
        rows = self._query("SELECT * FROM models WHERE version=?", (version,))
        return self._model(rows[0]) if rows else None

    def serving(self) -> ModelRecord | None:
        rows = self._query("SELECT * FROM models WHERE state='serving'")
        return self._model(rows[0]) if rows else None

    def record_model(
        self,
        version: str,
        path: Path,
        sha256: str,
        *,
        serve: bool,
        serving_score: float | None = None,
        candidate_score: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Record a decided model; serving it retires the current one in the same commit."""
        now = time.time()
        with self._tx() as db:
            if serve:
                db.execute("UPDATE models SET state='retired' WHERE state='serving'")
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version,
                    str(path),
                    sha256,
                    "serving" if serve else "rejected",
                    now,
                    now,
                    now if serve else None,
                    serving_score,
                    candidate_score,
                    reason,
                ),
            )

    def rollback(self) -> ModelRecord:
        """Serve the most recently retired model again; the current one is marked rolled back."""
        with self._tx() as db:
            current = db.execute("SELECT version FROM models WHERE state='serving'").fetchone()
            if current is None:
                raise StoreError("no model is serving; nothing to roll back")
            previous = db.execute(
                "SELECT version FROM models WHERE state='retired' "
                "ORDER BY serving_since DESC LIMIT 1"
            ).fetchone()
            if previous is None:
                raise StoreError(f"model {current[0]} is the only one ever served; nothing earlier")
            db.execute("UPDATE models SET state='rolled_back' WHERE version=?", (current[0],))
            db.execute(
                "UPDATE models SET state='serving', serving_since=? WHERE version=?",
                (time.time(), previous[0]),
            )
        record = self.model(previous[0])
        assert record is not None
        return record

    # federation state -------------------------------------------------------------------

    def put_state(self, key: str, value: bytes) -> None:
        """Opaque federation state (e.g. the error-feedback residual of compressed updates)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO federation_state VALUES (?, ?, ?)",
                (key, value, time.time()),
            )

    def get_state(self, key: str) -> bytes | None:
        rows = self._query("SELECT value FROM federation_state WHERE key=?", (key,))
        return None if not rows else bytes(rows[0][0])

    # retention --------------------------------------------------------------------------

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def used_bytes(self) -> int:
        pages = self._query("PRAGMA page_count")[0][0] - self._query("PRAGMA freelist_count")[0][0]
        return int(pages) * int(self._query("PRAGMA page_size")[0][0])

    def enforce_retention(self, now: float, max_age_s: float, max_bytes: int) -> int:
        """Drop samples and forecasts older than ``max_age_s``, then the oldest tenth at a
        time until the data fits ``max_bytes``; returns the samples removed."""
        removed = 0
        cutoff = now - max_age_s
        with self._tx() as db:
            removed += db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
            db.execute("DELETE FROM forecasts WHERE created < ?", (cutoff,))
        step = self.step_seconds or 1
        while self.used_bytes() > max_bytes:
            with self._tx() as db:
                total = db.execute("SELECT count(*) FROM samples").fetchone()[0]
                if total == 0:
                    db.execute("DELETE FROM forecasts")
                    break
                chunk = max(total // 10, 1)
                edge = db.execute(
                    "SELECT ts FROM samples ORDER BY ts LIMIT 1 OFFSET ?", (chunk - 1,)
                ).fetchone()[0]
                removed += db.execute("DELETE FROM samples WHERE ts <= ?", (edge,)).rowcount
                db.execute("DELETE FROM forecasts WHERE step <= ?", (edge // step,))
        try:
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return removed


class _Checkpointer(threading.Thread):
    """PASSIVE checkpoints on its own connection: never blocks the writer or readers.

    A failure is logged and retried; retention's TRUNCATE checkpoint (on the writer,
    every ``housekeeping_s``) still bounds the WAL if this thread cannot keep up.
    """

    def __init__(self, path: Path, synchronous: str, interval_s: float) -> None:
        super().__init__(name="fedge-checkpoint", daemon=True)
        self._path = path
        self._synchronous = synchronous
        self._interval_s = interval_s
        self._halt = threading.Event()

    def run(self) -> None:
        db: sqlite3.Connection | None = None
        while not self._halt.wait(self._interval_s):
            try:
                if db is None:
                    db = sqlite3.connect(str(self._path), timeout=10.0, isolation_level=None)
                    db.execute(f"PRAGMA synchronous={self._synchronous}")
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("%s: background WAL checkpoint failed: %s", self._path, exc)
        if db is not None:
            db.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def stored_cells(path: Path) -> list[str]:
    """Cell ids in a store (sorted), read-only: the sites a SuperNode can train on."""
    try:
        return _stored_cells(path)
    except AgentStoreError as exc:
        raise StoreError(str(exc)) from exc


def read_cell_series(
    path: Path, index: int
) -> tuple[str, int, NDArray[np.int64], NDArray[np.float64]]:
    """The ``index``-th cell (sorted by id) of a store, read-only, on a regular grid:
    its id, step seconds, the grid's steps and its KPIs (NaN where no sample arrived).
    The reader is ``fedge.core``'s, the one the SuperNode's ClientApp uses."""
    try:
        cell = read_cell(path, index)
    except AgentStoreError as exc:
        raise StoreError(str(exc)) from exc
    return cell.cell, cell.step_seconds, cell.steps, cell.values
