"""A site's training material inside a worker: prepared once per process and reused.

A deployed SuperNode trains on every cell of its agent's store: each cell is its own
series, prepared with its own scaler (cells of one gNB differ in load by orders of
magnitude), and the round draws its batches from all cells' windows together. The
server's plan only says how to prepare them (forecast spec, validation and test days),
never where the data is.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from fedge.core import TARGET_INDEX, AgentStoreError, read_cell, stored_cells
from fedge.federation._errors import FederationError
from fedge.models import ForecastSpec, ModelError, PreparedSite, prepare_site

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _store_task(
    store: str, mtime_ns: int, forecast_json: str, val_days: int, test_days: int
) -> tuple[PreparedSite, ...]:
    path = Path(store)
    spec = ForecastSpec.from_dict(json.loads(forecast_json))
    prepared: list[PreparedSite] = []
    try:
        cells = stored_cells(path)
        for index, cell in enumerate(cells):
            stored = read_cell(path, index)
            try:
                prepared.append(
                    prepare_site(
                        stored.values,
                        stored.minute_of_week(),
                        stored.steps_per_day,
                        spec,
                        TARGET_INDEX,
                        val_days,
                        test_days,
                    )
                )
            except ModelError as exc:  # a cell added lately: too short to train on yet
                log.warning("site data: cell %s left out this round: %s", cell, exc)
    except AgentStoreError as exc:
        raise FederationError(f"site data: {exc}") from exc
    if not prepared:
        raise FederationError(
            f"site data: none of the {len(cells)} cells in {store} holds enough days to "
            f"train on ({val_days} validation and {test_days} test days plus 2 training days)"
        )
    return tuple(prepared)


def store_task(
    store: Path, spec: ForecastSpec, val_days: int, test_days: int
) -> tuple[PreparedSite, ...]:
    """Every usable cell of the agent store at ``store``, each prepared for ``spec`` (re-read
    when the store changed since)."""
    try:
        mtime = store.stat().st_mtime_ns
    except OSError as exc:
        raise FederationError(f"site data: {store}: {exc.strerror or exc}") from exc
    forecast = json.dumps(spec.to_dict(), sort_keys=True)
    return _store_task(str(store), mtime, forecast, val_days, test_days)
