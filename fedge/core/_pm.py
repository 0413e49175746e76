"""3GPP performance-management files: a folder of TS 32.435 ``measCollecFile`` XML read
into per-cell KPI grids, and the same format written from KPI arrays.

The reader lives in the core because both the simulation (``fedge simulate --data DIR``,
the fleet's replayer) and agent-side tools read PM exports, and it needs nothing beyond
the standard library and numpy. The XML is parsed by ElementTree with every
DOCTYPE refused as it starts: a PM file never needs one, and refusing it rules out entity
expansion (billion laughs) and external entities without a third-party parser.

TS 28.552 counters map to fedge's KPIs (``KPI_NAMES``):

- ``dl_prb_util``: 100 x ``RRU.PrbUsedDl`` / ``RRU.PrbAvailDl`` (PRB counts), else
  ``RRU.PrbTotDl``, which TS 28.552 defines as a percentage;
- ``ul_prb_util``: the same with the ``Ul`` counters;
- ``dl_throughput_mbps``: ``DRB.UEThpDl`` (kbit/s) / 1000;
- ``active_ues``: ``RRC.ConnMean``;
- ``cpu_util``: ``EQPT.MeanProcessorUsage`` (%), the mean of its per-processor
  sub-counters; on an object that is not a cell it is the site's, for each of its cells.

Cells are keyed by their managed element (the site) and the value of their cell RDN
(``NRCellDU=1`` and ``NRCellCU=1`` of one element are the same cell: the DU reports the
PRB and throughput counters, the CU the RRC ones).
"""

from __future__ import annotations

import gzip
import math
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core._errors import CoreError
from fedge.core._kpi import KPI_BY_NAME, KPI_NAMES, TARGET_KPIS

__all__ = [
    "PM_COUNTERS",
    "PM_NAMESPACE",
    "PmCell",
    "PmError",
    "PmImport",
    "read_pm_folder",
    "write_pm_file",
]

PM_NAMESPACE = "http://www.3gpp.org/ftp/specs/archive/32_series/32.435#measCollec"
_NS = "{" + PM_NAMESPACE + "}"

#: The TS 28.552 counters fedge reads, and the KPI each one feeds.
PM_COUNTERS: dict[str, str] = {
    "RRU.PrbUsedDl": "dl_prb_util",
    "RRU.PrbAvailDl": "dl_prb_util",
    "RRU.PrbTotDl": "dl_prb_util",
    "RRU.PrbUsedUl": "ul_prb_util",
    "RRU.PrbAvailUl": "ul_prb_util",
    "RRU.PrbTotUl": "ul_prb_util",
    "DRB.UEThpDl": "dl_throughput_mbps",
    "RRC.ConnMean": "active_ues",
    "EQPT.MeanProcessorUsage": "cpu_util",
}
_CPU = "EQPT.MeanProcessorUsage"
# What a forecast target needs, in the words of the error that refuses its absence.
_REQUIRED = {
    "dl_prb_util": "RRU.PrbUsedDl with RRU.PrbAvailDl, or RRU.PrbTotDl",
    "dl_throughput_mbps": "DRB.UEThpDl",
    "active_ues": "RRC.ConnMean",
}
# Per-slice sub-counter suffixes: ``.SNSSAI<label>`` or ``.<SST>-<SD>`` (SD six hex digits).
_SLICE_SUFFIX = re.compile(r"^(SNSSAI[\w-]*|\d{1,3}-[0-9A-Fa-f]{6})$")
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")
_CELL_RDN = re.compile(r"Cell")


class PmError(CoreError):
    """A PM file or folder that cannot be used; the message names the file and element."""


