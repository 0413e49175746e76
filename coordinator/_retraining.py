"""The retraining policy: scheduled and drift-triggered runs, automatic promotion.

Every run start is recorded in ``run_starts`` with what triggered it (``schedule``,
``drift`` or ``operator``), the statistic that did, and the version in production at the
start, which becomes the parent of the run's model (lineage).

The drift statistic, checked every ``drift_check_seconds``: for each active site, the
ratio of its latest reported mean forecast RMSE (``_health.site_errors`` since the
serving version was promoted) to its baseline, the first such RMSE the policy read for
that site under the serving version (kept in ``drift_baselines``); the statistic is the
median of these ratios over the sites that have both. A run starts when it exceeds
``1 + drift_threshold`` from at least ``drift_min_sites`` sites, no run is live, and the
last run started ``retrain_min_interval_seconds`` ago or earlier.

With several worker processes each has a policy thread; a lease row in
``retraining_state`` lets one of them act at a time, and holds the last check's outcome.

Automatic promotion (``auto_promote``): the run's reported ``promote_metric`` (by default
``eval_rmse``, the sites' held-out RMSE from federated evaluation; lower is better) is
compared with the serving version's; the comparison is audited, and a better model is
promoted through ``Coordinator.promote``.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import statistics
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, or_, update
from sqlmodel import Field, Session, SQLModel, col, select

from fedge.coordinator._access import Operator
from fedge.coordinator._audit import audit_entry
from fedge.coordinator._errors import CoordinatorError, InvalidInputError, SettingsError
from fedge.coordinator._health import site_errors
from fedge.coordinator._schema import (
    ModelStatus,
    ModelVersion,
    Role,
    Run,
    RunCreate,
    RunStatus,
    Site,
    SiteState,
)

if TYPE_CHECKING:
    from fedge.coordinator._runs import Federation
    from fedge.coordinator._settings import CoordinatorSettings

__all__ = [
    "POLICY_ACTOR",
    "Drift",
    "DriftBaseline",
    "RetrainingPolicy",
    "RetrainingState",
    "RetrainingStatePublic",
    "RunStart",
    "RunStartPublic",
    "Trigger",
    "parse_run_request",
    "production_id",
    "retrain_run_request",
]

log = logging.getLogger(__name__)

#: The name the policy acts under in runs and the audit log.
POLICY_ACTOR: Final = "retraining"
_STATE_ID: Final = 1
#: The longest the thread sleeps between looks at the schedule and the drift check.
_MAX_TICK_SECONDS: Final = 60.0


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    DRIFT = "drift"
    OPERATOR = "operator"


class RunStart(SQLModel, table=True):
    """One run start: why, with which statistic, and what served at the time."""

    __tablename__ = "run_starts"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=32, foreign_key="runs.id", unique=True)
    trigger: str = Field(max_length=16)
    statistic: float | None = None
    sites: int | None = None
    baseline_model_id: int | None = None  # the production version at the start
    at: float = Field(index=True)
    actor: str = Field(max_length=64)
    detail: str = Field(default="", max_length=500)


class RunStartPublic(SQLModel):
    run_id: str
    trigger: str
    statistic: float | None
    sites: int | None
    baseline_model_id: int | None
    at: float
    actor: str
    detail: str


class DriftBaseline(SQLModel, table=True):
    """A site's first RMSE read under a production version: what drift is measured from."""

    __tablename__ = "drift_baselines"

    model_id: int = Field(primary_key=True, foreign_key="model_versions.id")
    site_id: str = Field(primary_key=True, max_length=32)
    rmse: float
    at: float


class RetrainingState(SQLModel, table=True):
    """One row: which worker's policy acts (a lease), and the last drift check."""

    __tablename__ = "retraining_state"

    id: int = Field(primary_key=True)
    holder: str = Field(default="", max_length=64)
    lease_until: float = 0.0
    checked_at: float | None = None
    statistic: float | None = None
    sites: int | None = None
    detail: str = Field(default="", max_length=500)


class RetrainingStatePublic(BaseModel):
    """``GET /api/v1/retraining``: the policy's settings, its last check, recent starts."""

    enabled: bool
    acting: bool  # this worker's thread runs
    retrain_interval_seconds: float
    drift_check_seconds: float
    drift_threshold: float
    drift_min_sites: int
    retrain_min_interval_seconds: float
    auto_promote: bool
    promote_metric: str
    checked_at: float | None
    statistic: float | None
    sites: int | None
    detail: str
    starts: list[RunStartPublic]


def parse_run_request(text: str) -> RunCreate:
    """``retrain_run_config``: a run request as JSON (``{...}``) or TOML; ValueError if not."""
    try:
        data: Any = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"not JSON or TOML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("a run request is an object (num_rounds, strategy, codec, config)")
    try:
        return RunCreate.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"not a run request: {problems}") from None


