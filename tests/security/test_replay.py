"""The replay window against a trivially correct model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.security import ReplayDetected
from fedge.security._replay import ReplayWindow


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 70), seqs=st.lists(st.integers(0, 200), max_size=120))
def test_window_matches_model(size: int, seqs: list[int]) -> None:
    window, seen, highest = ReplayWindow(size), set[int](), -1
    for seq in seqs:
        expected_ok = seq not in seen and seq > highest - size
        try:
            window.accept(seq)
        except ReplayDetected:
            assert not expected_ok
        else:
            assert expected_ok
            seen.add(seq)
            highest = max(highest, seq)


def test_huge_jump_does_not_blow_up() -> None:
    window = ReplayWindow(1024)
    window.accept(0)
    window.accept(2**64 - 1)
    with pytest.raises(ReplayDetected):
        window.accept(0)
    window.accept(2**64 - 2)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(0)


@pytest.mark.parametrize("size", [1, 4, 1024])
def test_window_restored_from_a_mark_refuses_everything_up_to_it(size: int) -> None:
    window = ReplayWindow.refusing_up_to(100, size)
    assert window.highest == 100
    for seq in (0, 100 - size, 99, 100):
        with pytest.raises(ReplayDetected):
            window.check(seq)
    window.accept(101)
    with pytest.raises(ReplayDetected):
        window.accept(100)
    assert window.highest == 101


def test_window_of_one_accepts_only_increasing_numbers() -> None:
    window = ReplayWindow(1)
    window.accept(5)
    for seq in (4, 5):
        with pytest.raises(ReplayDetected):
            window.accept(seq)
    window.accept(9)