@dataclass(frozen=True)
class PmCell:
    """One cell's KPIs on a regular grid: ``values`` is (steps, len(KPI_NAMES)) in fedge's
    units, NaN where a period is missing, NIL, suspect or has no counter for that KPI."""

    site: str
    cell: str
    start_minute: int  # the first period's start, minutes since the epoch (UTC)
    step_minutes: int
    values: NDArray[np.float64]

    def timestamps(self) -> NDArray[np.datetime64]:
        steps = np.arange(self.values.shape[0], dtype=np.int64) * self.step_minutes
        return np.datetime64(self.start_minute, "m") + steps.astype("timedelta64[m]")


@dataclass(frozen=True)
class PmImport:
    """What a folder held: its cells, and what was left out of them and why."""

    directory: Path
    cells: tuple[PmCell, ...]
    step_minutes: int
    files: int
    periods: int  # distinct granularity periods (endTimes) across the folder
    ignored: dict[str, int] = field(default_factory=dict)  # counter -> values not used
    slice_counters: dict[str, int] = field(default_factory=dict)  # per-slice sub-counters
    suspect_values: int = 0  # values of measValues flagged suspect, treated as missing
    missing_values: int = 0  # empty or NIL results
    skipped_files: tuple[str, ...] = ()  # folder entries that are not PM files

    def summary(self) -> dict[str, Any]:
        return {
            "format": "3GPP TS 32.435 measCollecFile",
            "files": self.files,
            "sites": len({c.site for c in self.cells}),
            "cells": len(self.cells),
            "step_minutes": self.step_minutes,
            "periods": self.periods,
            "ignored_counters": dict(sorted(self.ignored.items())),
            "slice_counters": dict(sorted(self.slice_counters.items())),
            "suspect_values": self.suspect_values,
            "missing_values": self.missing_values,
            "skipped_files": list(self.skipped_files),
        }


# ---------------------------------------------------------------------------- parsing


class _Tree:
    """A parsed file, and where in it the reader is: errors name the file, the measInfo
    (its position and period) and the measValue (its object) they are about."""

    def __init__(self, path: Path, root: ET.Element) -> None:
        self.path = path
        self.root = root
        self.context: list[tuple[ET.Element, str]] = []

    def enter(self, depth: int, elem: ET.Element, label: str) -> None:
        del self.context[depth:]
        self.context.append((elem, label))

    def where(self, elem: ET.Element) -> str:
        parts = [str(self.path), *(label for _, label in self.context)]
        if all(e is not elem for e, _ in self.context):
            parts.append(f"<{elem.tag.rsplit('}', 1)[-1]}>")
        return ", ".join(parts)


