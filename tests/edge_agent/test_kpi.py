"""The KPI message validator: every rejection class, and the order guard."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedge.edge_agent import KpiRejected, KpiSample, OrderGuard, Reason, parse_kpi

NOW = 1_800_000_000.0
GOOD_KPIS = {
    "dl_prb_util": 40.0,
    "ul_prb_util": 10.0,
    "dl_throughput_mbps": 120.0,
    "active_ues": 33,
    "cpu_util": 20.0,
}


def doc(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"v": 1, "cell": "c-1", "ts": NOW - 5, "kpis": dict(GOOD_KPIS)}
    d.update(changes)
    return d


def parse(payload: bytes | dict[str, Any], max_bytes: int = 4096) -> KpiSample:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_kpi(raw, max_bytes=max_bytes, step_seconds=300, now=NOW, max_future_s=60)


def test_a_valid_sample_parses_onto_the_step_grid() -> None:
    s = parse(doc(kpis={**GOOD_KPIS, "ul_prb_util": None}))
    assert s.cell == "c-1" and s.step == int((NOW - 5) // 300)
    assert s.values == (40.0, None, 120.0, 33.0, 20.0)


def kpis(**changes: Any) -> dict[str, Any]:
    return {**GOOD_KPIS, **changes}


CASES: list[tuple[bytes | dict[str, Any], Reason, str]] = [
    (b"x" * 5000, Reason.OVERSIZE, "5000 bytes"),
    (b"{not json", Reason.NOT_JSON, ""),
    (b"\xff\xfe\x00garbage", Reason.NOT_JSON, ""),
    (b"[1, 2]", Reason.NOT_OBJECT, "list"),
    ({"v": 1, "cell": "c", "ts": NOW}, Reason.MISSING_FIELD, "kpis"),
    (
        doc(kpis={k: v for k, v in GOOD_KPIS.items() if k != "cpu_util"}),
        Reason.MISSING_FIELD,
        "kpis.cpu_util",
    ),
    (doc(extra=1), Reason.UNKNOWN_FIELD, "extra"),
    (doc(kpis=kpis(rsrp=-90)), Reason.UNKNOWN_FIELD, "kpis.rsrp"),
    (doc(v=2), Reason.BAD_VERSION, "2"),
    (doc(v=True), Reason.BAD_VERSION, "True"),
    (doc(cell=7), Reason.WRONG_TYPE, "cell"),
    (doc(cell="bad cell/#"), Reason.BAD_CELL, "bad cell"),
    (doc(cell=""), Reason.BAD_CELL, ""),
    (doc(ts="2026-01-01"), Reason.WRONG_TYPE, "ts"),
    (doc(kpis=[1, 2]), Reason.WRONG_TYPE, "kpis"),
    (doc(kpis=kpis(active_ues="33")), Reason.WRONG_TYPE, "kpis.active_ues"),
    (doc(kpis=kpis(active_ues=True)), Reason.WRONG_TYPE, "kpis.active_ues"),
    (doc(kpis=kpis(dl_prb_util=101.0)), Reason.OUT_OF_RANGE, "dl_prb_util"),
    (doc(kpis=kpis(dl_throughput_mbps=-1)), Reason.OUT_OF_RANGE, "dl_throughput_mbps"),
    (doc(kpis=kpis(active_ues=1e7)), Reason.OUT_OF_RANGE, "active_ues"),
    (doc(ts=100.0), Reason.OUT_OF_RANGE, "before 2000"),
    (doc(ts=NOW + 3600), Reason.FUTURE_TIMESTAMP, "3600 s ahead"),
    (b'{"v": 1, "cell": "c", "ts": 1' + b"0" * 400 + b', "kpis": {}}', Reason.OUT_OF_RANGE, "401"),
    (
        json.dumps(doc()).replace('"cpu_util": 20.0', '"cpu_util": 2' + "0" * 40 + ".5").encode(),
        Reason.OUT_OF_RANGE,
        "43 characters",
    ),
    (b"[" * 2000 + b"]" * 2000, Reason.TOO_DEEP, "deeper than 8"),
    (
        json.dumps(doc()).replace('"cpu_util": 20.0', '"cpu_util": ' + "[" * 9 + "]" * 9).encode(),
        Reason.TOO_DEEP,
        "",
    ),
    (('{"a":' * 600 + "1" + "}" * 600).encode(), Reason.TOO_DEEP, ""),
    (doc(v=[[["x" * 100]]]), Reason.BAD_VERSION, "[[['xxx"),
]


@pytest.mark.parametrize(("payload", "reason", "detail"), CASES)
def test_each_bad_payload_is_rejected_with_its_reason(
    payload: bytes | dict[str, Any], reason: Reason, detail: str
) -> None:
    with pytest.raises(KpiRejected) as info:
        parse(payload)
    assert info.value.reason == reason
    assert detail in info.value.detail


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_rejected(literal: str) -> None:
    raw = json.dumps(doc()).replace('"cpu_util": 20.0', f'"cpu_util": {literal}').encode()
    with pytest.raises(KpiRejected) as info:
        parse(raw)
    assert info.value.reason == Reason.NON_FINITE


def test_the_oversized_integer_is_refused_inside_the_decoder() -> None:
    """``float(int)`` of a 401-digit integer overflows; the decoder must refuse it first."""
    raw = b'{"v": 1, "cell": "c", "ts": 1' + b"0" * 400 + b', "kpis": {}}'
    assert len(raw) == 442
    with pytest.raises(KpiRejected) as info:
        parse(raw)
    assert info.value.reason == Reason.OUT_OF_RANGE


def test_deep_nesting_under_the_size_limit_is_refused_not_a_recursion_error() -> None:
    raw = b'{"v": 1, "cell": "c", "ts": 1, "kpis": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert len(raw) < 4096
    with pytest.raises(KpiRejected) as info:
        parse(raw)
    assert info.value.reason == Reason.TOO_DEEP


def test_nesting_at_the_limit_is_judged_by_the_schema_and_strings_do_not_count() -> None:
    at_limit = json.dumps(doc(kpis=kpis(cpu_util=[[[[[[1]]]]]])))  # 8 levels in all
    with pytest.raises(KpiRejected) as info:
        parse(at_limit.encode())
    assert info.value.reason == Reason.WRONG_TYPE
    brackets = doc(x="[{" * 100)  # brackets inside a string are not nesting
    with pytest.raises(KpiRejected) as info:
        parse(brackets)
    assert info.value.reason == Reason.UNKNOWN_FIELD
    quoted = doc(x='\\"[' * 50)  # escaped quotes and backslashes do not end the string
    with pytest.raises(KpiRejected) as info:
        parse(quoted)
    assert info.value.reason == Reason.UNKNOWN_FIELD


def test_long_but_ordinary_numbers_are_accepted() -> None:
    s = parse(doc(ts=NOW - 5.000000000000001, kpis=kpis(active_ues=12345678901234567 / 1e12)))
    assert s.values[3] == 12345678901234567 / 1e12


def test_a_timestamp_within_the_future_allowance_is_accepted() -> None:
    assert parse(doc(ts=NOW + 59)).ts == NOW + 59


def sample(step: int, cell: str = "c") -> KpiSample:
    return KpiSample(cell, step * 300.0, step, (1.0,) * 5)


def test_order_guard_duplicates_late_fills_and_out_of_order() -> None:
    g = OrderGuard(tolerance_steps=2)
    for step in (10, 11, 13):
        assert g.check(sample(step)) is True
        g.accept(sample(step))
    assert g.check(sample(12)) is False  # late, within tolerance: fills the gap
    g.accept(sample(12))
    for dup in (12, 13):
        with pytest.raises(KpiRejected) as info:
            g.check(sample(dup))
        assert info.value.reason == Reason.DUPLICATE
    with pytest.raises(KpiRejected) as info:
        g.check(sample(10))
    assert info.value.reason == Reason.OUT_OF_ORDER
    assert "3 steps behind" in info.value.detail
    assert g.check(sample(10, cell="other")) is True  # cells are independent


def test_order_guard_seeded_from_the_store_after_a_restart() -> None:
    g = OrderGuard(tolerance_steps=1)
    g.seed("c", [20, 19, 18])
    assert g.knows("c") and g.newest("c") == 20
    with pytest.raises(KpiRejected):
        g.check(sample(19))
    assert g.check(sample(21)) is True