@dataclass(frozen=True)
class Drift:
    """One drift check: the median ratio (None: no site to compute it from) and its base."""

    statistic: float | None
    sites: int
    detail: str


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def measure_drift(session: Session, now: float) -> Drift:
    """The drift statistic (see the module's docstring); stores new sites' baselines in
    ``session`` (the caller commits)."""
    production = session.exec(
        select(ModelVersion).where(ModelVersion.status == ModelStatus.PRODUCTION)
    ).first()
    if production is None or production.id is None:
        return Drift(None, 0, "no version in production")
    sites = list(session.exec(select(Site.id).where(Site.status == SiteState.ACTIVE)).all())
    since = production.promoted_at or production.created_at
    latest = site_errors(session, sites, since)
    stored = session.exec(
        select(DriftBaseline).where(DriftBaseline.model_id == production.id)
    ).all()
    baselines = {b.site_id: b.rmse for b in stored}
    ratios = []
    for site, rmse in latest.items():
        if not _finite_positive(rmse):
            continue
        if site not in baselines:
            session.add(DriftBaseline(model_id=production.id, site_id=site, rmse=rmse, at=now))
            baselines[site] = rmse
        ratios.append(rmse / baselines[site])
    if not ratios:
        return Drift(None, 0, f"no site reported errors under model:{production.id}")
    median = statistics.median(ratios)
    return Drift(median, len(ratios), f"median RMSE ratio under model:{production.id}")


def retrain_run_request(settings: CoordinatorSettings) -> RunCreate:
    """The policy's run, checked against the app now: a bad one is a settings error at
    start, not a failed run hours later."""
    from fedge.coordinator._runs import run_config

    text = settings.retrain_run_config
    try:
        spec = RunCreate() if text is None else parse_run_request(text)
        run_config(settings.flwr_app, spec)
    except (ValueError, InvalidInputError) as exc:
        raise SettingsError(f"retrain_run_config: {exc}") from exc
    return spec


def production_id(session: Session) -> int | None:
    row = session.exec(
        select(ModelVersion.id).where(ModelVersion.status == ModelStatus.PRODUCTION)
    ).first()
    return row


