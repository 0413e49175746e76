"""Fixtures for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _pythonpath_restored() -> Iterator[None]:
    """Flower's Ray backend writes the driver's whole ``sys.path`` into ``$PYTHONPATH``
    when a simulation starts; left there, every later subprocess (an empty venv's Python
    included) would see this checkout and its venv."""
    before = os.environ.get("PYTHONPATH")
    yield
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before