class _NoDoctype(ET.TreeBuilder):
    """ElementTree's builder, refusing a DOCTYPE as soon as it starts: with no DTD there
    is no entity to declare, so none to expand (billion laughs, external entities)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise PmError(
            f"{self.path}: DOCTYPE {name!r} refused (a PM file needs none, and entity "
            "declarations are never expanded)"
        )


#: The most bytes one PM file may hold once decompressed: a real file is kilobytes to a few
#: megabytes, and a compressed one must not expand without bound (a gzip bomb).
MAX_PM_FILE_BYTES = 512 << 20


def is_pm_file(path: Path) -> bool:
    """A measCollecFile as collected: ``*.xml``, or gzip-compressed as ``*.xml.gz``."""
    name = path.name.lower()
    return name.endswith(".xml") or name.endswith(".xml.gz")


def _parse(path: Path) -> _Tree:
    parser = ET.XMLParser(target=_NoDoctype(path))
    compressed = path.name.lower().endswith(".gz")
    read = 0
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                read += len(chunk)
                if read > MAX_PM_FILE_BYTES:
                    raise PmError(f"{path}: more than {MAX_PM_FILE_BYTES:,} bytes of XML; refused")
                parser.feed(chunk)
        root = parser.close()
    except ET.ParseError as exc:
        raise PmError(f"{path}: not well-formed XML: {exc}") from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise PmError(f"{path}: not a complete gzip file: {exc}") from exc
    except OSError as exc:
        raise PmError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return _Tree(path, root)


def _duration_minutes(text: str | None, tree: _Tree, elem: ET.Element) -> int:
    m = _DURATION.match((text or "").strip())
    if m is None or not any(m.groups()):
        raise PmError(f"{tree.where(elem)}: duration {text!r} is not an ISO 8601 PTnHnMnS")
    seconds = int(m[1] or 0) * 3600 + int(m[2] or 0) * 60 + int(m[3] or 0)
    if seconds <= 0 or seconds % 60 or 1440 % (seconds // 60):
        raise PmError(f"{tree.where(elem)}: granularity {text} is not whole minutes dividing a day")
    return seconds // 60


def _epoch_minute(text: str | None, tree: _Tree, elem: ET.Element, attr: str) -> int:
    try:
        when = datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise PmError(f"{tree.where(elem)}: {attr} {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # 32.435 times carry an offset; a naive one is UTC
    seconds = when.timestamp()
    if seconds % 60:
        raise PmError(f"{tree.where(elem)}: {attr} {text} is not on a whole minute")
    return int(seconds // 60)


def _split_ldn(ldn: str) -> list[tuple[str, str]]:
    rdns: list[tuple[str, str]] = []
    for part in ldn.split(","):
        kind, sep, value = part.strip().partition("=")
        if not sep or not kind or not value:
            raise ValueError(part)
        rdns.append((kind.strip(), value.strip()))
    return rdns


def _element_id(local_dn: str) -> str:
    """The managed element's name from ``managedElement localDn`` (a bare name or a DN)."""
    try:
        for kind, value in _split_ldn(local_dn):
            if kind == "ManagedElement":
                return value
    except ValueError:
        pass
    return local_dn.strip()


def _value(text: str | None, tree: _Tree, elem: ET.Element, counter: str) -> float:
    raw = (text or "").strip()
    if raw == "" or raw.upper() == "NIL":
        return math.nan
    try:
        v = float(raw)
    except ValueError:
        raise PmError(f"{tree.where(elem)}: {counter} = {raw!r} is not a number") from None
    if not math.isfinite(v):
        raise PmError(f"{tree.where(elem)}: {counter} = {raw!r} is not a finite number")
    if v < 0 and _base(counter) is not None:
        raise PmError(f"{tree.where(elem)}: {counter} = {raw} is negative")
    return v


@lru_cache(maxsize=4096)
def _base(counter: str) -> str | None:
    """The fedge counter a name is, or is a sub-counter of (None: unknown)."""
    if counter in PM_COUNTERS:
        return counter
    head, sep, _ = counter.rpartition(".")
    while sep:
        if head in PM_COUNTERS:
            return head
        head, sep, _ = head.rpartition(".")
    return None


# Raw values: (site, cell or None for a site-level object) -> end minute -> counter -> (value, file)
_Key = tuple[str, str | None]
_Raw = dict[_Key, dict[int, dict[str, tuple[float, int]]]]


@dataclass
class _Folder:
    directory: Path
    files: list[Path] = field(default_factory=list)
    raw: _Raw = field(default_factory=dict)
    step: int | None = None
    step_where: str = ""
    ignored: dict[str, int] = field(default_factory=dict)
    slices: dict[str, int] = field(default_factory=dict)
    suspect: int = 0
    missing: int = 0
    keys: dict[str, dict[str, _Key]] = field(default_factory=dict)  # element -> ldn -> key


