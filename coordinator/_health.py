"""What sites report about themselves (health, forecast error, actuals).

The writers here run inside the group commit of signed site requests
(``fedge.coordinator._access.SiteRequests``): one transaction stores the nonces of many
requests together with what those requests carried, so a batch is stored exactly when
its request is admitted. Rows are written as hand-built statements on the driver's own
cursor: compiling a SQLAlchemy multi-row insert cost more than executing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pydantic import TypeAdapter
from sqlalchemy import Connection, Engine, func
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from fedge.coordinator._errors import NotFoundError
from fedge.coordinator._schema import (
    HEALTH_HISTORY_PER_SITE,
    ActualRow,
    ForecastBatch,
    ForecastRow,
    HealthReport,
    Site,
    SiteHealth,
    SiteHealthHistory,
    SiteHealthPublic,
)

_FORECAST_COLUMNS: Final = 'site_id, cell, step, made_step, "values", model_version, received_at'
_ACTUAL_COLUMNS: Final = 'site_id, cell, step, "values", received_at'

# One request's batch, as its validated model serialises it (canonical JSON: exactly the
# fields and types pydantic admitted), is spread into rows by the database itself: the
# per-row Python of building and binding ~40 rows x 7 parameters cost more than the
# database's inserting them. One statement per request and table, in order, so each
# request's count of new rows comes from the statement's own row count and a row two
# batches of one group share counts for the first.
_SQLITE_FORECASTS: Final = (
    f"INSERT INTO forecasts ({_FORECAST_COLUMNS}) "
    "SELECT ?1, f.value ->> 'cell', f.value ->> 'step', f.value ->> 'made_step', "
    "f.value -> 'values', ?2, ?3 FROM json_each(?4, '$.forecasts') AS f "
    "WHERE true ON CONFLICT DO NOTHING"
)
_SQLITE_ACTUALS: Final = (
    f"INSERT INTO actuals ({_ACTUAL_COLUMNS}) "
    "SELECT ?1, a.value ->> 'cell', a.value ->> 'step', a.value -> 'values', ?3 "
    "FROM json_each(?4, '$.actuals') AS a WHERE true ON CONFLICT DO NOTHING"
)
# PostgreSQL: both tables in one statement (data-modifying CTEs), each table's rows
# parsed once (json_to_recordset; every ``->`` on a json value parses its text again), and
# every request's statement of a group sent in one pipeline (psycopg's executemany).
_PG_BATCH: Final = (
    f"WITH f AS (INSERT INTO forecasts ({_FORECAST_COLUMNS}) "
    'SELECT %(site)s, x.cell, x.step, x.made_step, x."values", %(version)s, %(now)s '
    "FROM json_to_recordset(%(forecasts)s::json) "
    'AS x(cell text, step bigint, made_step bigint, "values" json) '
    "ON CONFLICT DO NOTHING RETURNING 1), "
    f"a AS (INSERT INTO actuals ({_ACTUAL_COLUMNS}) "
    'SELECT %(site)s, x.cell, x.step, x."values", %(now)s '
    'FROM json_to_recordset(%(actuals)s::json) AS x(cell text, step bigint, "values" json) '
    "ON CONFLICT DO NOTHING RETURNING 1) "
    "SELECT (SELECT count(*) FROM f) + (SELECT count(*) FROM a)"
)
_FORECAST_ROWS: Final = TypeAdapter(list[ForecastRow])
_ACTUAL_ROWS: Final = TypeAdapter(list[ActualRow])


def write_forecasts(
    connection: Connection, items: Sequence[tuple[str, ForecastBatch]], now: float
) -> list[int]:
    """Store the batches of admitted requests; per request, how many of its forecasts and
    actuals were new. A row two batches of one group share counts for the first."""
    if not items:
        return []
    dialect = connection.dialect
    error: type[Exception] = dialect.loaded_dbapi.Error
    postgresql = dialect.name == "postgresql"
    # the driver's own cursor: psycopg's executemany takes returning=, DBAPI's does not
    cursor: Any = connection.connection.cursor()
    try:
        if postgresql:
            params = [
                {
                    "site": site_hex,
                    "version": b.model_version,
                    "now": now,
                    "forecasts": _FORECAST_ROWS.dump_json(b.forecasts).decode(),
                    "actuals": _ACTUAL_ROWS.dump_json(b.actuals).decode(),
                }
                for site_hex, b in items
            ]
            cursor.executemany(_PG_BATCH, params, returning=True)
            stored = []
            while True:
                stored.append(int(cursor.fetchone()[0]))
                if not cursor.nextset():
                    break
            return stored
        stored = []
        for site_hex, b in items:
            doc = (site_hex, b.model_version, now, b.model_dump_json())
            cursor.execute(_SQLITE_FORECASTS, doc)
            count = cursor.rowcount
            cursor.execute(_SQLITE_ACTUALS, doc)
            stored.append(count + cursor.rowcount)
        return stored
    except error as exc:  # the driver's own error, as SQLAlchemy would have raised it
        statement = _PG_BATCH if postgresql else _SQLITE_FORECASTS
        raise DBAPIError.instance(statement, None, exc, error, dialect=dialect) from exc
    finally:
        cursor.close()


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