class RetrainingPolicy:
    """Starts runs on schedule or on drift (one thread), and promotes better models."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        engine: Engine,
        federation: Federation,
        promote: Callable[[Operator, int], ModelVersion],
        spec: RunCreate | None = None,
    ) -> None:
        """``spec``: the policy's run, from :func:`retrain_run_request` (else read here)."""
        self.settings, self.engine, self.federation = settings, engine, federation
        self._promote = promote
        self.spec = spec if spec is not None else retrain_run_request(settings)
        self._holder = secrets.token_hex(8)
        self._started_at = time.time()
        self._last_check = -math.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.retrain_enabled and self.federation.enabled

    @property
    def period(self) -> float:
        """How often the thread looks: the shortest configured interval, at most a minute."""
        nonzero = [
            s for s in (self.settings.retrain_interval_seconds, self.settings.drift_check_seconds)
            if s > 0
        ]  # fmt: skip
        return min([*nonzero, _MAX_TICK_SECONDS])

    # --- the thread --------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()  # again after a stop: a replica elected once more
        self._thread = threading.Thread(target=self._loop, name="retraining", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.tick()
            except Exception:  # a database outage must not end the policy
                log.exception("retraining check failed")

    # --- one look ----------------------------------------------------------------------

    def _lease(self, now: float) -> bool:
        """Hold the lease (or take an expired one) for this worker's policy."""
        table = RetrainingState.__table__  # type: ignore[attr-defined]
        until = now + 3 * self.period + 30.0
        with self.engine.begin() as connection:
            claimed = connection.execute(
                update(table)
                .where(
                    table.c.id == _STATE_ID,
                    or_(table.c.holder == self._holder, table.c.lease_until < now),
                )
                .values(holder=self._holder, lease_until=until)
                .returning(table.c.id)
            ).first()
        return claimed is not None

    def tick(self, now: float | None = None) -> RunStart | None:
        """One look at the schedule and the drift; the start it made, if any."""
        now = time.time() if now is None else now
        if not self._lease(now):
            return None
        drift = None
        if self.settings.drift_check_seconds > 0 and (
            now - self._last_check >= self.settings.drift_check_seconds
        ):
            self._last_check = now
            drift = self.check_drift(now)
        with Session(self.engine) as session:
            live = session.exec(
                select(Run.id).where(col(Run.status).in_([RunStatus.STARTING, RunStatus.RUNNING]))
            ).first()
            last = session.exec(select(Run.created_at).order_by(col(Run.created_at).desc())).first()
        if live is not None:
            return None
        since_last = now - (last if last is not None else self._started_at)
        interval = self.settings.retrain_interval_seconds
        if interval > 0 and since_last >= interval:
            return self._begin(Trigger.SCHEDULE, None, None, f"every {interval:g} s")
        if (
            drift is not None
            and drift.statistic is not None
            and drift.statistic > 1 + self.settings.drift_threshold
            and drift.sites >= self.settings.drift_min_sites
            and since_last >= self.settings.retrain_min_interval_seconds
        ):
            detail = (
                f"{drift.detail}: {drift.statistic:.4g} > 1 + {self.settings.drift_threshold:g} "
                f"over {drift.sites} sites"
            )
            return self._begin(Trigger.DRIFT, drift.statistic, drift.sites, detail)
        return None

    def check_drift(self, now: float) -> Drift:
        """Measure the drift and record it as the last check."""
        with Session(self.engine) as session:
            drift = measure_drift(session, now)
            state = session.get(RetrainingState, _STATE_ID)
            if state is not None:
                state.checked_at, state.statistic, state.sites = now, drift.statistic, drift.sites
                state.detail = drift.detail[:500]
                session.add(state)
            session.commit()
        return drift

    def _begin(
        self, trigger: Trigger, statistic: float | None, sites: int | None, detail: str
    ) -> RunStart | None:
        try:
            run = self.federation.start(
                POLICY_ACTOR, self.spec, trigger=trigger, statistic=statistic, sites=sites,
                detail=detail,
            )  # fmt: skip
        except CoordinatorError as exc:  # the SuperLink is down, ...: try again next look
            with Session(self.engine) as session:
                session.add(audit_entry(POLICY_ACTOR, "retraining.failed", "", "failed",
                                        f"{trigger.value}: {exc}"))  # fmt: skip
                session.commit()
            return None
        with Session(self.engine) as session:
            return session.exec(select(RunStart).where(RunStart.run_id == run.id)).first()

    # --- automatic promotion -----------------------------------------------------------

    def consider(self, model_id: int) -> bool:
        """After a run's model was stored: promote it if ``auto_promote`` is on and it
        beats the serving version on ``promote_metric``; the comparison is audited."""
        if not self.settings.auto_promote:
            return False
        metric = self.settings.promote_metric
        with Session(self.engine) as session:
            model = session.get(ModelVersion, model_id)
            serving = session.exec(
                select(ModelVersion).where(ModelVersion.status == ModelStatus.PRODUCTION)
            ).first()
        if model is None:
            return False
        candidate = model.metrics.get(metric)
        current = None if serving is None else serving.metrics.get(metric)
        promote = False
        if candidate is None or not math.isfinite(candidate):
            why = f"kept: the run reported no {metric}"
        elif serving is None:
            promote, why = True, f"{metric} {candidate:.6g}; no version serves"
        elif current is None or not math.isfinite(current):
            why = f"kept: the serving model:{serving.id} has no {metric}"
        elif candidate < current:
            promote, why = True, f"{metric} {candidate:.6g} < {current:.6g} of model:{serving.id}"
        else:
            why = f"kept: {metric} {candidate:.6g} >= {current:.6g} of model:{serving.id}"
        with Session(self.engine) as session:
            session.add(audit_entry(POLICY_ACTOR, "model.compare", f"model:{model_id}", "ok", why))
            session.commit()
        if not promote:
            return False
        try:
            self._promote(Operator(POLICY_ACTOR, Role.ADMIN), model_id)
        except CoordinatorError as exc:
            with Session(self.engine) as session:
                session.add(audit_entry(POLICY_ACTOR, "model.auto_promote", f"model:{model_id}",
                                        "failed", str(exc)))  # fmt: skip
                session.commit()
            return False
        return True

    # --- the operator's view -----------------------------------------------------------

    def state(self, limit: int = 20) -> RetrainingStatePublic:
        with Session(self.engine) as session:
            row = session.get(RetrainingState, _STATE_ID)
            starts: Sequence[RunStart] = session.exec(
                select(RunStart).order_by(col(RunStart.at).desc()).limit(limit)
            ).all()
        s = self.settings
        return RetrainingStatePublic(
            enabled=self.enabled,
            acting=self._thread is not None and self._thread.is_alive(),
            retrain_interval_seconds=s.retrain_interval_seconds,
            drift_check_seconds=s.drift_check_seconds,
            drift_threshold=s.drift_threshold,
            drift_min_sites=s.drift_min_sites,
            retrain_min_interval_seconds=s.retrain_min_interval_seconds,
            auto_promote=s.auto_promote,
            promote_metric=s.promote_metric,
            checked_at=None if row is None else row.checked_at,
            statistic=None if row is None else row.statistic,
            sites=None if row is None else row.sites,
            detail="" if row is None else row.detail,
            starts=[RunStartPublic.model_validate(r, from_attributes=True) for r in starts],
        )
