"""A site's training material inside a worker: prepared once per process and reused.

A deployed SuperNode trains on one cell of its agent's store, named by its own node
config; the server's plan only says how to prepare it (forecast spec, validation and
test days), never where the data is.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from fedge.core import TARGET_INDEX, AgentStoreError, read_cell
from fedge.federation._errors import FederationError
from fedge.models import ForecastSpec, PreparedSite, prepare_site


@lru_cache(maxsize=8)
def _store_task(
    store: str, mtime_ns: int, cell: int, forecast_json: str, val_days: int, test_days: int
) -> PreparedSite:
    try:
        stored = read_cell(Path(store), cell)
    except AgentStoreError as exc:
        raise FederationError(f"site data: {exc}") from exc
    spec = ForecastSpec.from_dict(json.loads(forecast_json))
    return prepare_site(
        stored.values,
        stored.minute_of_week(),
        stored.steps_per_day,
        spec,
        TARGET_INDEX,
        val_days,
        test_days,
    )


def store_task(
    store: Path, cell: int, spec: ForecastSpec, val_days: int, test_days: int
) -> PreparedSite:
    """Cell ``cell`` of the agent store at ``store``, prepared for ``spec`` (re-read when
    the store changed since)."""
    try:
        mtime = store.stat().st_mtime_ns
    except OSError as exc:
        raise FederationError(f"site data: {store}: {exc.strerror or exc}") from exc
    forecast = json.dumps(spec.to_dict(), sort_keys=True)
    return _store_task(str(store), mtime, cell, forecast, val_days, test_days)
