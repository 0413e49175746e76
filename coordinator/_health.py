"""What sites report about themselves (health, forecast error, actuals).

The writers here run inside the group commit of signed site requests
(``fedge.coordinator._access.SiteRequests``): one transaction stores the nonces of many
requests together with what those requests carried, so a batch is stored exactly when
its request is admitted. Rows are written as hand-built statements: compiling a
SQLAlchemy multi-row insert cost more than executing it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import Connection, Engine, func
from sqlmodel import Session, col, select

from fedge.coordinator._errors import NotFoundError
from fedge.coordinator._schema import (
    HEALTH_HISTORY_PER_SITE,
    ForecastBatch,
    HealthReport,
    Site,
    SiteHealth,
    SiteHealthHistory,
    SiteHealthPublic,
)

_ROWS_PER_STATEMENT: Final = 1000  # 7,000 parameters: below SQLite's limit

_FORECAST_COLUMNS: Final = 'site_id, cell, step, made_step, "values", model_version, received_at'
_ACTUAL_COLUMNS: Final = 'site_id, cell, step, "values", received_at'
_PG_FORECASTS: Final = (
    f"INSERT INTO forecasts ({_FORECAST_COLUMNS}) SELECT * FROM unnest("
    "%s::varchar[], %s::varchar[], %s::bigint[], %s::bigint[], %s::text[]::json[], "
    "%s::varchar[], %s::float8[]) ON CONFLICT DO NOTHING RETURNING site_id, cell, step, made_step"
)
_PG_ACTUALS: Final = (
    f"INSERT INTO actuals ({_ACTUAL_COLUMNS}) SELECT * FROM unnest("
    "%s::varchar[], %s::varchar[], %s::bigint[], %s::text[]::json[], %s::float8[]) "
    "ON CONFLICT DO NOTHING RETURNING site_id, cell, step"
)


@functools.lru_cache(maxsize=64)
def _sqlite_insert(table: str, columns: str, width: int, rows: int, returning: str) -> str:
    values = "(" + ", ".join(["?"] * width) + ")"
    return (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([values] * rows)} "
        f"ON CONFLICT DO NOTHING RETURNING {returning}"
    )


def _json(values: list[float]) -> str:
    # repr of a finite float is valid JSON, and much cheaper than json.dumps per row
    return "[" + ", ".join(map(repr, values)) + "]"


def _insert(
    connection: Connection, table: str, columns: str, rows: list[tuple[Any, ...]], key: int
) -> set[tuple[Any, ...]]:
    """Insert ``rows`` (unique on their first ``key`` columns), skipping stored ones; the
    keys of the rows inserted."""
    if not rows:
        return set()
    names = [c.strip() for c in columns.split(",")][:key]
    inserted: set[tuple[Any, ...]] = set()
    if connection.dialect.name == "postgresql":
        statement = _PG_FORECASTS if table == "forecasts" else _PG_ACTUALS
        arrays = tuple(list(column) for column in zip(*rows, strict=True))
        result = connection.exec_driver_sql(statement, arrays)
        inserted.update(tuple(r) for r in result.all())
        return inserted
    width = len(rows[0])
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        statement = _sqlite_insert(table, columns, width, len(chunk), ", ".join(names))
        params = tuple(v for row in chunk for v in row)
        inserted.update(tuple(r) for r in connection.exec_driver_sql(statement, params).all())
    return inserted


def write_forecasts(
    connection: Connection, items: Sequence[tuple[str, ForecastBatch]], now: float
) -> list[int]:
    """Store the batches of admitted requests in one statement per table; per request,
    how many of its forecasts and actuals were new. A row two batches of one group share
    counts for the first."""
    forecasts: dict[tuple[str, str, int, int], tuple[Any, ...]] = {}
    actuals: dict[tuple[str, str, int], tuple[Any, ...]] = {}
    owner: dict[tuple[Any, ...], int] = {}
    for index, (site_hex, batch) in enumerate(items):
        version = batch.model_version
        for f in batch.forecasts:
            key = (site_hex, f.cell, f.step, f.made_step)
            if key not in forecasts:
                forecasts[key] = (*key, _json(f.values), version, now)
                owner[key] = index
        for a in batch.actuals:
            akey = (site_hex, a.cell, a.step)
            if akey not in actuals:
                actuals[akey] = (*akey, _json(a.values), now)
                owner[akey] = index
    stored = [0] * len(items)
    new = _insert(connection, "forecasts", _FORECAST_COLUMNS, list(forecasts.values()), 4)
    new |= _insert(connection, "actuals", _ACTUAL_COLUMNS, list(actuals.values()), 3)
    for key in new:
        stored[owner[key]] += 1
    return stored


def health_row(site_hex: str, report: HealthReport, now: float) -> dict[str, Any]:
    """The columns of ``site_health`` / ``site_health_history`` for one report."""
    return {
        "site_id": site_hex,
        "received_at": now,
        "sent_at": report.sent_at,
        "model_version": report.model_version,
        "store_bytes": report.store_bytes,
        "alerts_warning": report.alerts.warning,
        "alerts_critical": report.alerts.critical,
        "last_kpi_at": report.last_kpi_at,
        "supernode": report.supernode.value,
        "backlog": report.backlog,
        "rmse": report.mean_rmse(),
        "errors": [e.model_dump() for e in report.errors],
    }


_LATEST = SiteHealth.__table__  # type: ignore[attr-defined]
_HISTORY = SiteHealthHistory.__table__  # type: ignore[attr-defined]


def write_health(
    connection: Connection, items: Sequence[tuple[str, HealthReport]], now: float
) -> list[None]:
    """Keep each report as the site's latest and in its bounded history."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    for site_hex, report in items:
        row = health_row(site_hex, report, now)
        upsert = dialect.insert(_LATEST).values(row)
        connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[_LATEST.c.site_id],
                set_={k: upsert.excluded[k] for k in row if k != "site_id"},
            )
        )
        connection.execute(_HISTORY.insert().values(row))
        oldest_kept = (
            select(_HISTORY.c.received_at)
            .where(_HISTORY.c.site_id == site_hex)
            .order_by(_HISTORY.c.received_at.desc())
            .offset(HEALTH_HISTORY_PER_SITE - 1)
            .limit(1)
            .scalar_subquery()
        )
        connection.execute(
            _HISTORY.delete().where(
                _HISTORY.c.site_id == site_hex, _HISTORY.c.received_at < oldest_kept
            )
        )
    return [None] * len(items)


