"""Staged model rollout: canaries first, then the rest, rolled back when canaries reject.

A promotion starts a rollout. A deterministic share of the active sites (the canaries)
is assigned the new version; the rest keep the version the fleet runs, until every
canary gave its verdict (the agent's shadow gate) or the canary timeout passed. Then
the rollout either stops, and the previous version is production again for every site,
or goes to the whole fleet, and completes once every active site accepted it or the
fleet timeout passed. A new promotion supersedes a running rollout; an operator's
rollback ends it.

Sites pull: the assignment is computed from the newest rollout when a site asks, so a
site that was offline gets the current one. The state machine advances on each verdict
and on a background check, so timeouts fire even when no site calls. Every state change
is one transaction with its audit entry; the newest rollout's row is locked first by
every writer, so workers and the check thread never interleave their changes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select

from fedge.coordinator._audit import audit_entry
from fedge.coordinator._errors import ConflictError, CoordinatorError, NotFoundError
from fedge.coordinator._health import site_errors
from fedge.coordinator._loop import Loop
from fedge.coordinator._schema import (
    ModelStatus,
    ModelVersion,
    Site,
    SiteDetail,
    SiteHealth,
    SiteState,
)
from fedge.coordinator._settings import CoordinatorSettings

_log = logging.getLogger(__name__)

#: The actor of the changes the coordinator makes by itself (timeouts, verdict outcomes).
ACTOR: Final = "coordinator:rollout"
VERSION_PATTERN: Final = r"^v[1-9][0-9]{0,9}$"


class RolloutState(StrEnum):
    CANARY = "canary"  # the canaries run the new version, the rest the previous one
    FLEET = "fleet"  # every site is assigned the new version
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"  # the previous version is production again, everywhere
    SUPERSEDED = "superseded"  # a newer promotion took over

    @property
    def running(self) -> bool:
        return self in (RolloutState.CANARY, RolloutState.FLEET)


class RolloutRole(StrEnum):
    CANARY = "canary"
    REST = "rest"


class RolloutVerdict(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


def version_name(model_id: int) -> str:
    return f"v{model_id}"


# --- records -----------------------------------------------------------------------------


class Rollout(SQLModel, table=True):
    """One per promotion."""

    __tablename__ = "rollouts"

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model_versions.id")
    #: The version the fleet ran before; None for the first promotion (no canary phase).
    previous_model_id: int | None = Field(default=None, foreign_key="model_versions.id")
    state: RolloutState = Field(max_length=16)
    canary_share: float
    started_at: float
    updated_at: float  # the last state change: the phase timeouts count from it
    reason: str = Field(default="", max_length=500)


class RolloutSite(SQLModel, table=True):
    """One per site the rollout reaches: its role, delivery and verdict."""

    __tablename__ = "rollout_sites"

    rollout_id: int = Field(foreign_key="rollouts.id", primary_key=True)
    site_id: str = Field(foreign_key="sites.id", primary_key=True, max_length=32)
    role: RolloutRole = Field(max_length=16)
    assigned_at: float | None = None  # when the new version was assigned to the site
    delivered_at: float | None = None  # when the site first downloaded it
    verdict: RolloutVerdict | None = Field(default=None, max_length=16)
    verdict_at: float | None = None
    reason: str | None = Field(default=None, max_length=500)
    candidate_score: float | None = None
    serving_score: float | None = None
    windows: int | None = None
    #: The site's reported mean forecast error when the version was delivered, and after.
    error_before: float | None = None
    error_after: float | None = None


# --- bodies ------------------------------------------------------------------------------


class VerdictReport(BaseModel):
    """``POST /site/model/verdict``: the agent's shadow gate on the version it was given."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    version: str = PydanticField(max_length=11, pattern=VERSION_PATTERN)
    accepted: bool
    reason: str | None = PydanticField(default=None, max_length=500)
    candidate_score: float | None = PydanticField(default=None, ge=0, le=1e12)
    serving_score: float | None = PydanticField(default=None, ge=0, le=1e12)
    windows: int = PydanticField(default=0, ge=0, le=100_000_000)


class RolloutSitePublic(BaseModel):
    site_id: str
    role: RolloutRole
    assigned_at: float | None
    delivered_at: float | None
    verdict: RolloutVerdict | None
    verdict_at: float | None
    reason: str | None
    candidate_score: float | None
    serving_score: float | None
    windows: int | None
    error_before: float | None
    error_after: float | None