def _read_file(folder: _Folder, index: int) -> None:
    tree = _parse(folder.files[index])
    root = tree.root
    if root.tag != _NS + "measCollecFile":
        local = root.tag.rsplit("}", 1)[-1]
        ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else "no namespace"
        why = (
            f"namespace {ns!r}, not {PM_NAMESPACE!r}"
            if local == "measCollecFile"
            else "not a measCollecFile"
        )
        raise PmError(f"{tree.where(root)}: root element {local!r} in {why}")
    header = root.find(_NS + "fileHeader")
    if header is None:
        raise PmError(f"{tree.where(root)}: no fileHeader")
    data = root.findall(_NS + "measData")
    if not data:
        raise PmError(f"{tree.where(root)}: no measData")
    count = 0
    for md in data:
        me = md.find(_NS + "managedElement")
        element = _element_id(me.get("localDn", "")) if me is not None else ""
        for info in md.findall(_NS + "measInfo"):
            count += 1
            info_id = info.get("measInfoId")
            label = f"measInfo {count}" + (f" (measInfoId={info_id!r})" if info_id else "")
            tree.enter(0, info, label)
            _read_meas_info(folder, index, tree, info, element)
        tree.context.clear()


def _read_meas_info(
    folder: _Folder, index: int, tree: _Tree, info: ET.Element, element: str
) -> None:
    gran = info.find(_NS + "granPeriod")
    if gran is None:
        raise PmError(f"{tree.where(info)}: no granPeriod")
    step = _duration_minutes(gran.get("duration"), tree, gran)
    if folder.step is None:
        folder.step, folder.step_where = step, tree.where(gran)
    elif step != folder.step:
        raise PmError(
            f"{tree.where(gran)}: granularity {step} min differs from {folder.step} min "
            f"({folder.step_where}); one folder holds one granularity"
        )
    end = _epoch_minute(gran.get("endTime"), tree, gran, "endTime")
    tree.context[0] = (info, f"{tree.context[0][1]}, period ending {gran.get('endTime')}")

    types = info.findall(_NS + "measType")
    packed = info.find(_NS + "measTypes")
    if types and packed is not None:
        raise PmError(f"{tree.where(info)}: both measType and measTypes")
    if types:
        names: dict[str, str] = {}
        for t in types:
            p = (t.get("p") or "").strip()
            if not p or p in names:
                raise PmError(f"{tree.where(t)}: missing or repeated p {p!r}")
            name = (t.text or "").strip()
            if not name:
                raise PmError(f"{tree.where(t)}: empty counter name")
            names[p] = name
        order = list(names)
    elif packed is not None:
        listed = (packed.text or "").split()
        names = {str(i + 1): n for i, n in enumerate(listed)}
        order = list(names)
    else:
        raise PmError(f"{tree.where(info)}: no measType")
    if len(set(names.values())) != len(names):
        raise PmError(f"{tree.where(info)}: a counter is listed twice")

    keys = folder.keys.setdefault(element, {})
    for mv in info.findall(_NS + "measValue"):
        del tree.context[1:]  # the previous measValue's
        ldn = mv.get("measObjLdn")
        if not ldn:
            raise PmError(f"{tree.where(mv)}: no measObjLdn")
        tree.enter(1, mv, f"<measValue measObjLdn={ldn!r}>")
        key = keys.get(ldn) or keys.setdefault(ldn, _object_key(ldn, element, tree, mv))
        results = _results(mv, names, order, tree)
        suspect = _suspect(mv, tree)
        slot = folder.raw.setdefault(key, {}).setdefault(end, {})
        for name, elem, text in results:
            v = _value(text, tree, elem, name)
            base = _base(name)
            if base is None or base not in (name, _CPU):
                suffix = name[len(base) + 1 :] if base is not None else ""
                bucket = folder.slices if _SLICE_SUFFIX.match(suffix) else folder.ignored
                bucket[name] = bucket.get(name, 0) + 1
                continue
            if key[1] is None and base != _CPU:
                folder.ignored[f"{name} (not on a cell)"] = (
                    folder.ignored.get(f"{name} (not on a cell)", 0) + 1
                )
                continue
            if name in slot:
                other = folder.files[slot[name][1]]
                raise PmError(
                    f"{tree.where(mv)}: {name} for this period is already in {other}; "
                    "a period is reported once"
                )
            if suspect:
                folder.suspect += 1
                v = math.nan
            elif math.isnan(v):
                folder.missing += 1
            slot[name] = (v, index)


