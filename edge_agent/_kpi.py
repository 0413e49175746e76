"""The KPI message schema (v1) and its strict validator.

The names, units and ranges are the KPI schema of ``fedge.core``, the one every layer
reads; this module checks a message against it. Validation is split in two:
:func:`parse_kpi` checks one payload on its own; :class:`OrderGuard` checks it against
what the cell already sent (duplicates, reordering). A payload is hostile until proven
otherwise: the only exception either raises is ``KpiRejected``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from fedge.core import KPI_NAMES, KPIS
from fedge.edge_agent._errors import KpiRejected

SCHEMA_VERSION: Final = 1
#: Sanity ceiling for unbounded KPIs: a value above this is a unit or encoding error.
UNBOUNDED_CEILING: Final = 1e6
_TOP_FIELDS: Final = ("v", "cell", "ts", "kpis")
_CELL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MIN_TS: Final = 946_684_800.0  # 2000-01-01: earlier is a broken clock
#: Longest number literal accepted: a float64 needs at most 17 significant digits.
MAX_NUMBER_CHARS: Final = 32
#: Deepest nesting accepted; a v1 message has two levels (the message, its ``kpis``).
MAX_DEPTH: Final = 8
_STRING_RE: Final = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET_RE: Final = re.compile(r"[\[\]{}]")


class Reason(StrEnum):
    """Dead-letter reason codes (the ``reason`` label of the rejected-messages counter)."""

    OVERSIZE = "oversize"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_VERSION = "bad_version"
    BAD_CELL = "bad_cell"
    FUTURE_TIMESTAMP = "future_timestamp"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    TOO_DEEP = "too_deep"
    #: An unexpected failure while handling the message (a bug, never a schema rule).
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class KpiSample:
    """One accepted sample: a cell's KPIs (None: not reported) at a grid step."""

    cell: str
    ts: float
    step: int
    values: tuple[float | None, ...]


def _reject_constant(name: str) -> float:
    raise KpiRejected(Reason.NON_FINITE, f"{name} is not a finite number")


