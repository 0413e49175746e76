"""What each page shows, read from the coordinator's service layer: the same calls the API's
routes make, shaped for a table. Nothing here changes state."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from sqlmodel import Session, col, select

from fedge.coordinator._actions import ActionPublic
from fedge.coordinator._errors import NotFoundError
from fedge.coordinator._health import fleet_health, latest_health
from fedge.coordinator._rollout import RolloutDetail, RolloutPublic, site_detail, version_name
from fedge.coordinator._schema import (
    Actual,
    AuditEntry,
    Forecast,
    ModelStatus,
    ModelVersion,
    Round,
    Run,
    Site,
    SiteDetail,
    SiteHealthPublic,
    SiteState,
)
from fedge.coordinator._service import Coordinator

#: Sites per fleet page: each shown site costs a few indexed reads.
FLEET_PAGE: Final = 100
AUDIT_WINDOW: Final = 1000
AUDIT_SHOWN: Final = 200
CHART_STEPS: Final = 96


class Liveness(StrEnum):
    OK = "ok"
    LATE = "late"
    OFFLINE = "offline"
    NEVER = "never seen"
    REVOKED = "revoked"


def liveness(
    site: Site, health: SiteHealthPublic | None, now: float, late: float, offline: float
) -> Liveness:
    """From the last contact: late after ``late`` seconds, offline after ``offline``
    (the settings' ``dashboard_late_seconds`` and ``dashboard_offline_seconds``)."""
    if site.status is SiteState.REVOKED:
        return Liveness.REVOKED
    heard = last_heard(site, health)
    if heard is None:
        return Liveness.NEVER
    if now - heard > offline:
        return Liveness.OFFLINE
    if now - heard > late:
        return Liveness.LATE
    return Liveness.OK


def last_heard(site: Site, health: SiteHealthPublic | None) -> float | None:
    times = [t for t in (site.last_seen, None if health is None else health.received_at) if t]
    return max(times) if times else None


# --- fleet -------------------------------------------------------------------------------


@dataclass
class FleetRow:
    site: Site
    state: Liveness
    heard: float | None
    health: SiteHealthPublic | None
    detail: SiteDetail | None = None
    last_forecast: float | None = None
    last_action: float | None = None
    action: str = ""

    @property
    def version_differs(self) -> bool:
        d = self.detail
        return (
            d is not None
            and d.served_version is not None
            and (d.served_version != d.assigned_version)
        )


@dataclass
class FleetView:
    rows: list[FleetRow]
    total: int
    matched: int
    counts: dict[Liveness, int]
    page: int
    pages: int


def _limits(coordinator: Coordinator) -> tuple[float, float]:
    settings = coordinator.settings
    return settings.dashboard_late_seconds, settings.dashboard_offline_seconds


def _matches(row: FleetRow, text: str) -> bool:
    if not text:
        return True
    site, health = row.site, row.health
    fields = [site.id, site.archetype or "", site.region or ""]
    if health is not None and health.model_version:
        fields.append(health.model_version)
    return any(text in f.lower() for f in fields)


def fleet(coordinator: Coordinator, text: str = "", state: str = "", page: int = 1) -> FleetView:
    """Every site's liveness (from its last contact), filtered by ``text`` (id, archetype,
    region, served version) and ``state``; the page shown gets versions and last times."""
    now, limits = time.time(), _limits(coordinator)
    health = {h.site_id: h for h in fleet_health(coordinator.reader)}
    rows = []
    for site in coordinator.sites(None):
        report = health.get(site.id)
        alive = liveness(site, report, now, *limits)
        rows.append(FleetRow(site, alive, last_heard(site, report), report))
    counts = {kind: sum(r.state is kind for r in rows) for kind in Liveness}
    text = text.strip().lower()
    matched = [r for r in rows if _matches(r, text) and (not state or r.state.value == state)]
    # the sites that need a look first: offline, late, never seen, then the rest
    order = [Liveness.OFFLINE, Liveness.LATE, Liveness.NEVER, Liveness.OK, Liveness.REVOKED]
    matched.sort(key=lambda r: (order.index(r.state), r.site.id))
    pages = max(1, -(-len(matched) // FLEET_PAGE))
    page = min(max(1, page), pages)
    shown = matched[(page - 1) * FLEET_PAGE : page * FLEET_PAGE]
    for row in shown:
        row.detail = site_detail(coordinator.reader, row.site.id)
        latest = coordinator.forecasts(row.site.id, 1)
        row.last_forecast = latest[0].received_at if latest else None
        actions = coordinator.actions(row.site.id, 1)
        if actions:
            row.last_action = actions[0].decided_at
            row.action = describe_action(ActionPublic.of(actions[0]))
    return FleetView(shown, len(rows), len(matched), counts, page, pages)


def describe_action(action: ActionPublic) -> str:
    """One line, as the API's action reads: the mode or the shares, and the site's ack."""
    what = action.mode or (
        "shares " + ", ".join(f"{k} {v:.2f}" for k, v in (action.shares or {}).items())
    )
    return f"{action.kind}: {what} ({action.ack_status or 'not acknowledged'})"


# --- models ------------------------------------------------------------------------------


@dataclass
class ModelRow:
    model: ModelVersion
    lineage: list[int]  # the parent chain, nearest first

    @property
    def name(self) -> str:
        assert self.model.id is not None
        return version_name(self.model.id)


@dataclass
class ModelsView:
    rows: list[ModelRow]
    production: ModelVersion | None
    rollouts: list[RolloutPublic]
    current: RolloutDetail | None

    @property
    def can_roll_back(self) -> bool:
        return self.production is not None and self.production.replaced_id is not None


def models(coordinator: Coordinator) -> ModelsView:
    versions = list(coordinator.models(None))
    by_id = {m.id: m for m in versions}
    rows = []
    for model in reversed(versions):  # newest first
        chain: list[int] = []
        parent = model.parent_id
        while parent is not None and parent not in chain and len(chain) < 50:
            chain.append(parent)
            parent = by_id[parent].parent_id if parent in by_id else None
        rows.append(ModelRow(model, chain))
    production = next((m for m in versions if m.status is ModelStatus.PRODUCTION), None)
    rollouts = coordinator.rollouts.recent(10)
    current = coordinator.rollouts.detail(rollouts[0].id) if rollouts else None
    return ModelsView(rows, production, rollouts, current)


# --- runs --------------------------------------------------------------------------------


@dataclass
class RunRow:
    run: Run
    rounds: list[Round]

    @property
    def completed_rounds(self) -> int:
        return sum(r.status.value == "completed" for r in self.rounds)

    @property
    def bytes_up(self) -> int:
        return sum(r.bytes_up for r in self.rounds)

    @property
    def bytes_down(self) -> int:
        return sum(r.bytes_down for r in self.rounds)

    @property
    def last_loss(self) -> str:
        for r in reversed(self.rounds):
            losses = {k: v for k, v in r.metrics.items() if "loss" in k or "rmse" in k}
            if losses:
                return ", ".join(f"{k} {v:.4g}" for k, v in sorted(losses.items()))
        return ""


@dataclass
class RunsView:
    live: list[RunRow]
    history: list[RunRow]
    superlink: str | None


def runs(coordinator: Coordinator, limit: int = 50) -> RunsView:
    rows = [
        RunRow(run, list(coordinator.rounds(run.id, 10_000)))
        for run in coordinator.federation.runs(limit)
    ]
    live = [r for r in rows if r.run.status.live]
    history = [r for r in rows if not r.run.status.live]
    return RunsView(live, history, coordinator.settings.superlink)


# --- one site ----------------------------------------------------------------------------


@dataclass
class Chart:
    """Forecasts against actuals of one cell and target, as SVG coordinates."""

    cell: str
    target: int
    steps: list[int]
    forecast: list[tuple[float, float]]  # (x, y) in the SVG's box
    actual: list[tuple[float, float]]
    low: float
    high: float
    width: int = 640
    height: int = 200
    table: list[tuple[int, float | None, float | None]] = field(default_factory=list)

    @staticmethod
    def points(line: list[tuple[float, float]]) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in line)


def _actuals(coordinator: Coordinator, site_hex: str, limit: int) -> Sequence[Actual]:
    """The site's newest actuals (the coordinator scores forecasts on them)."""
    with Session(coordinator.reader) as session:
        query = (
            select(Actual)
            .where(Actual.site_id == site_hex)
            .order_by(col(Actual.received_at).desc(), col(Actual.id).desc())
            .limit(limit)
        )
        return session.exec(query).all()


def chart(
    forecasts: Sequence[Forecast], actuals: Sequence[Actual], cell: str | None, target: int
) -> Chart | None:
    """Per step the forecast made closest to it (the shortest lead) and the actual."""
    cells = sorted({f.cell for f in forecasts} | {a.cell for a in actuals})
    if not cells:
        return None
    cell = cell if cell in cells else cells[0]
    best: dict[int, Forecast] = {}
    for f in forecasts:
        if f.cell == cell and target < len(f.values):
            held = best.get(f.step)
            if held is None or f.step - f.made_step < held.step - held.made_step:
                best[f.step] = f
    seen = {a.step: a.values[target] for a in actuals if a.cell == cell and target < len(a.values)}
    steps = sorted(set(best) | set(seen))[-CHART_STEPS:]
    if not steps:
        return None
    predicted = {s: best[s].values[target] for s in steps if s in best}
    observed = {s: seen[s] for s in steps if s in seen}
    values = [*predicted.values(), *observed.values()]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    result = Chart(cell, target, steps, [], [], low, high)
    first, last = steps[0], steps[-1]
    width = max(1, last - first)

    def xy(step: int, value: float) -> tuple[float, float]:
        x = 40 + (step - first) / width * (result.width - 50)
        y = 10 + (1 - (value - low) / span) * (result.height - 30)
        return x, y

    result.forecast = [xy(s, v) for s, v in sorted(predicted.items())]
    result.actual = [xy(s, v) for s, v in sorted(observed.items())]
    result.table = [(s, predicted.get(s), observed.get(s)) for s in steps]
    return result


@dataclass
class SiteHistoryRow:
    rollout: RolloutPublic
    role: str
    delivered_at: float | None
    verdict: str | None
    reason: str | None


@dataclass
class SiteView:
    detail: SiteDetail
    health: SiteHealthPublic | None
    state: Liveness
    chart: Chart | None
    cells: list[str]
    targets: int
    forecasts: int
    actions: list[ActionPublic]
    history: list[SiteHistoryRow]


def site(coordinator: Coordinator, site_hex: str, cell: str | None, target: int) -> SiteView:
    detail = site_detail(coordinator.reader, site_hex)  # 404 for an unknown site
    try:
        health: SiteHealthPublic | None = latest_health(coordinator.reader, site_hex)
    except NotFoundError:
        health = None
    forecasts = coordinator.forecasts(site_hex, 2000)
    actuals = _actuals(coordinator, site_hex, 500)
    cells = sorted({f.cell for f in forecasts} | {a.cell for a in actuals})
    targets = max((len(f.values) for f in forecasts), default=0)
    history = []
    for rollout in coordinator.rollouts.recent(20):
        for row in coordinator.rollouts.detail(rollout.id).sites:
            if row.site_id == site_hex:
                history.append(
                    SiteHistoryRow(
                        rollout,
                        row.role.value,
                        row.delivered_at,
                        None if row.verdict is None else row.verdict.value,
                        row.reason,
                    )
                )
    record = coordinator.site(site_hex)
    return SiteView(
        detail,
        health,
        liveness(record, health, time.time(), *_limits(coordinator)),
        chart(forecasts, actuals, cell, target),
        cells,
        targets,
        len(forecasts),
        [ActionPublic.of(a) for a in coordinator.actions(site_hex, 20)],
        history,
    )


# --- decisions ---------------------------------------------------------------------------

DECISION_WINDOW: Final = 5000


@dataclass
class DecisionsView:
    """The mix of the fleet's newest actions: one strategic and one tactical per site."""

    read: int  # actions read (the newest ``DECISION_WINDOW``)
    sites: int
    modes: dict[str, int]  # the newest strategic action's mode, per site
    sources: dict[str, dict[str, int]]  # kind -> source -> sites
    acks: dict[str, dict[str, int]]  # kind -> applied / rejected / not acknowledged -> sites
    shares: dict[str, float]  # the mean of the newest tactical shares, per slice
    policies: list[str]
    newest: float | None


def decision_mix(actions: Sequence[ActionPublic]) -> DecisionsView:
    """``actions`` newest first (as the API lists them)."""
    newest: dict[tuple[str, str], ActionPublic] = {}
    for action in actions:
        newest.setdefault((action.site_id, action.kind), action)
    modes: dict[str, int] = {}
    sources: dict[str, dict[str, int]] = {}
    acks: dict[str, dict[str, int]] = {}
    totals: dict[str, float] = {}
    tactical = 0
    for (_, kind), action in sorted(newest.items()):
        if kind == "strategic" and action.mode:
            modes[action.mode] = modes.get(action.mode, 0) + 1
        if kind == "tactical" and action.shares:
            tactical += 1
            for slice_name, share in action.shares.items():
                totals[slice_name] = totals.get(slice_name, 0.0) + share
        by_source = sources.setdefault(kind, {})
        by_source[action.source] = by_source.get(action.source, 0) + 1
        by_ack = acks.setdefault(kind, {})
        ack = action.ack_status or "not acknowledged"
        by_ack[ack] = by_ack.get(ack, 0) + 1
    return DecisionsView(
        read=len(actions),
        sites=len({site for site, _ in newest}),
        modes=dict(sorted(modes.items())),
        sources=sources,
        acks=acks,
        shares={k: v / tactical for k, v in totals.items()} if tactical else {},
        policies=sorted({a.policy_version for a in newest.values()}),
        newest=max((a.decided_at for a in actions), default=None),
    )


def decisions(coordinator: Coordinator) -> DecisionsView:
    rows = coordinator.actions(None, DECISION_WINDOW)
    return decision_mix([ActionPublic.of(r) for r in rows])


# --- audit -------------------------------------------------------------------------------


def _newest_audit_id(coordinator: Coordinator) -> int:
    """The newest entry's id, found with ``audit_log``'s paging alone (a few one-row reads)."""
    low, high = 0, 1
    while coordinator.audit_log(1, high):  # an entry above ``high``: look further
        low, high = high, high * 2
    while high - low > 1:  # entries above ``low``, none above ``high``
        middle = (low + high) // 2
        if coordinator.audit_log(1, middle):
            low = middle
        else:
            high = middle
    return high if coordinator.audit_log(1, low) else low


def audit(
    coordinator: Coordinator, text: str = "", outcome: str = ""
) -> tuple[list[AuditEntry], int]:
    """The newest ``AUDIT_SHOWN`` entries among the last ``AUDIT_WINDOW`` that match,
    newest first, and how many entries were searched."""
    newest = _newest_audit_id(coordinator)
    entries = list(coordinator.audit_log(AUDIT_WINDOW, max(0, newest - AUDIT_WINDOW)))
    text = text.strip().lower()

    def matches(e: AuditEntry) -> bool:
        if outcome and e.outcome != outcome:
            return False
        return not text or any(text in f.lower() for f in (e.actor, e.action, e.target, e.detail))

    found = [e for e in reversed(entries) if matches(e)]
    return found[:AUDIT_SHOWN], len(entries)


__all__ = [
    "Chart",
    "DecisionsView",
    "FleetView",
    "Liveness",
    "ModelsView",
    "RunsView",
    "SiteView",
    "audit",
    "chart",
    "decision_mix",
    "decisions",
    "describe_action",
    "fleet",
    "liveness",
    "models",
    "runs",
    "site",
]
