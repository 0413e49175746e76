"""The operator import format: one CSV or Parquet file of exported counters, read by
``read_kpi_file`` and written (from generated sites) by ``export_kpi_file``.

Columns: ``timestamp`` (ISO 8601; naive means UTC), ``site_id``, then one column per KPI
in ``KPI_NAMES``. The forecast targets are required; other KPIs may be absent as columns
or as empty cells. Optional metadata: ``archetype`` (free text, used to group the
report) and ``anomaly`` (one of none/outage/spike/degradation). Errors name the row (the
file's line number for CSV, 1-based data row for Parquet) and the column.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fedge.core import ANOMALY_NAMES, KPI_BY_NAME, KPI_NAMES, TARGET_KPIS
from fedge.simulation._errors import DataError
from fedge.simulation._series import SiteSeries

REQUIRED_COLUMNS = ("timestamp", "site_id", *TARGET_KPIS)
OPTIONAL_COLUMNS = (*tuple(k for k in KPI_NAMES if k not in TARGET_KPIS), "archetype", "anomaly")
MAX_GAP_STEPS = 12  # longer gaps than an hour at 5-min steps are refused, not invented
MIN_SITE_DAYS = 3
_ANOMALY_CODES = {name: code for code, name in ANOMALY_NAMES.items()}


#: What ``export_kpi_file`` writes, by suffix (``read_kpi_file`` reads the same ones).
EXPORT_SUFFIXES = (".csv", ".parquet", ".pq")


def export_kpi_file(sites: Iterable[SiteSeries], path: Path) -> Path:
    """Write sites in the import format, as CSV or Parquet by ``path``'s suffix; any other
    suffix is refused before anything is written (a CSV named ``.parquet`` fails later, in
    whichever tool opens it)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return export_kpi_csv(sites, path)
    if suffix in (".parquet", ".pq"):
        return export_kpi_parquet(sites, path)
    raise DataError(
        f"{path}: cannot export to {suffix or 'a file without a suffix'!r}; "
        f"use one of {', '.join(EXPORT_SUFFIXES)}"
    )


def _frame(s: SiteSeries) -> pd.DataFrame:
    frame = pd.DataFrame(s.values, columns=list(KPI_NAMES))
    frame.insert(0, "site_id", s.site_id)
    frame.insert(0, "timestamp", pd.DatetimeIndex(s.timestamps()).strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame["archetype"] = s.archetype
    frame["anomaly"] = [ANOMALY_NAMES[int(c)] for c in s.anomalies]
    return frame


def export_kpi_csv(sites: Iterable[SiteSeries], path: Path) -> Path:
    """Write sites as CSV, one site at a time (the fleet need not fit in RAM)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        header = True
        for s in sites:
            _frame(s).to_csv(fh, index=False, header=header, float_format="%.4f")
            header = False
    return path


def export_kpi_parquet(sites: Iterable[SiteSeries], path: Path) -> Path:
    """Write sites as Parquet, one row group per site (the fleet need not fit in RAM).
    KPIs keep their float32 values; timestamps are the same ISO 8601 text as the CSV's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [("timestamp", pa.string()), ("site_id", pa.string())]
        + [(name, pa.float32()) for name in KPI_NAMES]
        + [("archetype", pa.string()), ("anomaly", pa.string())]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for s in sites:
            frame = _frame(s)
            frame[list(KPI_NAMES)] = frame[list(KPI_NAMES)].astype(np.float32)
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    return path


def read_kpi_file(path: Path, step_minutes: int | None = None) -> list[SiteSeries]:
    """Parse and validate an import file into one regular series per site."""
    frame, line_offset = _read_raw(path)
    _check_columns(frame, path)
    row_no = np.arange(len(frame)) + line_offset
    if frame.empty:
        raise DataError(f"{path}: no data rows")

    site = frame["site_id"].fillna("").astype(str).str.strip()
    bad = np.flatnonzero((site == "").to_numpy())
    if bad.size:
        raise DataError(f"{path}: row {row_no[bad[0]]}, column 'site_id': empty site id")

    ts = pd.to_datetime(frame["timestamp"], errors="coerce", utc=True, format="ISO8601")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if bad.size:
        raw = frame["timestamp"].iloc[bad[0]]
        raise DataError(
            f"{path}: row {row_no[bad[0]]}, column 'timestamp': cannot parse {raw!r} as ISO 8601"
        )

    values = np.full((len(frame), len(KPI_NAMES)), np.nan, dtype=np.float64)
    for j, name in enumerate(KPI_NAMES):
        if name in frame.columns:
            values[:, j] = _numeric_column(frame[name], name, row_no, path)

    anomalies = np.zeros(len(frame), dtype=np.int8)
    if "anomaly" in frame.columns:
        labels = frame["anomaly"].fillna("none").astype(str).str.strip().str.lower()
        unknown = ~labels.isin(list(_ANOMALY_CODES))
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(
                f"{path}: row {row_no[i]}, column 'anomaly': {labels.iloc[i]!r} is not one of "
                f"{sorted(_ANOMALY_CODES)}"
            )
        anomalies = np.asarray(labels.map(_ANOMALY_CODES).to_numpy(), dtype=np.int8)
    archetype = (
        frame["archetype"].fillna("unknown").astype(str).str.strip()
        if "archetype" in frame.columns
        else pd.Series("unknown", index=frame.index)
    )

    ns = ts.dt.as_unit("ns").astype("int64").to_numpy()  # pandas 3 may pick another unit
    minutes = ns // 60_000_000_000
    if (ns % 60_000_000_000 != 0).any():
        i = int(np.flatnonzero(ns % 60_000_000_000 != 0)[0])
        raise DataError(f"{path}: row {row_no[i]}, column 'timestamp': not on a whole minute")
    step = step_minutes or _infer_step(site.to_numpy(), minutes, path)
    if step < 1 or 1440 % step:
        raise DataError(f"{path}: step {step} min does not divide a day")

    out: list[SiteSeries] = []
    order = np.lexsort((minutes, site.to_numpy()))
    sites_sorted = site.to_numpy()[order]
    bounds = np.flatnonzero(np.r_[True, sites_sorted[1:] != sites_sorted[:-1], True])
    for a, b in itertools.pairwise(bounds):
        idx = order[a:b]
        out.append(
            _regular_series(
                str(sites_sorted[a]),
                str(archetype.iloc[idx[0]]),
                minutes[idx],
                values[idx],
                anomalies[idx],
                row_no[idx],
                step,
                path,
            )
        )
    return out


def _read_raw(path: Path) -> tuple[pd.DataFrame, int]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]), 2
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path), 1
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as {suffix[1:]}: {exc}") from exc
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def _check_columns(frame: pd.DataFrame, path: Path) -> None:
    cols = [str(c).strip() for c in frame.columns]
    frame.columns = pd.Index(cols)
    for c in REQUIRED_COLUMNS:
        if c not in cols:
            why = " (the forecaster predicts it)" if c in TARGET_KPIS else ""
            raise DataError(f"{path}: missing required column {c!r}{why}")
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    for c in cols:
        if c not in known:
            raise DataError(
                f"{path}: unknown column {c!r}; expected {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"
            )
    dupes = {c for c in cols if cols.count(c) > 1}
    if dupes:
        raise DataError(f"{path}: duplicate column {sorted(dupes)[0]!r}")