class RolloutPublic(BaseModel):
    id: int
    model_id: int
    version: str
    previous_model_id: int | None
    state: RolloutState
    canary_share: float
    started_at: float
    updated_at: float
    reason: str
    canaries: int
    delivered: int
    accepted: int
    rejected: int


class RolloutDetail(RolloutPublic):
    sites: list[RolloutSitePublic]


def _public(rollout: Rollout, rows: Sequence[RolloutSite]) -> RolloutPublic:
    assert rollout.id is not None
    return RolloutPublic(
        id=rollout.id,
        model_id=rollout.model_id,
        version=version_name(rollout.model_id),
        previous_model_id=rollout.previous_model_id,
        state=rollout.state,
        canary_share=rollout.canary_share,
        started_at=rollout.started_at,
        updated_at=rollout.updated_at,
        reason=rollout.reason,
        canaries=sum(r.role is RolloutRole.CANARY for r in rows),
        delivered=sum(r.delivered_at is not None for r in rows),
        accepted=sum(r.verdict is RolloutVerdict.ACCEPTED for r in rows),
        rejected=sum(r.verdict is RolloutVerdict.REJECTED for r in rows),
    )


# --- the state machine -------------------------------------------------------------------


def canary_count(share: float, sites: int) -> int:
    """``ceil(share * sites)``, at least one (rounded first: 0.7 * 10 is 7, not 8)."""
    if sites == 0:
        return 0
    return max(1, min(sites, math.ceil(round(share * sites, 9))))


def pick_canaries(rollout_id: int, site_ids: Sequence[str], count: int) -> set[str]:
    """The same sites for the same rollout on every worker, other ones for the next."""

    def rank(site_id: str) -> bytes:
        return hashlib.sha256(f"{rollout_id}:{site_id}".encode()).digest()

    return set(sorted(site_ids, key=rank)[:count])


def _latest(session: Session, *, lock: bool) -> Rollout | None:
    """The newest rollout; ``lock``: row-locked, and still the newest once the lock is
    held (on PostgreSQL a promotion that held it meanwhile may have added a newer one)."""
    query = select(Rollout).order_by(col(Rollout.id).desc()).limit(1)
    if not lock:
        return session.exec(query).first()
    while True:
        locked = session.exec(
            query.with_for_update().execution_options(populate_existing=True)
        ).first()
        newest = session.exec(select(Rollout.id).order_by(col(Rollout.id).desc()).limit(1))
        if (None if locked is None else locked.id) == newest.first():
            return locked


def _active_sites(session: Session) -> list[str]:
    return list(session.exec(select(Site.id).where(Site.status == SiteState.ACTIVE)).all())


def _rows(session: Session, rollout_id: int) -> list[RolloutSite]:
    query = (
        select(RolloutSite)
        .where(RolloutSite.rollout_id == rollout_id)
        .order_by(col(RolloutSite.site_id))
    )
    return list(session.exec(query).all())


def _production_id(session: Session) -> int | None:
    query = select(ModelVersion.id).where(ModelVersion.status == ModelStatus.PRODUCTION)
    return session.exec(query).first()


def assigned_model_id(session: Session, site_hex: str) -> int | None:
    """The version a site is to run: during a canary phase the new one for canaries and
    the previous one for the rest; otherwise the production version (None: nothing)."""
    latest = _latest(session, lock=False)
    if latest is not None and latest.state is RolloutState.CANARY:
        assert latest.id is not None
        row = session.get(RolloutSite, (latest.id, site_hex))
        if row is not None and row.role is RolloutRole.CANARY:
            return latest.model_id
        return latest.previous_model_id
    return _production_id(session)


def site_detail(engine: Engine, site_hex: str) -> SiteDetail:
    """The site's registry record with the version assigned to it and the one it last
    reported serving (404 when it is not enrolled)."""
    with Session(engine) as session:
        site = session.get(Site, site_hex)
        if site is None:
            raise NotFoundError(f"no site {site_hex}")
        model_id = assigned_model_id(session, site_hex)
        health = session.get(SiteHealth, site_hex)
        detail = SiteDetail.model_validate(site, from_attributes=True)
    detail.assigned_version = None if model_id is None else version_name(model_id)
    if health is not None:
        detail.served_version = health.model_version
        detail.health_received_at = health.received_at
    return detail