def _object_key(ldn: str, element: str, tree: _Tree, mv: ET.Element) -> _Key:
    try:
        rdns = _split_ldn(ldn)
    except ValueError:
        raise PmError(f"{tree.where(mv)}: measObjLdn is not a list of Type=value") from None
    site = next((v for k, v in rdns if k == "ManagedElement"), element)
    if not site:
        raise PmError(
            f"{tree.where(mv)}: no ManagedElement in measObjLdn nor a managedElement localDn"
        )
    cells = [(k, v) for k, v in rdns if _CELL_RDN.search(k)]
    if not cells:
        return (site, None)
    kind, value = cells[-1]
    kind = re.sub(r"(DU|CU)$", "", kind)  # NRCellDU=1 and NRCellCU=1: the same cell
    return (site, f"{kind}={value}")


def _results(
    mv: ET.Element, names: Mapping[str, str], order: Sequence[str], tree: _Tree
) -> list[tuple[str, ET.Element, str | None]]:
    rs = mv.findall(_NS + "r")
    packed = mv.find(_NS + "measResults")
    if rs and packed is not None:
        raise PmError(f"{tree.where(mv)}: both r and measResults")
    if packed is not None:
        texts = (packed.text or "").split()
        if len(texts) != len(order):
            raise PmError(f"{tree.where(mv)}: {len(texts)} results for {len(order)} measTypes")
        return [(names[p], packed, t) for p, t in zip(order, texts, strict=True)]
    if len(rs) != len(order):
        raise PmError(f"{tree.where(mv)}: {len(rs)} r for {len(order)} measType")
    out: list[tuple[str, ET.Element, str | None]] = []
    seen: set[str] = set()
    for r in rs:
        p = (r.get("p") or "").strip()
        if p not in names or p in seen:
            raise PmError(f"{tree.where(r)}: p {p!r} is not a measType's or is repeated")
        seen.add(p)
        out.append((names[p], r, r.text))
    return out


def _suspect(mv: ET.Element, tree: _Tree) -> bool:
    s = mv.find(_NS + "suspect")
    if s is None:
        return False
    text = (s.text or "").strip().lower()
    if text not in ("true", "false"):
        raise PmError(f"{tree.where(s)}: suspect {s.text!r} is not true or false")
    return text == "true"


# --------------------------------------------------------------------------- assembly