def _parse_int(text: str) -> int:
    """JSON integers of at most ``MAX_NUMBER_CHARS``: a longer one is no KPI or timestamp,
    and would only overflow ``float`` later or cost quadratic time to convert."""
    if len(text) > MAX_NUMBER_CHARS:
        raise KpiRejected(Reason.OUT_OF_RANGE, f"an integer of {len(text)} characters")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise KpiRejected(Reason.OUT_OF_RANGE, f"a number of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise KpiRejected(Reason.NON_FINITE, f"{text[:40]} is not a finite number")
    return value


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` before the recursive decoder sees it.

    A valid message nests two levels; counting brackets is enough for nearly every
    payload, and only one with many of them pays for the exact scan (strings removed)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _BRACKET_RE.finditer(_STRING_RE.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise KpiRejected(Reason.TOO_DEEP, f"nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _decode(payload: bytes) -> object:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KpiRejected(Reason.NOT_JSON, f"not UTF-8: {exc}"[:120]) from exc
    _check_depth(text)
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError; the depth scan bounds recursion
        raise KpiRejected(Reason.NOT_JSON, str(exc)[:120]) from exc


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KpiRejected(
            Reason.WRONG_TYPE, f"{where} must be a number, got {type(value).__name__}"
        )
    try:
        out = float(value)
    except OverflowError as exc:  # unreachable through the decoder's hooks; kept typed
        raise KpiRejected(Reason.OUT_OF_RANGE, f"{where} is too large") from exc
    if not math.isfinite(out):
        raise KpiRejected(Reason.NON_FINITE, f"{where} is not finite")
    return out


def parse_kpi(
    payload: bytes, *, max_bytes: int, step_seconds: int, now: float, max_future_s: float
) -> KpiSample:
    """Check one payload against the v1 schema; raises ``KpiRejected`` with a reason.

    Nothing else escapes: over-long numbers, deep nesting, non-finite values and text that
    is not UTF-8 are refused by the decoder itself, before any arithmetic."""
    if len(payload) > max_bytes:
        raise KpiRejected(Reason.OVERSIZE, f"{len(payload)} bytes > limit {max_bytes}")
    doc = _decode(payload)
    if not isinstance(doc, dict):
        raise KpiRejected(Reason.NOT_OBJECT, f"top level is {type(doc).__name__}, not an object")
    _exact_fields(doc, _TOP_FIELDS, "")
    version = doc["v"]
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise KpiRejected(Reason.BAD_VERSION, f"schema version {repr(version)[:40]}, expected 1")
    cell = doc["cell"]
    if not isinstance(cell, str):
        raise KpiRejected(Reason.WRONG_TYPE, f"cell must be a string, got {type(cell).__name__}")
    if not _CELL_RE.match(cell):
        raise KpiRejected(Reason.BAD_CELL, f"cell id {cell[:70]!r} is not [A-Za-z0-9._-]{{1,64}}")
    ts = _number(doc["ts"], "ts")
    if ts < _MIN_TS:
        raise KpiRejected(Reason.OUT_OF_RANGE, f"ts {ts} is before 2000-01-01")
    if ts > now + max_future_s:
        raise KpiRejected(
            Reason.FUTURE_TIMESTAMP, f"ts is {ts - now:.0f} s ahead of the agent clock"
        )
    kpis = doc["kpis"]
    if not isinstance(kpis, dict):
        raise KpiRejected(Reason.WRONG_TYPE, f"kpis must be an object, got {type(kpis).__name__}")
    _exact_fields(kpis, KPI_NAMES, "kpis.")
    values: list[float | None] = []
    for kpi in KPIS:
        raw = kpis[kpi.name]
        if raw is None:
            values.append(None)
            continue
        value = _number(raw, f"kpis.{kpi.name}")
        top = UNBOUNDED_CEILING if kpi.high is None else kpi.high
        if not kpi.low <= value <= top:
            raise KpiRejected(
                Reason.OUT_OF_RANGE, f"kpis.{kpi.name}={value} outside [{kpi.low}, {top}]"
            )
        values.append(value)
    return KpiSample(cell, ts, int(ts // step_seconds), tuple(values))


def _exact_fields(doc: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if name not in doc:
            raise KpiRejected(Reason.MISSING_FIELD, f"missing field {where}{name}")
    for name in doc:
        if name not in names:
            raise KpiRejected(Reason.UNKNOWN_FIELD, f"unknown field {where}{str(name)[:40]}")


class OrderGuard:
    """Per-cell newest step plus the steps seen within the tolerance window.

    A sample for a step already seen is a duplicate; one older than ``newest - tolerance``
    is out of order. Within the tolerance a late sample fills its gap. The durable
    store's primary key backs this up across restarts (see ``Store.recent_steps``).
    """

    def __init__(self, tolerance_steps: int) -> None:
        self.tolerance = tolerance_steps
        self._newest: dict[str, int] = {}
        self._recent: dict[str, set[int]] = {}

    def seed(self, cell: str, steps: list[int]) -> None:
        if steps:
            newest = max(steps)
            self._newest[cell] = newest
            self._recent[cell] = {s for s in steps if s >= newest - self.tolerance}

    def knows(self, cell: str) -> bool:
        return cell in self._newest

    def newest(self, cell: str) -> int | None:
        return self._newest.get(cell)

    def check(self, sample: KpiSample) -> bool:
        """Raise for a duplicate or a too-late sample; True when it is the cell's newest."""
        newest = self._newest.get(sample.cell)
        if newest is None:
            return True
        if sample.step < newest - self.tolerance:
            raise KpiRejected(
                Reason.OUT_OF_ORDER,
                f"step {sample.step} is {newest - sample.step} steps behind the newest "
                f"(tolerance {self.tolerance})",
            )
        if sample.step == newest or sample.step in self._recent[sample.cell]:
            raise KpiRejected(
                Reason.DUPLICATE, f"cell {sample.cell} already has step {sample.step}"
            )
        return sample.step > newest

    def accept(self, sample: KpiSample) -> None:
        newest = self._newest.get(sample.cell)
        recent = self._recent.setdefault(sample.cell, set())
        recent.add(sample.step)
        if newest is None or sample.step > newest:
            newest = self._newest[sample.cell] = sample.step
            floor = newest - self.tolerance
            if len(recent) > self.tolerance + 1:
                self._recent[sample.cell] = {s for s in recent if s >= floor}