class Rollouts:
    """The rollout records of one coordinator, and the thread that checks their timeouts."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        engine: Engine,
        reader: Engine,
    ) -> None:
        self.settings, self.engine, self.reader = settings, engine, reader
        self._loop = Loop("rollout-check", self._run)
        self._stop = self._loop.stopping

    # --- background check ------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.rollout_check_seconds):
            try:
                self.check()
            except (SQLAlchemyError, CoordinatorError) as exc:  # the next interval retries
                _log.warning("rollout check failed: %s", exc)

    def check(self, now: float | None = None) -> RolloutState | None:
        """Advance the running rollout if its phase is decided; its state, None if none."""
        with Session(self.reader) as session:  # no write lock while nothing runs
            latest = _latest(session, lock=False)
            if latest is None or not latest.state.running:
                return None if latest is None else latest.state
        with Session(self.engine) as session:
            state = self.advance(session, time.time() if now is None else now)
            session.commit()
            return state

    # --- the changes, each inside the caller's transaction ---------------------------

    def begin(
        self, session: Session, actor: str, model_id: int, serving_id: int | None, now: float
    ) -> int:
        """Start the rollout of a just-promoted version (the caller locked the newest
        rollout first, via :meth:`supersede`); ``serving_id`` is the fleet's version.
        Without one there is nothing to compare with or go back to: no canary phase."""
        sites = _active_sites(session)
        count = canary_count(self.settings.rollout_canary_share, len(sites))
        staged = serving_id is not None and count > 0
        rollout = Rollout(
            model_id=model_id,
            previous_model_id=serving_id,
            state=RolloutState.CANARY if staged else RolloutState.FLEET,
            canary_share=self.settings.rollout_canary_share,
            started_at=now,
            updated_at=now,
            reason="" if staged else "no previous version: straight to the fleet",
        )
        session.add(rollout)
        session.flush()
        assert rollout.id is not None
        canaries = pick_canaries(rollout.id, sites, count) if staged else set()
        for site_id in sites:
            canary = site_id in canaries
            session.add(
                RolloutSite(
                    rollout_id=rollout.id,
                    site_id=site_id,
                    role=RolloutRole.CANARY if canary else RolloutRole.REST,
                    assigned_at=now if canary or not staged else None,
                )
            )
        detail = (
            f"{version_name(model_id)}: {len(canaries)} canaries of {len(sites)} active sites"
            if staged
            else f"{version_name(model_id)} to all {len(sites)} active sites ({rollout.reason})"
        )
        session.add(audit_entry(actor, "rollout.start", f"rollout:{rollout.id}", "ok", detail))
        return rollout.id

    def supersede(self, session: Session, actor: str, model_id: int, now: float) -> int | None:
        """Lock the newest rollout and end it if it runs; the version the fleet runs when
        it was in its canary phase (the version to compare with and go back to), else None
        (the production version is then the one)."""
        latest = _latest(session, lock=True)
        if latest is None or not latest.state.running:
            return None
        serving = latest.previous_model_id if latest.state is RolloutState.CANARY else None
        self._set(
            session, latest, RolloutState.SUPERSEDED, actor, f"by {version_name(model_id)}", now
        )
        return serving

    def end_by_rollback(self, session: Session, actor: str, model_id: int, now: float) -> None:
        """An operator rolled ``model_id`` back: its running rollout ends with it."""
        latest = _latest(session, lock=True)
        if latest is not None and latest.state.running and latest.model_id == model_id:
            self._set(session, latest, RolloutState.ROLLED_BACK, actor, "operator rollback", now)

    def lock(self, session: Session) -> None:
        """Take the newest rollout's lock before any model row (one order: no deadlock)."""
        _latest(session, lock=True)

    def _set(
        self,
        session: Session,
        rollout: Rollout,
        state: RolloutState,
        actor: str,
        reason: str,
        now: float,
    ) -> None:
        before = rollout.state
        rollout.state, rollout.updated_at, rollout.reason = state, now, reason[:500]
        session.add(rollout)
        detail = f"{before.value} -> {state.value}: {reason}"
        session.add(
            audit_entry(actor, f"rollout.{state.value}", f"rollout:{rollout.id}", "ok", detail)
        )

    def advance(self, session: Session, now: float) -> RolloutState | None:
        """Decide the newest rollout's phase if it can be decided now."""
        rollout = _latest(session, lock=True)
        if rollout is None:
            return None
        if rollout.state is RolloutState.CANARY:
            self._judge_canaries(session, rollout, now)
        elif rollout.state is RolloutState.FLEET:
            self._judge_fleet(session, rollout, now)
        return rollout.state

    def _judge_canaries(self, session: Session, rollout: Rollout, now: float) -> None:
        assert rollout.id is not None
        canaries = [r for r in _rows(session, rollout.id) if r.role is RolloutRole.CANARY]
        total = len(canaries)
        rejected = sum(r.verdict is RolloutVerdict.REJECTED for r in canaries)
        reported = sum(r.verdict is not None for r in canaries)
        name = version_name(rollout.model_id)
        if total and rejected / total > self.settings.rollout_max_reject_share:
            reason = f"{rejected} of {total} canaries rejected {name}"
            self._roll_back(session, rollout, reason, now)
            return
        timed_out = now >= rollout.updated_at + self.settings.rollout_canary_timeout_seconds
        if reported < total and not timed_out:
            return
        increase = self._error_increase(session, canaries)
        if increase is not None and increase > self.settings.rollout_max_error_increase:
            reason = f"the canaries' forecast error grew by {increase:.1%} with {name}"
            self._roll_back(session, rollout, reason, now)
            return
        why = "every canary reported" if reported == total else "canary timeout"
        reason = f"{why}: {reported - rejected} of {total} accepted, {rejected} rejected"
        self._set(session, rollout, RolloutState.FLEET, ACTOR, reason, now)
        self._assign_all(session, rollout, now)

    def _error_increase(self, session: Session, canaries: Sequence[RolloutSite]) -> float | None:
        """The canaries' relative change of mean reported error since delivery; None when
        no canary reported its error both before and after."""
        before = after = 0.0
        for row in canaries:
            if row.delivered_at is None or row.error_before is None:
                continue
            latest = site_errors(session, [row.site_id], row.delivered_at).get(row.site_id)
            if latest is None or not math.isfinite(latest):
                continue
            row.error_after = latest
            session.add(row)
            before, after = before + row.error_before, after + latest
        if before <= 0:
            return None
        return (after - before) / before

    def _judge_fleet(self, session: Session, rollout: Rollout, now: float) -> None:
        assert rollout.id is not None
        active = set(_active_sites(session))
        rows = [r for r in _rows(session, rollout.id) if r.site_id in active]
        rejected = sum(r.verdict is RolloutVerdict.REJECTED for r in rows)
        accepted = sum(r.verdict is RolloutVerdict.ACCEPTED for r in rows)
        name = version_name(rollout.model_id)
        if active and rejected / len(active) > self.settings.rollout_max_reject_share:
            reason = f"{rejected} of {len(active)} sites rejected {name}"
            self._roll_back(session, rollout, reason, now)
        elif accepted == len(active):
            reason = f"every active site ({accepted}) accepted {name}"
            self._set(session, rollout, RolloutState.COMPLETED, ACTOR, reason, now)
        elif now >= rollout.updated_at + self.settings.rollout_fleet_timeout_seconds:
            reason = f"fleet timeout: {accepted} of {len(active)} sites accepted {name}"
            self._set(session, rollout, RolloutState.COMPLETED, ACTOR, reason, now)

    def _assign_all(self, session: Session, rollout: Rollout, now: float) -> None:
        assert rollout.id is not None
        rows = {r.site_id: r for r in _rows(session, rollout.id)}
        for site_id in _active_sites(session):
            row = rows.get(site_id) or RolloutSite(
                rollout_id=rollout.id, site_id=site_id, role=RolloutRole.REST
            )
            if row.assigned_at is None:
                row.assigned_at = now
                session.add(row)

    def _roll_back(self, session: Session, rollout: Rollout, reason: str, now: float) -> None:
        """The previous version is production again, hence every site's assignment."""
        candidate = session.get(ModelVersion, rollout.model_id, with_for_update=True)
        assert candidate is not None  # model versions are never deleted
        if candidate.status is ModelStatus.PRODUCTION:
            candidate.status = ModelStatus.RETIRED
            session.add(candidate)
            session.flush()
            if rollout.previous_model_id is not None:
                previous = session.get(
                    ModelVersion, rollout.previous_model_id, with_for_update=True
                )
                assert previous is not None
                previous.status, previous.promoted_by, previous.promoted_at = (
                    ModelStatus.PRODUCTION,
                    ACTOR,
                    now,
                )
                session.add(previous)
            detail = f"retired model:{candidate.id}: {reason}"
            target = f"model:{rollout.previous_model_id}"
            session.add(audit_entry(ACTOR, "model.rollback", target, "ok", detail))
        self._set(session, rollout, RolloutState.ROLLED_BACK, ACTOR, reason, now)

    # --- sites -----------------------------------------------------------------------

    def delivered(self, site_hex: str, model_id: int, now: float) -> None:
        """Record a site's first download of the running rollout's version, with its
        reported forecast error then (the canary check's baseline). Under the rollout's
        lock, as verdicts: a row added for a site enrolled later is added once."""
        with Session(self.reader) as session:  # the common case: recorded already
            latest = _latest(session, lock=False)
            if latest is None or latest.model_id != model_id or latest.id is None:
                return
            row = session.get(RolloutSite, (latest.id, site_hex))
            if row is not None and row.delivered_at is not None:
                return
        with Session(self.engine) as session:
            latest = _latest(session, lock=True)
            if latest is None or latest.model_id != model_id or latest.id is None:
                return
            row = session.get(RolloutSite, (latest.id, site_hex))
            if row is None:  # enrolled after the rollout started
                row = RolloutSite(
                    rollout_id=latest.id, site_id=site_hex, role=RolloutRole.REST, assigned_at=now
                )
            if row.delivered_at is not None:
                return
            row.delivered_at = now
            row.error_before = site_errors(session, [site_hex], 0.0).get(site_hex)
            session.add(row)
            session.commit()

    def verdict(self, site_hex: str, report: VerdictReport, now: float) -> None:
        """Record a site's verdict on the version assigned to it and advance the rollout.
        A repeated identical verdict changes nothing; a different one is a conflict."""
        with Session(self.engine) as session:
            latest = _latest(session, lock=True)
            assigned = assigned_model_id(session, site_hex)
            if assigned is None or report.version != version_name(assigned):
                have = "none" if assigned is None else version_name(assigned)
                raise ConflictError(
                    f"{report.version} is not the version assigned to this site ({have})"
                )
            if latest is None or latest.model_id != assigned or latest.id is None:
                raise ConflictError(f"{report.version} is not under rollout")
            row = session.get(RolloutSite, (latest.id, site_hex)) or RolloutSite(
                rollout_id=latest.id, site_id=site_hex, role=RolloutRole.REST, assigned_at=now
            )
            verdict = RolloutVerdict.ACCEPTED if report.accepted else RolloutVerdict.REJECTED
            if row.verdict is not None:
                if row.verdict is verdict:
                    return
                raise ConflictError(
                    f"this site's verdict on {report.version} is already recorded "
                    f"({row.verdict.value})"
                )
            row.verdict, row.verdict_at, row.reason = verdict, now, report.reason
            row.candidate_score, row.serving_score = report.candidate_score, report.serving_score
            row.windows = report.windows
            session.add(row)
            detail = f"{verdict.value} {report.version}" + (
                f": {report.reason}" if report.reason else ""
            )
            session.add(
                audit_entry(
                    f"site:{site_hex}", "rollout.verdict", f"rollout:{latest.id}", "ok", detail
                )
            )
            session.flush()
            self.advance(session, now)
            session.commit()

    # --- reading ---------------------------------------------------------------------

    def recent(self, limit: int) -> list[RolloutPublic]:
        with Session(self.reader) as session:
            query = select(Rollout).order_by(col(Rollout.id).desc()).limit(limit)
            found = []
            for rollout in session.exec(query).all():
                assert rollout.id is not None
                found.append(_public(rollout, _rows(session, rollout.id)))
            return found

    def detail(self, rollout_id: int) -> RolloutDetail:
        with Session(self.reader) as session:
            rollout = session.get(Rollout, rollout_id)
            if rollout is None:
                raise NotFoundError(f"no rollout {rollout_id}")
            rows = _rows(session, rollout_id)
            sites = [RolloutSitePublic.model_validate(r, from_attributes=True) for r in rows]
            return RolloutDetail(**_public(rollout, rows).model_dump(), sites=sites)


__all__ = [
    "ACTOR",
    "Rollout",
    "RolloutDetail",
    "RolloutPublic",
    "RolloutRole",
    "RolloutSite",
    "RolloutSitePublic",
    "RolloutState",
    "Rollouts",
    "RolloutVerdict",
    "VerdictReport",
    "assigned_model_id",
    "canary_count",
    "pick_canaries",
    "version_name",
]
