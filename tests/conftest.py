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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For ``make test``'s parallel run (``pytest -n 2 --dist loadgroup``): every module is
    one group, so a module's fixtures (a deployment, a broker, a trained model) are set up
    once, on one worker, and its tests keep their order. Modules with end-to-end
    (``slow``) tests go first, so the longest groups do not start last and leave one worker
    idle at the end. Modules that share something on disk name one group (the agent bundle's
    build cache). Without xdist the marks are inert and only the module order changes."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    slow = {m for m, its in modules.items() if any(i.get_closest_marker("slow") for i in its)}
    ordered = sorted(modules, key=lambda m: m not in slow)  # stable: collection order kept
    items[:] = [item for m in ordered for item in modules[m]]
    for item in items:  # a module that names its group shares it (one build directory)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
