"""``--data DIR``: a folder of 3GPP PM files (TS 32.435 measCollecFile XML) as the
simulation's sites, and the generator's sites written as such a folder.

The XML itself is read by ``fedge.core``'s reader (shared with agent-side tools); here
its per-cell grids get the import format's rules: gaps of up to ``MAX_GAP_STEPS``
periods are interpolated, longer ones refused, every series covers ``MIN_SITE_DAYS``.
A managed element with one cell is one site named after the element (so an export of
generated sites comes back under the same ids); with several cells, each cell is a
series named ``<element>/<cell>``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fedge.core import (
    KPI_NAMES,
    MINUTES_PER_DAY,
    TARGET_KPIS,
    PmCell,
    PmError,
    read_pm_folder,
    write_pm_file,
)
from fedge.simulation._errors import DataError
from fedge.simulation._series import SiteSeries

__all__ = ["export_pm_folder", "read_pm_sites", "read_site_data"]

MAX_GAP_STEPS = 12  # as the CSV import: longer gaps are refused, not invented
MIN_SITE_DAYS = 3


def read_site_data(
    path: Path, step_minutes: int | None = None
) -> tuple[list[SiteSeries], dict[str, Any]]:
    """What ``--data`` names: a folder is read as PM XML, a file as the CSV/Parquet import
    format. Returns the sites and what the report says about them."""
    if path.is_dir():
        return read_pm_sites(path, step_minutes)
    from fedge.simulation._kpi_file import read_kpi_file

    return read_kpi_file(path, step_minutes), {"source": "file"}


def read_pm_sites(
    directory: Path, step_minutes: int | None = None
) -> tuple[list[SiteSeries], dict[str, Any]]:
    """One series per cell of a PM folder, and the import's summary (ignored counters,
    suspect and missing values) for the report."""
    try:
        pm = read_pm_folder(directory)
    except PmError as exc:
        raise DataError(str(exc)) from exc
    if step_minutes is not None and step_minutes != pm.step_minutes:
        raise DataError(
            f"{directory}: the files' granularity is {pm.step_minutes} min, "
            f"not the {step_minutes} min asked for"
        )
    per_site = Counter(c.site for c in pm.cells)
    sites = [_series(c, per_site[c.site] > 1, directory) for c in pm.cells]
    return sites, {"source": "pm", **pm.summary()}


def _series(cell: PmCell, several: bool, directory: Path) -> SiteSeries:
    name = f"{cell.site}/{cell.cell}" if several else cell.site
    values = cell.values.copy()
    n, step = values.shape[0], cell.step_minutes
    if n * step < MIN_SITE_DAYS * MINUTES_PER_DAY:
        raise DataError(
            f"{directory}: cell {cell.site}/{cell.cell} covers {n * step / MINUTES_PER_DAY:.1f} "
            f"days; need >= {MIN_SITE_DAYS}"
        )
    times = cell.timestamps()
    for j, kpi in enumerate(KPI_NAMES):
        column = values[:, j]
        missing = np.isnan(column)
        if missing.all():
            if kpi in TARGET_KPIS:
                raise DataError(
                    f"{directory}: cell {cell.site}/{cell.cell} has no value for {kpi} "
                    "(every period NIL, empty or suspect)"
                )
            continue
        run, at = _longest_run(missing)
        if run > MAX_GAP_STEPS:
            raise DataError(
                f"{directory}: cell {cell.site}/{cell.cell}: {kpi} is missing for {run} periods "
                f"from {times[at]}Z (more than {MAX_GAP_STEPS}); fill it upstream"
            )
        if missing.any():
            idx = np.arange(n)
            column[missing] = np.interp(idx[missing], idx[~missing], column[~missing])
    return SiteSeries(
        site_id=name,
        archetype="unknown",
        start=np.datetime64(cell.start_minute, "m"),
        step_minutes=step,
        values=values.astype(np.float32),
        anomalies=np.zeros(n, dtype=np.int8),
    )


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """The longest run of True in ``mask`` and where it starts."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    if edges.size == 0:
        return 0, 0
    starts, ends = edges[::2], edges[1::2]
    k = int(np.argmax(ends - starts))
    return int(ends[k] - starts[k]), int(starts[k])


def export_pm_folder(sites: Iterable[SiteSeries], directory: Path, days_per_file: int = 1) -> Path:
    """Write each site as a managed element with one cell, one measCollecFile per
    ``days_per_file`` days, named as TS 32.435 names them (``A<begin>-<end>_<element>.xml``)."""
    if days_per_file < 1:
        raise DataError(f"days_per_file must be >= 1, got {days_per_file}")
    directory.mkdir(parents=True, exist_ok=True)
    for s in sites:
        start = int(s.start.astype("datetime64[m]").astype(np.int64))
        chunk = days_per_file * s.steps_per_day
        element = re.sub(r"[^\w.-]", "_", s.site_id)
        for a in range(0, s.steps, chunk):
            rows = s.values[a : a + chunk].astype(np.float64)
            begin = start + a * s.step_minutes
            end = begin + len(rows) * s.step_minutes
            name = f"A{_stamp(begin)}-{_stamp(end)}_{element}.xml"
            write_pm_file(directory / name, element, {"1": rows}, begin, s.step_minutes)
    return directory


def _stamp(minute: int) -> str:
    t = np.datetime64(minute, "m").astype(object)
    return f"{t:%Y%m%d.%H%M}+0000"
