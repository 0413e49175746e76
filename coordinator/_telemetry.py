"""The coordinator's operator metrics: the fleet's state read from the registry database
at scrape time, and the counters of events that leave no row (ingest, decision ticks).

State read at scrape time is the same from every worker process and survives restarts,
so ``serve --workers N`` needs no shared counters for it; only the event counters are
per process (Prometheus' ``rate`` treats a worker's restart as a counter reset). No
per-site label anywhere: a fleet of thousands of sites would be thousands of series."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from fedge.coordinator._actions import ActionRecord, DecisionTick
from fedge.coordinator._leader import leaders
from fedge.coordinator._rollout import Rollout, RolloutState
from fedge.coordinator._schema import (
    AuditEntry,
    Round,
    RoundStatus,
    Run,
    RunStatus,
    Site,
    SiteHealth,
    SiteState,
)
from fedge.coordinator._settings import CoordinatorSettings
from fedge.core import POWER_MODES

__all__ = ["ACTION_WINDOW", "SITE_STATES", "Telemetry"]

#: The newest actions a scrape reads for the decision mix (as the dashboard's page does):
#: one strategic and one tactical per site, for fleets of up to half this many sites.
ACTION_WINDOW = 5000

#: ``fedge_coordinator_sites{state}``: every site is in exactly one of these.
SITE_STATES = ("ok", "late", "offline", "never_seen", "revoked")

_TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Telemetry(Collector):
    """Registered in each app's registry; the event counters are fed by the coordinator's
    threads and routes, the rest is queried on ``collect``."""

    def __init__(self, settings: CoordinatorSettings, reader: Engine) -> None:
        self.settings, self.reader = settings, reader
        #: Whether this process runs the schedulers (``_leader``); set by the coordinator.
        self.leader: Callable[[], bool] | None = None
        self.ingest_batches = Counter(
            "fedge_coordinator_ingest_batches",
            "Forecast batches from sites: accepted, or rejected (unauthenticated, invalid, "
            "unavailable) before anything of them was stored.",
            ["outcome"],
            registry=None,
        )
        self.ingest_rows = Counter(
            "fedge_coordinator_ingest_rows",
            "Forecast and actual rows of accepted batches: stored, or already stored "
            "(a batch sent again).",
            ["outcome"],
            registry=None,
        )
        self.tick_seconds = Histogram(
            "fedge_coordinator_decision_tick_seconds",
            "Duration of one live decision tick in this process (read, decide, store).",
            ["kind"],
            buckets=_TICK_BUCKETS,
            registry=None,
        )
        self.tick_failures = Counter(
            "fedge_coordinator_decision_tick_failures",
            "Live decision ticks of this process that raised (the next slot tries again).",
            ["kind"],
            registry=None,
        )
        for outcome in ("accepted", "unauthenticated", "invalid", "unavailable"):
            self.ingest_batches.labels(outcome)
        for outcome in ("stored", "duplicate"):
            self.ingest_rows.labels(outcome)

    def ingested(self, received: int, stored: int) -> None:
        self.ingest_batches.labels("accepted").inc()
        self.ingest_rows.labels("stored").inc(stored)
        self.ingest_rows.labels("duplicate").inc(max(0, received - stored))

    def ingest_refused(self, outcome: str) -> None:
        """``outcome``: unauthenticated, invalid or unavailable."""
        self.ingest_batches.labels(outcome).inc()

    def ticked(self, kind: str, seconds: float, failed: bool) -> None:
        self.tick_seconds.labels(kind).observe(seconds)
        if failed:
            self.tick_failures.labels(kind).inc()
        else:
            self.tick_failures.labels(kind)  # the series exists from the first tick

    # --- scrape ----------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected fresh each scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield from self.ingest_batches.collect()
        yield from self.ingest_rows.collect()
        yield from self.tick_seconds.collect()
        yield from self.tick_failures.collect()
        leader = GaugeMetricFamily(
            "fedge_coordinator_leader",
            "1 while this replica is the leader (runs the decision ticks, rollout timeouts, "
            "retraining and the orphaned-run sweep), else 0. SQLite: always 1.",
        )
        leader.add_metric([], 1.0 if self.leader is None or self.leader() else 0.0)
        yield leader
        started = time.perf_counter()
        up = GaugeMetricFamily(
            "fedge_coordinator_database_up",
            "1 when the registry database answered this scrape's queries, else 0.",
        )
        try:
            families = list(self._from_database(time.time()))
        except SQLAlchemyError:
            families = []
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families
        took = GaugeMetricFamily(
            "fedge_coordinator_metrics_query_seconds",
            "How long this scrape's registry queries took.",
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _from_database(self, now: float) -> Iterator[Metric]:
        with Session(self.reader) as session:
            yield _by_label(
                "fedge_coordinator_runs",
                "Federation runs by state.",
                "state",
                [s.value for s in RunStatus],
                session.exec(select(Run.status, func.count()).group_by(Run.status)).all(),
            )
            yield from _rounds(session)
            yield from _models(session)
            yield _by_label(
                "fedge_coordinator_rollouts",
                "Staged rollouts (one per promotion) by state.",
                "state",
                [s.value for s in RolloutState],
                session.exec(select(Rollout.state, func.count()).group_by(Rollout.state)).all(),
            )
            yield from self._sites(session, now)
            held = GaugeMetricFamily(
                "fedge_coordinator_leaders",
                "Sessions holding the schedulers' lock, read from the database: 1 when the "
                "replicas have their leader, 0 when none does. SQLite: always 1.",
            )
            held.add_metric([], float(leaders(session)))
            yield held
            ticks = CounterMetricFamily(
                "fedge_coordinator_decision_ticks",
                "Live decision slots taken (by any worker process), by kind.",
                labels=["kind"],
            )
            by_kind = dict(
                session.exec(
                    select(DecisionTick.kind, func.count()).group_by(DecisionTick.kind)
                ).all()
            )
            for kind in sorted({"strategic", "tactical", *by_kind}):
                ticks.add_metric([kind], float(by_kind.get(kind, 0)))
            yield ticks
            yield from _decisions(session)

    def _sites(self, session: Session, now: float) -> Iterator[Metric]:
        late, offline = (
            self.settings.dashboard_late_seconds,
            self.settings.dashboard_offline_seconds,
        )
        rows = session.exec(
            select(Site.status, Site.last_seen, SiteHealth.received_at, SiteHealth.rmse).outerjoin(
                SiteHealth, col(SiteHealth.site_id) == col(Site.id)
            )
        ).all()
        counts = dict.fromkeys(SITE_STATES, 0)
        errors: list[float] = []
        for status, last_seen, received_at, rmse in rows:
            heard = max((t for t in (last_seen, received_at) if t), default=None)
            if status is SiteState.REVOKED:
                counts["revoked"] += 1
                continue
            if heard is None:
                counts["never_seen"] += 1
            elif now - heard > offline:
                counts["offline"] += 1
            elif now - heard > late:
                counts["late"] += 1
            else:
                counts["ok"] += 1
            if rmse is not None and heard is not None and now - heard <= offline:
                errors.append(float(rmse))
        sites = GaugeMetricFamily(
            "fedge_coordinator_sites",
            "Enrolled sites by state: ok, late (no contact for dashboard_late_seconds), "
            "offline (dashboard_offline_seconds), never_seen, revoked.",
            labels=["state"],
        )
        for state, n in counts.items():
            sites.add_metric([state], float(n))
        yield sites
        rmse_family = GaugeMetricFamily(
            "fedge_coordinator_site_forecast_rmse",
            "Median and maximum over the sites in contact of each site's latest reported "
            "mean RMSE at the shortest horizon (absent until one site reports it).",
            labels=["stat"],
        )
        if errors:
            rmse_family.add_metric(["median"], statistics.median(errors))
            rmse_family.add_metric(["max"], max(errors))
        yield rmse_family
        reporting = GaugeMetricFamily(
            "fedge_coordinator_sites_reporting_errors",
            "Sites in contact whose latest health report carried forecast errors.",
        )
        reporting.add_metric([], float(len(errors)))
        yield reporting


def _by_label(
    name: str, doc: str, label: str, values: list[str], rows: object
) -> GaugeMetricFamily:
    """A gauge with a sample for every known ``values`` (zeros included, so an alert on
    ``> 0`` has a series to compare) and any other value the database holds."""
    counts = {str(getattr(k, "value", k)): int(n) for k, n in rows}  # type: ignore[attr-defined]
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value in [*values, *sorted(set(counts) - set(values))]:
        family.add_metric([value], float(counts.get(value, 0)))
    return family


def _rounds(session: Session) -> Iterator[Metric]:
    completed = CounterMetricFamily(
        "fedge_coordinator_rounds_completed", "Federation rounds completed, every run."
    )
    done = session.exec(
        select(func.count()).select_from(Round).where(Round.status == RoundStatus.COMPLETED)
    ).one()
    completed.add_metric([], float(done))
    yield completed
    last = session.exec(
        select(Round)
        .where(Round.status == RoundStatus.COMPLETED)
        .order_by(col(Round.finished_at).desc(), col(Round.id).desc())
        .limit(1)
    ).first()
    gauges = {
        "participants": "Sites whose update the last completed round aggregated.",
        "accepted": "Updates the last completed round accepted (sealed runs report it).",
        "rejected": "Updates the last completed round rejected (sealed runs report it).",
    }
    for key, doc in gauges.items():
        family = GaugeMetricFamily(f"fedge_coordinator_last_round_{key}", doc)
        if last is not None:
            value = last.participants if key == "participants" else last.metrics.get(key)
            if isinstance(value, int | float):
                family.add_metric([], float(value))
        yield family
    finished = GaugeMetricFamily(
        "fedge_coordinator_last_round_finished_timestamp_seconds",
        "Unix time the last completed round finished.",
    )
    duration = GaugeMetricFamily(
        "fedge_coordinator_last_round_duration_seconds",
        "How long the last completed round took.",
    )
    wire = GaugeMetricFamily(
        "fedge_coordinator_last_round_bytes",
        "Bytes the last completed round moved, by direction (up: from the sites).",
        labels=["direction"],
    )
    if last is not None and last.finished_at is not None:
        finished.add_metric([], last.finished_at)
        duration.add_metric([], max(0.0, last.finished_at - last.started_at))
        wire.add_metric(["up"], float(last.bytes_up))
        wire.add_metric(["down"], float(last.bytes_down))
    yield finished
    yield duration
    yield wire


def _models(session: Session) -> Iterator[Metric]:
    """Promotions and rollbacks counted from the audit log, the one record of each."""
    actions = {"model.promote": "promotions", "model.rollback": "rollbacks"}
    counts = dict(
        session.exec(
            select(AuditEntry.action, func.count())
            .where(col(AuditEntry.action).in_(list(actions)), AuditEntry.outcome == "ok")
            .group_by(AuditEntry.action)
        ).all()
    )
    docs = {
        "promotions": "Model versions promoted to production (by an operator or the policy).",
        "rollbacks": "Production rollbacks (by an operator or a failed rollout).",
    }
    for action, short in actions.items():
        family = CounterMetricFamily(f"fedge_coordinator_model_{short}", docs[short])
        family.add_metric([], float(counts.get(action, 0)))
        yield family


def _decisions(session: Session) -> Iterator[Metric]:
    """The mix of each site's newest strategic and tactical actions (columns, not rows:
    loading the window as ORM objects cost most of a scrape)."""
    query = sa_select(
        col(ActionRecord.site_id), col(ActionRecord.kind), col(ActionRecord.body),
        col(ActionRecord.ack_status), col(ActionRecord.decided_at),
    ).order_by(col(ActionRecord.id).desc()).limit(ACTION_WINDOW)  # fmt: skip
    rows = session.connection().execute(query).all()
    newest: dict[tuple[str, str], tuple[bytes, str | None]] = {}
    for site, kind, body, ack_status, _ in rows:
        newest.setdefault((site, kind), (body, ack_status))
    modes = dict.fromkeys(POWER_MODES, 0)
    shares: dict[str, list[float]] = {}
    acks = {
        (k, a): 0 for k in ("strategic", "tactical") for a in ("applied", "rejected", "pending")
    }
    for (_, kind), (body, ack_status) in newest.items():
        action = json.loads(body)
        mode, split = action.get("mode"), action.get("shares")
        if kind == "strategic" and isinstance(mode, str):
            modes[mode] = modes.get(mode, 0) + 1
        if kind == "tactical" and isinstance(split, dict):
            for name, share in split.items():
                shares.setdefault(name, []).append(float(share))
        ack = ack_status if ack_status in ("applied", "rejected") else "pending"
        acks[(kind, ack)] = acks.get((kind, ack), 0) + 1
    family = GaugeMetricFamily(
        "fedge_coordinator_decision_modes",
        "Sites whose newest energy-saving (strategic) action is each power mode.",
        labels=["mode"],
    )
    for mode, n in modes.items():
        family.add_metric([mode], float(n))
    yield family
    family = GaugeMetricFamily(
        "fedge_coordinator_decision_slice_share",
        "Mean over sites of the newest tactical action's PRB share, per slice.",
        labels=["slice"],
    )
    for name, values in sorted(shares.items()):
        family.add_metric([name], sum(values) / len(values))
    yield family
    family = GaugeMetricFamily(
        "fedge_coordinator_decision_acks",
        "Sites' newest actions by kind and acknowledgement: applied, rejected, pending.",
        labels=["kind", "ack"],
    )
    for (kind, ack), n in acks.items():
        family.add_metric([kind, ack], float(n))
    yield family
    family = GaugeMetricFamily(
        "fedge_coordinator_decision_newest_timestamp_seconds",
        "Unix time of the newest action decided (absent before the first).",
    )
    if rows:
        family.add_metric([], max(r[4] for r in rows))
    yield family