def _numeric_column(col: pd.Series, name: str, row_no: np.ndarray, path: Path) -> np.ndarray:
    raw = col.astype("string").str.strip()
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    given = raw.notna().to_numpy() & (raw.fillna("") != "").to_numpy()
    bad = np.flatnonzero(given & ~np.isfinite(num))
    if bad.size:
        raise DataError(
            f"{path}: row {row_no[bad[0]]}, column {name!r}: {raw.iloc[bad[0]]!r} is not a finite number"
        )
    kpi = KPI_BY_NAME[name]
    with np.errstate(invalid="ignore"):
        low = num < kpi.low
        high = num > kpi.high if kpi.high is not None else np.zeros_like(low)
    bad = np.flatnonzero(low | high)
    if bad.size:
        hi = "inf" if kpi.high is None else f"{kpi.high:g}"
        raise DataError(
            f"{path}: row {row_no[bad[0]]}, column {name!r}: {num[bad[0]]:g} {kpi.unit} "
            f"outside [{kpi.low:g}, {hi}]"
        )
    return num


def _infer_step(site: np.ndarray, minutes: np.ndarray, path: Path) -> int:
    order = np.lexsort((minutes, site))
    same = site[order][1:] == site[order][:-1]
    diffs = np.diff(minutes[order])[same]
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise DataError(f"{path}: cannot infer the step: no site has two distinct timestamps")
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def _regular_series(
    site_id: str,
    archetype: str,
    minutes: np.ndarray,
    values: np.ndarray,
    anomalies: np.ndarray,
    rows: np.ndarray,
    step: int,
    path: Path,
) -> SiteSeries:
    dup = np.flatnonzero(np.diff(minutes) == 0)
    if dup.size:
        a, b = sorted((int(rows[dup[0]]), int(rows[dup[0] + 1])))
        raise DataError(f"{path}: rows {a} and {b}: duplicate timestamp for site {site_id!r}")
    off = np.flatnonzero((minutes - minutes[0]) % step)
    if off.size:
        raise DataError(
            f"{path}: row {rows[off[0]]}, column 'timestamp': off the {step}-minute grid of site {site_id!r}"
        )
    pos = (minutes - minutes[0]) // step
    gaps = np.diff(pos) - 1
    if gaps.size and gaps.max() > MAX_GAP_STEPS:
        i = int(np.argmax(gaps))
        raise DataError(
            f"{path}: row {rows[i + 1]}: site {site_id!r} has a gap of {int(gaps[i])} steps "
            f"(more than {MAX_GAP_STEPS}); split the export or fill it upstream"
        )
    n = int(pos[-1]) + 1
    if n * step < MIN_SITE_DAYS * 1440:
        raise DataError(
            f"{path}: site {site_id!r} has {n * step / 1440:.1f} days; need >= {MIN_SITE_DAYS}"
        )
    grid = np.full((n, values.shape[1]), np.nan)
    grid[pos] = values
    labels = np.zeros(n, dtype=np.int8)
    labels[pos] = anomalies
    for j, name in enumerate(KPI_NAMES):
        column = grid[:, j]
        if name in TARGET_KPIS and np.isnan(column).all():
            raise DataError(f"{path}: site {site_id!r} has no values in column {name!r}")
        if not np.isnan(column).all():
            grid[:, j] = pd.Series(column).interpolate(limit_direction="both").to_numpy()
    start = np.datetime64(int(minutes[0]), "m")
    return SiteSeries(site_id, archetype, start, step, grid.astype(np.float32), labels)