def read_pm_folder(directory: Path) -> PmImport:
    """Read every ``*.xml`` and ``*.xml.gz`` file directly in ``directory`` into one grid
    per cell."""
    if not directory.is_dir():
        raise PmError(f"{directory}: not a folder")
    entries = sorted(directory.iterdir())
    folder = _Folder(directory, [p for p in entries if p.is_file() and is_pm_file(p)])
    skipped = tuple(p.name for p in entries if p not in folder.files)
    if not folder.files:
        raise PmError(f"{directory}: no measCollecFile (*.xml, *.xml.gz) in the folder")
    for i in range(len(folder.files)):
        _read_file(folder, i)
    step = folder.step
    if step is None or not folder.raw:
        raise PmError(f"{directory}: no measValue in any file")

    cells: list[PmCell] = []
    site_level = {site: by_end for (site, cell), by_end in folder.raw.items() if cell is None}
    periods: set[int] = set()
    for (site, cell), by_end in sorted(
        folder.raw.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        if cell is None:
            continue
        cells.append(_cell(folder, site, cell, by_end, site_level.get(site, {}), step))
        periods.update(by_end)
    if not cells:
        raise PmError(f"{directory}: no measValue names a cell (an RDN such as NRCellDU=1)")
    return PmImport(
        directory=directory,
        cells=tuple(cells),
        step_minutes=step,
        files=len(folder.files),
        periods=len(periods),
        ignored=folder.ignored,
        slice_counters=folder.slices,
        suspect_values=folder.suspect,
        missing_values=folder.missing,
        skipped_files=skipped,
    )


def _cell(
    folder: _Folder,
    site: str,
    cell: str,
    by_end: dict[int, dict[str, tuple[float, int]]],
    site_level: dict[int, dict[str, tuple[float, int]]],
    step: int,
) -> PmCell:
    ends = sorted(by_end)
    first = ends[0]
    off = [e for e in ends if (e - first) % step]
    if off:
        raise PmError(
            f"{folder.directory}: cell {site}/{cell}: a period ends at "
            f"{_iso(off[0])}, off the {step}-minute grid that starts {_iso(first)}"
        )
    n = (ends[-1] - first) // step + 1
    values = np.full((n, len(KPI_NAMES)), np.nan)
    seen: set[str] = set()
    for end in ends:
        row = values[(end - first) // step]
        counters = by_end[end]
        seen.update(_base(c) or c for c in counters)
        for j, name in enumerate(KPI_NAMES):
            row[j] = _kpi(name, counters, site_level.get(end, {}), folder, site, cell, end)
    for kpi, needs in _REQUIRED.items():
        feeds = [c for c, k in PM_COUNTERS.items() if k == kpi]
        ok = (
            ("RRU.PrbUsedDl" in seen and "RRU.PrbAvailDl" in seen) or "RRU.PrbTotDl" in seen
            if kpi == "dl_prb_util"
            else any(c in seen for c in feeds)
        )
        if not ok:
            why = " (the forecaster predicts it)" if kpi in TARGET_KPIS else ""
            subs = sorted(c for c in folder.slices if _base(c) in feeds)
            hint = f"; per-slice {', '.join(subs)} are not summed into it" if subs else ""
            raise PmError(
                f"{folder.directory}: cell {site}/{cell}: no {needs} in any file, "
                f"needed for {kpi}{why}{hint}"
            )
    return PmCell(site, cell, first - step, step, values)


def _kpi(
    name: str,
    counters: Mapping[str, tuple[float, int]],
    site_level: Mapping[str, tuple[float, int]],
    folder: _Folder,
    site: str,
    cell: str,
    end: int,
) -> float:
    def get(c: str) -> float:
        return counters[c][0] if c in counters else math.nan

    value: float
    source = ""
    if name in ("dl_prb_util", "ul_prb_util"):
        d = "Dl" if name == "dl_prb_util" else "Ul"
        used, avail = get(f"RRU.PrbUsed{d}"), get(f"RRU.PrbAvail{d}")
        if not math.isnan(used) and not math.isnan(avail) and avail > 0:
            value, source = 100.0 * used / avail, f"RRU.PrbUsed{d}"
        else:
            value, source = get(f"RRU.PrbTot{d}"), f"RRU.PrbTot{d}"
    elif name == "dl_throughput_mbps":
        value, source = get("DRB.UEThpDl") / 1000.0, "DRB.UEThpDl"
    elif name == "active_ues":
        value, source = get("RRC.ConnMean"), "RRC.ConnMean"
    elif name == "cpu_util":
        value, source = _cpu(counters), _CPU
        if math.isnan(value):
            value = _cpu(site_level)
    else:  # a KPI without a 3GPP counter
        return math.nan
    kpi = KPI_BY_NAME[name]
    if not math.isnan(value) and kpi.high is not None and value > kpi.high + 1e-9:
        file = str(folder.files[counters[source][1]]) if source in counters else "?"
        raise PmError(
            f"{file}: cell {site}/{cell}, period ending {_iso(end)}: {name} = {value:g} "
            f"{kpi.unit} from {source}, above {kpi.high:g}"
        )
    return value


def _cpu(counters: Mapping[str, tuple[float, int]]) -> float:
    vals = [v for c, (v, _) in counters.items() if _base(c) == _CPU and not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _iso(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- writing

#: The PRBs a cell of the exporter has available (a 100 MHz NR carrier at 30 kHz).
EXPORT_PRBS = 273


def write_pm_file(
    path: Path,
    element: str,
    cells: Mapping[str, NDArray[np.floating[Any]]],
    start_minute: int,
    step_minutes: int,
    *,
    vendor: str = "fedge",
) -> Path:
    """Write one managed element's cells (KPI arrays in fedge's units, one row per period
    from ``start_minute``) as a measCollecFile: one measInfo per period, the cell counters
    on ``GNBDUFunction=1,NRCellDU=<cell>`` and the processor usage on the DU function."""
    steps = {len(v) for v in cells.values()}
    if len(steps) != 1:
        raise PmError(f"{path.name}: the cells of one file need the same periods")
    n = steps.pop()
    begin = _iso(start_minute)
    end = _iso(start_minute + n * step_minutes)
    cell_types = ("RRU.PrbUsedDl", "RRU.PrbAvailDl", "RRU.PrbUsedUl", "RRU.PrbAvailUl",
                  "DRB.UEThpDl", "RRC.ConnMean")  # fmt: skip
    j = {k: KPI_NAMES.index(k) for k in KPI_NAMES}
    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<measCollecFile xmlns="{PM_NAMESPACE}">',
        f'  <fileHeader fileFormatVersion="32.435 V10.0" vendorName="{_attr(vendor)}">',
        f'    <measCollec beginTime="{begin}"/>',
        "  </fileHeader>",
        "  <measData>",
        f'    <managedElement localDn="ManagedElement={_attr(element)}"/>',
    ]
    types = "".join(f'<measType p="{i + 1}">{t}</measType>' for i, t in enumerate(cell_types))
    for t in range(n):
        stamp = _iso(start_minute + (t + 1) * step_minutes)
        out.append('    <measInfo measInfoId="cell">')
        out.append(f'      <granPeriod duration="PT{step_minutes * 60}S" endTime="{stamp}"/>')
        out.append(f'      <repPeriod duration="PT{step_minutes * 60}S"/>')
        out.append(f"      {types}")
        cpu: list[float] = []
        for cell, v in cells.items():
            row = v[t]
            counts = (
                row[j["dl_prb_util"]] * EXPORT_PRBS / 100.0,
                EXPORT_PRBS,
                row[j["ul_prb_util"]] * EXPORT_PRBS / 100.0,
                EXPORT_PRBS,
                row[j["dl_throughput_mbps"]] * 1000.0,
                row[j["active_ues"]],
            )
            rs = "".join(f'<r p="{i + 1}">{_num(x)}</r>' for i, x in enumerate(counts))
            ldn = f"ManagedElement={element},GNBDUFunction=1,NRCellDU={cell}"
            out.append(f'      <measValue measObjLdn="{_attr(ldn)}">{rs}</measValue>')
            cpu.append(float(row[j["cpu_util"]]))
        out.append("    </measInfo>")
        if not all(math.isnan(c) for c in cpu):
            out.append('    <measInfo measInfoId="equipment">')
            out.append(f'      <granPeriod duration="PT{step_minutes * 60}S" endTime="{stamp}"/>')
            out.append(f'      <measType p="1">{_CPU}.1</measType>')
            ldn = f"ManagedElement={element},GNBDUFunction=1"
            value = _num(float(np.nanmean(cpu)))
            out.append(
                f'      <measValue measObjLdn="{_attr(ldn)}"><r p="1">{value}</r></measValue>'
            )
            out.append("    </measInfo>")
    out += ["  </measData>", "  <fileFooter>", f'    <measCollec endTime="{end}"/>',
            "  </fileFooter>", "</measCollecFile>", ""]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def _num(x: float) -> str:
    if math.isnan(x):
        return "NIL"
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


def _attr(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )
