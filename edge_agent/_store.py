"""The agent's durable state: one SQLite file in WAL mode.

Everything the agent acknowledges to the broker is committed here first, so a crash
(kill -9, power loss with ``synchronous = "full"``) never loses an acknowledged sample.
Writers: the broker link's thread, and the uplink's on its own connection (outbox
acknowledgements, model verdicts); readers (``fedge agent rollback``, the SuperNode's
ClientApp) open their own connections, which WAL allows concurrently.
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

from fedge.core import KPI_NAMES, TARGET_INDEX, TARGET_KPIS, AgentStoreError, read_cell
from fedge.core import stored_cells as _stored_cells
from fedge.edge_agent._errors import StoreError
from fedge.edge_agent._kpi import KpiSample

SCHEMA_VERSION: Final = 2
#: Schema versions this agent migrates forward when it opens their store.
_MIGRATES: Final = (1,)
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
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER NOT NULL,
    cell TEXT NOT NULL, step INTEGER NOT NULL, made_step INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    UNIQUE (kind, cell, step, made_step)
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, kind, id);
"""
MODEL_STATES: Final = ("serving", "retired", "rejected", "rolled_back")
#: Outbox rows: a forecast, or an actual (``made_step`` -1); pending until acknowledged.
_FORECAST, _ACTUAL = 0, 1
_PENDING, _REFUSED = 0, 2
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
class Actual:
    """The observed target KPIs (``TARGET_KPIS`` order) of one completed step."""

    cell: str
    step: int
    values: tuple[float, ...]


@dataclass(frozen=True)
class OutboxBatch:
    """The oldest unsent rows: forecasts of one model version, and actuals."""

    model_version: str | None
    forecasts: list[ForecastRow]
    actuals: list[Actual]
    ids: list[int]  # the outbox rows the batch carries, to ack or refuse together


@dataclass(frozen=True)
class ForecastError:
    """One cell's error on one target at one horizon, over a time window."""

    cell: str
    horizon_steps: int
    target: str
    count: int
    mae: float
    rmse: float
    bias: float


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
        self,
        path: Path,
        *,
        synchronous: str = "normal",
        step_seconds: int | None = None,
        outbox: bool = False,
    ) -> None:
        self.path = path
        self.outbox = outbox  # keep forecasts and actuals for the coordinator
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
            elif int(row[0]) in _MIGRATES:
                # 1 -> 2 adds the outbox (created above); the data tables are unchanged
                self._db.execute(
                    "UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),)
                )
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
        samples, forecasts = list(samples), list(forecasts)
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
            if self.outbox:
                # a re-made forecast is sent again; the coordinator's key makes it a no-op
                db.executemany(
                    "INSERT INTO outbox (kind, cell, step, made_step) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (kind, cell, step, made_step) DO UPDATE SET state=0",
                    [(_FORECAST, f.cell, f.step, f.made_step) for f in forecasts]
                    + [
                        (_ACTUAL, s.cell, s.step, -1)
                        for s in samples
                        if all(s.values[i] is not None for i in TARGET_INDEX)
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

    # the outbox -------------------------------------------------------------------------

    def outbox_batch(self, limit: int) -> OutboxBatch:
        """The oldest pending rows: up to ``limit`` forecasts (all of the oldest pending
        row's model version) and up to ``limit`` actuals."""
        targets = ", ".join(f"s.{k}" for k in TARGET_KPIS)
        found = self._query(
            "SELECT o.id, f.cell, f.step, f.made_step, f.model_version, f.values_json "
            "FROM outbox o JOIN forecasts f ON f.cell=o.cell AND f.step=o.step "
            "AND f.made_step=o.made_step WHERE o.state=? AND o.kind=? ORDER BY o.id LIMIT ?",
            (_PENDING, _FORECAST, limit),
        )
        version = found[0][4] if found else None
        ids: list[int] = []
        forecasts: list[ForecastRow] = []
        for r in found:
            if r[4] == version:
                ids.append(int(r[0]))
                forecasts.append(
                    ForecastRow(r[1], int(r[2]), int(r[3]), r[4], tuple(json.loads(r[5])))
                )
        actuals: list[Actual] = []
        for r in self._query(
            f"SELECT o.id, s.cell, s.step, {targets} FROM outbox o JOIN samples s "
            "ON s.cell=o.cell AND s.step=o.step WHERE o.state=? AND o.kind=? "
            "ORDER BY o.id LIMIT ?",
            (_PENDING, _ACTUAL, limit),
        ):
            ids.append(int(r[0]))
            actuals.append(Actual(r[1], int(r[2]), tuple(float(v) for v in r[3:])))
        return OutboxBatch(version, forecasts, actuals, ids)

    def outbox_ack(self, ids: Sequence[int]) -> None:
        """The coordinator stored these rows (a 201): they leave the outbox."""
        with self._tx() as db:
            db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])

    def outbox_refuse(self, ids: Sequence[int]) -> None:
        """The coordinator refused these rows (a 4xx): kept, but not sent again."""
        with self._tx() as db:
            db.executemany("UPDATE outbox SET state=? WHERE id=?", [(_REFUSED, i) for i in ids])

    def outbox_counts(self) -> tuple[int, int]:
        """(pending, refused) outbox rows."""
        rows = dict(self._query("SELECT state, count(*) FROM outbox GROUP BY state"))
        return int(rows.get(_PENDING, 0)), int(rows.get(_REFUSED, 0))

    def forecast_errors(self, since: float) -> list[ForecastError]:
        """Every cell's forecast error per target and horizon, on the samples
        at or after ``since``. SQLite aggregates (without holding the GIL), Python only names."""
        parts = []
        for i, k in enumerate(TARGET_KPIS):
            err = f"(json_extract(f.values_json, '$[{i}]') - s.{k})"
            parts.append(f"count(s.{k}), sum(abs({err})), sum({err} * {err}), sum({err})")
        rows = self._query(
            f"SELECT f.cell, f.step - f.made_step, {', '.join(parts)} "
            "FROM samples s JOIN forecasts f ON f.cell=s.cell AND f.step=s.step "
            "WHERE s.ts >= ? AND json_valid(f.values_json) GROUP BY f.cell, f.step - f.made_step "
            "ORDER BY f.cell, f.step - f.made_step",
            (since,),
        )
        out: list[ForecastError] = []
        for r in rows:
            for i, k in enumerate(TARGET_KPIS):
                n, abs_sum, sq_sum, e_sum = r[2 + 4 * i : 6 + 4 * i]
                if not n:
                    continue
                out.append(
                    ForecastError(
                        r[0], int(r[1]), k, int(n), abs_sum / n, (sq_sum / n) ** 0.5, e_sum / n
                    )
                )
        return out

    def last_received(self) -> float | None:
        """When the newest sample was received (the last KPI the agent stored)."""
        row = self._query("SELECT max(received) FROM samples")[0][0]
        return None if row is None else float(row)

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

    def reinstate(self, version: str) -> ModelRecord:
        """Serve ``version`` again, a model this agent served before (the coordinator rolled
        its fleet back to it); the current one is marked rolled back."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM models WHERE version=?", (version,)).fetchone()
            if row is None or row[0] not in ("retired", "rolled_back"):
                state = "unknown" if row is None else row[0]
                raise StoreError(f"model {version} is {state}; only a model served before returns")
            db.execute("UPDATE models SET state='rolled_back' WHERE state='serving'")
            db.execute(
                "UPDATE models SET state='serving', serving_since=? WHERE version=?",
                (time.time(), version),
            )
        record = self.model(version)
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
            samples = db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
            forecasts = db.execute("DELETE FROM forecasts WHERE created < ?", (cutoff,)).rowcount
            removed += samples
            if (
                samples or forecasts
            ):  # a scan of the outbox only when its rows can have lost their data
                _drop_orphans(db)
        step = self.step_seconds or 1
        while self.used_bytes() > max_bytes:
            with self._tx() as db:
                total = db.execute("SELECT count(*) FROM samples").fetchone()[0]
                if total == 0:
                    db.execute("DELETE FROM forecasts")
                    db.execute("DELETE FROM outbox")
                    break
                chunk = max(total // 10, 1)
                edge = db.execute(
                    "SELECT ts FROM samples ORDER BY ts LIMIT 1 OFFSET ?", (chunk - 1,)
                ).fetchone()[0]
                removed += db.execute("DELETE FROM samples WHERE ts <= ?", (edge,)).rowcount
                db.execute("DELETE FROM forecasts WHERE step <= ?", (edge // step,))
                _drop_orphans(db)
        try:
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return removed


def _drop_orphans(db: sqlite3.Connection) -> None:
    """Outbox rows whose forecast or sample retention removed: the backlog stays bounded."""
    db.execute(
        "DELETE FROM outbox WHERE kind=? AND NOT EXISTS (SELECT 1 FROM forecasts f "
        "WHERE f.cell=outbox.cell AND f.step=outbox.step AND f.made_step=outbox.made_step)",
        (_FORECAST,),
    )
    db.execute(
        "DELETE FROM outbox WHERE kind=? AND NOT EXISTS (SELECT 1 FROM samples s "
        "WHERE s.cell=outbox.cell AND s.step=outbox.step)",
        (_ACTUAL,),
    )


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
