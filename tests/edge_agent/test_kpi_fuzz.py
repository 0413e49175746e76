"""Fuzzing the KPI parser: whatever the bytes, the only exception is ``KpiRejected``."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedge.core import KPIS
from fedge.edge_agent import KpiRejected, KpiSample, parse_kpi
from fedge.edge_agent._kpi import UNBOUNDED_CEILING
from tests.edge_agent.test_kpi import GOOD_KPIS, NOW, doc

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_BYTES = 65_536
VALID = json.dumps(doc()).encode()


def outcome(payload: bytes) -> KpiSample | KpiRejected:
    """The parse result or its typed rejection; any other exception fails the test."""
    try:
        sample = parse_kpi(payload, max_bytes=MAX_BYTES, step_seconds=300, now=NOW, max_future_s=60)
    except KpiRejected as exc:
        assert exc.reason and isinstance(exc.detail, str)
        return exc
    for kpi, value in zip(KPIS, sample.values, strict=True):
        top = UNBOUNDED_CEILING if kpi.high is None else kpi.high
        assert value is None or (math.isfinite(value) and kpi.low <= value <= top)
    assert math.isfinite(sample.ts) and sample.step == int(sample.ts // 300)
    return sample


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(payload: bytes) -> None:
    outcome(payload)


@FUZZ
@given(trees)
def test_random_json_trees(tree: Any) -> None:
    outcome(json.dumps(tree, allow_nan=True).encode())


@FUZZ
@given(
    st.sampled_from(["v", "cell", "ts", "kpis", *(f"kpis.{k}" for k in GOOD_KPIS)]),
    trees,
)
def test_each_field_given_any_value(field: str, value: Any) -> None:
    d = doc()
    if field.startswith("kpis."):
        d["kpis"][field.split(".", 1)[1]] = value
    else:
        d[field] = value
    outcome(json.dumps(d, allow_nan=True).encode())


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
    st.lists(st.tuples(st.integers(0, len(VALID)), st.binary(min_size=1, max_size=8)), max_size=4),
    st.one_of(st.none(), st.integers(0, len(VALID))),
)
def test_mutations_of_a_valid_message(
    edits: list[tuple[int, int]], inserts: list[tuple[int, bytes]], cut: int | None
) -> None:
    out = bytearray(VALID)
    for position, value in edits:
        out[position] = value
    for position, chunk in inserts:
        out[position:position] = chunk
    outcome(bytes(out[:cut] if cut is not None else out))


@FUZZ
@given(
    st.sampled_from(['"ts": ', '"v": ', '"cpu_util": ', '"active_ues": ']),
    st.sampled_from(["", "-"]),
    st.integers(20, 6000),
    st.sampled_from(["", ".5", "e5", "e999", ".0e308"]),
)
def test_huge_numbers(key: str, sign: str, digits: int, tail: str) -> None:
    text = VALID.decode()
    at = text.index(key) + len(key)
    end = min(i for i in (text.find(",", at), text.find("}", at)) if i >= 0)
    number = sign + "1" + "0" * digits + tail
    got = outcome((text[:at] + number + text[end:]).encode())
    assert isinstance(got, KpiRejected)


@FUZZ
@given(st.integers(1, 30_000), st.sampled_from(["[", '{"a": ']), st.booleans())
def test_deep_nesting(depth: int, opener: str, inside_kpis: bool) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    if inside_kpis:
        payload = json.dumps(doc()).replace('"cpu_util": 20.0', f'"cpu_util": {nested}')
    else:
        payload = nested
    got = outcome(payload.encode())
    assert isinstance(got, KpiRejected)


@FUZZ
@given(
    st.sampled_from(["ts", "cpu_util", "dl_throughput_mbps"]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "nan", "inf"]),
)
def test_non_finite_literals(field: str, literal: str) -> None:
    text = VALID.decode()
    key = f'"{field}": '
    at = text.index(key) + len(key)
    end = min(i for i in (text.find(",", at), text.find("}", at)) if i >= 0)
    got = outcome((text[:at] + literal + text[end:]).encode())
    assert isinstance(got, KpiRejected)


@FUZZ
@given(st.text(max_size=80), st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1"]))
def test_unicode_cells_and_encodings(cell: str, encoding: str) -> None:
    text = json.dumps(doc(cell=cell), ensure_ascii=False)
    try:
        payload = text.encode(encoding)
    except UnicodeEncodeError:
        payload = text.encode("utf-8", errors="surrogatepass")
    got = outcome(payload)
    if isinstance(got, KpiSample):
        assert got.cell == cell and encoding in ("utf-8", "latin-1")