def site_errors(session: Session, site_ids: Sequence[str], since: float) -> dict[str, float]:
    """The latest mean RMSE (over cells and targets, shortest horizon) of each site among
    its reports received after ``since``; sites without one are left out."""
    if not site_ids:
        return {}
    latest = (
        select(func.max(_HISTORY.c.id).label("id"))
        .where(
            _HISTORY.c.site_id.in_(list(site_ids)),
            _HISTORY.c.received_at > since,
            _HISTORY.c.rmse.is_not(None),
        )
        .group_by(_HISTORY.c.site_id)
        .subquery()
    )
    rows = session.execute(
        select(_HISTORY.c.site_id, _HISTORY.c.rmse).join(latest, _HISTORY.c.id == latest.c.id)
    ).all()
    return {site: float(rmse) for site, rmse in rows}


def latest_health(engine: Engine, site_hex: str) -> SiteHealthPublic:
    """The latest report of one site; 404 when it is not enrolled or never reported."""
    with Session(engine) as session:
        row = session.get(SiteHealth, site_hex)
        if row is None:
            known = session.get(Site, site_hex) is not None
            raise NotFoundError(
                f"site {site_hex} has not reported its health" if known else f"no site {site_hex}"
            )
        return SiteHealthPublic.model_validate(row, from_attributes=True)


def fleet_health(engine: Engine) -> list[SiteHealthPublic]:
    """The latest report of every site that reported, by site id."""
    with Session(engine) as session:
        rows = session.exec(select(SiteHealth).order_by(col(SiteHealth.site_id))).all()
        return [SiteHealthPublic.model_validate(r, from_attributes=True) for r in rows]


__all__ = ["fleet_health", "latest_health", "site_errors", "write_forecasts", "write_health"]
