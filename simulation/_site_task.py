"""A simulated site's training material inside a worker: opened once per process and reused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from fedge.core import TARGET_INDEX
from fedge.models import ForecastSpec, PreparedSite, prepare_site
from fedge.simulation._series import SiteSeries
from fedge.simulation._source import open_sites


@dataclass(frozen=True)
class SiteTask:
    series: SiteSeries
    prepared: PreparedSite


@lru_cache(maxsize=32)
def _site_task(
    data_spec: str, index: int, forecast_json: str, val_days: int, test_days: int
) -> SiteTask:
    series = open_sites(data_spec).site(index)
    spec = ForecastSpec.from_dict(json.loads(forecast_json))
    prepared = prepare_site(
        series.values,
        series.minute_of_week(),
        series.steps_per_day,
        spec,
        TARGET_INDEX,
        val_days,
        test_days,
    )
    return SiteTask(series, prepared)


def site_task(
    data_spec: str, index: int, spec: ForecastSpec, val_days: int, test_days: int
) -> SiteTask:
    return _site_task(
        data_spec, index, json.dumps(spec.to_dict(), sort_keys=True), val_days, test_days
    )
