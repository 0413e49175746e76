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
