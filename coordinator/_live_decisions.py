"""Live decisions: every site's observation from what it reported, the policies' answer,
and one signed action per site and decision.

The policies were trained on ``fedge.decisions.DecisionData`` filled from a simulated
fleet; here the same arrays are filled from the ingested forecasts and actuals of one
cluster's sites over the last few steps, and the same builders (``energy_obs``,
``slice_obs``) turn them into observations, so a policy is served the inputs it learned
on. Per site:

- ``load``: downlink PRB utilisation (``dl_prb_util``, the training's demand) / 100,
  averaged over the site's cells, for the three completed steps before the decision
  (a step a site did not report is held from the nearest one it did);
- ``ues``: active UEs averaged over cells, over the largest such value of the last day
  (the training divides by the site's training maximum);
- ``fc_load``, ``fc_ues``: the site's newest forecast (every cell's rows of its newest
  ``made_step``, averaged over cells), for the twelve steps from the decision on. The
  federated model forecasts fewer horizons than twelve: its longest horizon's value is
  held for the rest.

A site's inputs are fresh when both its newest forecast's and its newest actual's step
ended at most ``max_forecast_age_seconds`` ago. A site without fresh inputs gets the safe
default (``source="safe_default"``): ``active`` (always on), and the static split the
training's baseline ships with, a third of the PRBs for each slice. A cluster is decided
over its fresh sites only: a site on the safe default is active and offers the others no
spare capacity the policy could count on. A site asleep (any sleep depth in force) gets
no tactical action: it has no PRBs to split.

The tactical observation needs each slice's demand, which no site reports: the live mix
is the median site of the training's traffic model (URLLC ``LIVE_URLLC_SHARE`` of the
load, mMTC ``LIVE_MMTC_PER_UE`` per unit of UEs, eMBB the rest), with the measured load
as what the site carried and no absorbed offload.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fedge.coordinator._actions import (
    ActionKind,
    ActionNotifier,
    ActionRecord,
    ActionSource,
    DecisionTick,
    action_body,
    sign_action,
)
from fedge.coordinator._loop import Loop
from fedge.coordinator._schema import Actual, Decision, Forecast, Site, SiteState
from fedge.coordinator._settings import CoordinatorSettings
from fedge.coordinator._telemetry import Telemetry
from fedge.coordinator._topology import TopologyStore, clusters_of
from fedge.core import TARGET_KPIS, step_minute_of_week
from fedge.decisions import (
    ACTIVE,
    ASLEEP,
    DECISION_STEPS,
    DEFAULT_HEADROOM,
    HOUR_STEPS,
    MODES,
    SHARE_NAMES,
    DecisionData,
    DecisionError,
    DecisionService,
    SliceContext,
    energy_obs,
    slice_obs,
)
from fedge.security import SiteIdentity

__all__ = [
    "LIVE_MMTC_PER_UE",
    "LIVE_URLLC_SHARE",
    "NOW",
    "SAFE_SHARES",
    "LiveDecisions",
    "SiteInputs",
    "cluster_data",
    "site_inputs",
    "slice_context",
]

_log = logging.getLogger(__name__)

#: Index of the decision step in a cluster's window: three completed steps, then it.
NOW = DECISION_STEPS
_WINDOW = NOW + 1
_PRB = TARGET_KPIS.index("dl_prb_util")
_UES = TARGET_KPIS.index("active_ues")
# The median site of the training's slice traffic (simulation._slice_env: URLLC share
# 0.08..0.15, mMTC 0.04..0.08 per training-maximum UE count; bursts average 1).
LIVE_URLLC_SHARE = 0.115
LIVE_MMTC_PER_UE = 0.06
#: The safe default's slice shares: the training's static baseline, a third each.
SAFE_SHARES: dict[str, float] = {"embb": 1 / 3, "urllc": 1 / 3, "mmtc": 1 / 3, "unreserved": 0.0}
_CLOCK_SLACK_SECONDS = 3600.0  # how far a site's clock may run ahead of the coordinator's
_MICRO = 1_000_000  # shares are sent in millionths, rounded down: they never sum above 1


@dataclass(frozen=True)
class SiteInputs:
    """One site's decision inputs, in the training's units."""

    load: NDArray[np.float64]  # (3,): the completed steps before the decision
    ues: NDArray[np.float64]  # (3,)
    fc_load: NDArray[np.float64]  # (12,): the decision step and the 11 after it
    fc_ues: NDArray[np.float64]  # (12,)
    made_step: int
    actual_step: int


ForecastRows = Sequence[tuple[str, int, int, Sequence[float]]]  # cell, step, made_step, values
ActualRows = Sequence[tuple[str, int, Sequence[float]]]  # cell, step, values


def _by_step(rows: Sequence[tuple[int, Sequence[float]]]) -> dict[int, NDArray[np.float64]]:
    """Target values per step, averaged over the cells that reported the step."""
    acc: dict[int, list[Sequence[float]]] = {}
    for step, values in rows:
        if len(values) >= len(TARGET_KPIS):
            acc.setdefault(step, []).append(values[: len(TARGET_KPIS)])
    return {s: np.asarray(v, dtype=np.float64).mean(axis=0) for s, v in acc.items()}


def site_inputs(
    forecasts: ForecastRows,
    actuals: ActualRows,
    t: int,
    now: float,
    step_seconds: int,
    max_age: float,
) -> SiteInputs | str:
    """The inputs of a decision at step ``t`` (made at ``now``), or why there are none.

    ``forecasts``: the rows of the site's newest ``made_step``; ``actuals``: the site's
    actuals of the last day before ``t``."""
    newest = max((m for _, _, m, _ in forecasts), default=None)
    if newest is None:
        return "no forecast"
    if now - (newest + 1) * step_seconds > max_age:
        return f"newest forecast made at step {newest}, older than {max_age:g} s"
    horizons = _by_step([(s - m, v) for _, s, m, v in forecasts if m == newest and s > m])
    if not horizons:
        return "no forecast"
    have = np.array(sorted(horizons))
    # the forecast for step t + j is horizon t + j - newest; past the longest one, hold it
    wanted = t + np.arange(HOUR_STEPS) - newest
    pick = have[np.clip(np.searchsorted(have, wanted, side="right") - 1, 0, len(have) - 1)]
    fc = np.stack([horizons[int(h)] for h in pick])  # (12, targets)
    seen = _by_step([(s, v) for _, s, v in actuals if s < t])
    if not seen:
        return "no actuals"
    steps = np.array(sorted(seen))
    last = int(steps[-1])
    if now - (last + 1) * step_seconds > max_age:
        return f"newest actual is of step {last}, older than {max_age:g} s"
    window = np.arange(t - DECISION_STEPS, t)
    held = steps[np.clip(np.searchsorted(steps, window, side="right") - 1, 0, len(steps) - 1)]
    recent = np.stack([seen[int(s)] for s in held])  # (3, targets)
    ue_max = max(1.0, float(max(v[_UES] for v in seen.values())))
    return SiteInputs(
        load=np.clip(recent[:, _PRB] / 100.0, 0.0, None),
        ues=np.clip(recent[:, _UES] / ue_max, 0.0, None),
        fc_load=np.clip(fc[:, _PRB] / 100.0, 0.0, None),
        fc_ues=np.clip(fc[:, _UES] / ue_max, 0.0, None),
        made_step=newest,
        actual_step=last,
    )


def cluster_data(
    site_ids: Sequence[str],
    archetypes: Sequence[str],
    inputs: Sequence[SiteInputs],
    t: int,
    step_seconds: int,
    headroom: float = DEFAULT_HEADROOM,
) -> DecisionData:
    """One cluster's ``DecisionData`` over steps t-3 .. t (index ``NOW`` is step t): the
    loads of the completed steps, the forecast made at the end of step t-1."""
    k = len(inputs)
    load = np.full((k, _WINDOW), np.nan)
    ues = np.full((k, _WINDOW), np.nan)
    fc_load = np.full((k, _WINDOW, HOUR_STEPS), np.nan)
    fc_ues = np.full((k, _WINDOW, HOUR_STEPS), np.nan)
    for i, s in enumerate(inputs):
        load[i, :NOW], ues[i, :NOW] = s.load, s.ues
        fc_load[i, NOW - 1], fc_ues[i, NOW - 1] = s.fc_load, s.fc_ues
    return DecisionData(
        site_ids=tuple(site_ids),
        archetypes=tuple(archetypes),
        load=load,
        ues=ues,
        fc_load=fc_load,
        fc_ues=fc_ues,
        minute_of_week=step_minute_of_week(np.arange(t - NOW, t + 1), step_seconds),
        steps_per_day=max(1, 86_400 // step_seconds),
        val_start=0,
        test_start=0,
        clusters=np.arange(k, dtype=np.int64).reshape(1, k),
        headroom=headroom,
    )


def slice_context(data: DecisionData, mode: NDArray[np.int64]) -> SliceContext:
    """The tactical inputs of a cluster under the modes in force (one per site)."""
    u, m = LIVE_URLLC_SHARE, LIVE_MMTC_PER_UE
    urllc = u * data.load
    mmtc = np.minimum(m * data.ues, data.load)
    embb = np.clip(data.load - urllc - mmtc, 0.0, None)
    k = data.num_sites
    return SliceContext(
        data=data,
        own=np.stack([embb, urllc, mmtc], axis=-1),
        mode=np.repeat(np.asarray(mode, dtype=np.int64)[:, None], _WINDOW, axis=1),
        host=data.load.copy(),
        absorbed=np.zeros_like(data.load),
        urllc_share=np.full(k, u),
        mmtc_per_ue=np.full(k, m),
    )


def _shares(row: NDArray[Any]) -> dict[str, float]:
    """Policy shares as millionths rounded down, so they never sum above 1."""
    x = np.clip(np.nan_to_num(np.asarray(row, dtype=np.float64)), 0.0, None)
    micro = np.floor(x / max(1.0, float(x.sum())) * _MICRO).astype(np.int64)
    return {n: int(v) / _MICRO for n, v in zip(SHARE_NAMES, micro.tolist(), strict=True)}


@dataclass(frozen=True)
class _Choice:
    site_id: str
    mode: str | None
    shares: dict[str, float] | None
    source: ActionSource
    reason: str = ""


@dataclass(frozen=True)
class _InForce:
    mode: int  # the latest strategic action's mode (ACTIVE before any)
    valid: bool  # whether that action is still valid


class LiveDecisions:
    """The decision loop: strategic and tactical ticks on wall-clock slots, in a thread."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        engine: Engine,
        reader: Engine,
        service: DecisionService,
        identity: SiteIdentity,
        topology: TopologyStore,
        notifier: ActionNotifier,
        sync_sites: Callable[[], None],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.engine, self.reader = engine, reader
        self.service, self.identity = service, identity
        self.topology, self.notifier = topology, notifier
        self._sync_sites = sync_sites
        self.intervals: dict[ActionKind, float] = {
            "strategic": settings.strategic_interval_seconds,
            "tactical": settings.tactical_interval_seconds,
        }
        self._loop = Loop("live-decisions", self._run)
        self._stop = self._loop.stopping

    # --- the loop --------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    #: How many slots a newly elected leader decides late: those since the last one
    #: recorded, when it is this recent (the previous leader died or stepped down).
    CATCH_UP_SLOTS = 12

    def first_slots(self, start: float) -> dict[ActionKind, int]:
        """The slot each kind decides first. After a failover: the one after the newest
        recorded, so no slot is skipped (a tick already taken is never repeated: its key
        is in ``decision_ticks``). Otherwise at least one interval after ``start``: a
        restarted coordinator lets the sites report before it decides on what they sent."""
        with Session(self.reader) as session:
            newest = dict(
                session.exec(
                    select(DecisionTick.kind, func.max(DecisionTick.slot)).group_by(
                        col(DecisionTick.kind)
                    )
                ).all()
            )
        due: dict[ActionKind, int] = {}
        for kind, iv in self.intervals.items():
            last = newest.get(kind)
            if last is not None and last >= int(start // iv) - self.CATCH_UP_SLOTS:
                due[kind] = last + 1
            else:
                due[kind] = int((start + iv) // iv) + 1
        return due

    def _run(self) -> None:
        try:
            due = self.first_slots(time.time())
        except Exception:  # the database is down: decide as after a restart
            _log.exception("reading the newest decision slots failed")
            start = time.time()
            due = {k: (int((start + iv) // iv) + 1) for k, iv in self.intervals.items()}
        while True:
            kind = min(due, key=lambda k: (due[k] * self.intervals[k], k))  # strategic first
            if self._stop.wait(max(0.0, due[kind] * self.intervals[kind] - time.time())):
                return
            try:
                self.tick(kind, time.time(), slot=due[kind])
            except Exception:  # a database outage: the next slot tries again
                _log.exception(
                    "%s decision tick failed", kind,
                    extra={"event": "decision.tick_failed", "kind": kind},
                )  # fmt: skip
            # the next slot; after a long outage, no further back than the catch-up allows
            oldest = int(time.time() // self.intervals[kind]) - self.CATCH_UP_SLOTS
            due[kind] = max(due[kind] + 1, oldest)

    # --- one tick --------------------------------------------------------------------

    def tick(self, kind: ActionKind, now: float, slot: int | None = None) -> list[int]:
        """Decide ``kind`` for every active site and store one signed action each; the
        ids of the actions stored (none when another worker took the slot). Timed and
        logged, failed or not."""
        slot = int(now // self.intervals[kind]) if slot is None else slot
        started = time.perf_counter()
        ids: list[int] | None = None
        try:
            ids = self._tick(kind, now, slot)
            return ids
        finally:
            seconds = time.perf_counter() - started
            if self.telemetry is not None:
                self.telemetry.ticked(kind, seconds, failed=ids is None)
            if ids is not None:
                _log.info(
                    "%s decision tick: %d action(s)", kind, len(ids),
                    extra={"event": "decision.tick", "kind": kind, "slot": slot,
                           "actions": len(ids), "seconds": round(seconds, 6)},
                )  # fmt: skip

    def _tick(self, kind: ActionKind, now: float, slot: int) -> list[int]:
        with Session(self.reader) as session:
            if session.get(DecisionTick, (kind, slot)) is not None:
                return []
        self._sync_sites()
        t = int(now // self.settings.decision_step_seconds)
        sites, inputs, in_force = self.read(t, now)
        clusters = clusters_of(self.topology.topology(), list(sites))
        choices: list[_Choice] = []
        for cluster in clusters:
            choices.extend(self._decide(kind, cluster, sites, inputs, in_force, t))
        ids = self._store(kind, slot, now, choices)
        if ids:
            self.notifier.notify()
        return ids

    def read(
        self, t: int, now: float
    ) -> tuple[dict[str, str], dict[str, SiteInputs | str], dict[str, _InForce]]:
        """Active sites (id -> archetype), their inputs and their modes in force."""
        step_s = self.settings.decision_step_seconds
        day = max(1, 86_400 // step_s)
        age = self.settings.forecast_age_limit
        with Session(self.reader) as session:
            active = session.exec(
                select(Site.id, Site.archetype)
                .where(Site.status == SiteState.ACTIVE)
                .order_by(col(Site.enrolled_at))
            ).all()
            sites = {s: a or "" for s, a in active}
            inputs: dict[str, SiteInputs | str] = {}
            for site in sites:
                newest = session.exec(
                    select(func.max(Forecast.made_step)).where(Forecast.site_id == site)
                ).one()
                forecasts: list[tuple[str, int, int, Sequence[float]]] = []
                if newest is not None:
                    forecasts = [
                        (c, s, m, v)
                        for c, s, m, v in session.exec(
                            select(
                                Forecast.cell, Forecast.step, Forecast.made_step, Forecast.values
                            ).where(Forecast.site_id == site, Forecast.made_step == newest)
                        ).all()
                    ]
                actuals = session.exec(
                    select(Actual.cell, Actual.step, Actual.values).where(
                        Actual.site_id == site,
                        # a step is reported after it ended: bounds the (site, received) index
                        Actual.received_at >= (t - day) * step_s - _CLOCK_SLACK_SECONDS,
                        Actual.step >= t - day,
                        Actual.step < t,
                    )
                ).all()
                inputs[site] = site_inputs(forecasts, list(actuals), t, now, step_s, age)
            latest = (
                select(func.max(ActionRecord.id))
                .where(ActionRecord.kind == "strategic")
                .group_by(col(ActionRecord.site_id))
            )
            in_force: dict[str, _InForce] = {}
            for site, body, valid_until in session.exec(
                select(ActionRecord.site_id, ActionRecord.body, ActionRecord.valid_until).where(
                    col(ActionRecord.id).in_(latest)
                )
            ).all():
                mode = json.loads(body).get("mode")
                in_force[site] = _InForce(
                    MODES.index(mode) if mode in MODES else ACTIVE, valid_until > now
                )
        return sites, inputs, in_force

    def _decide(
        self,
        kind: ActionKind,
        cluster: list[str],
        sites: dict[str, str],
        inputs: dict[str, SiteInputs | str],
        in_force: dict[str, _InForce],
        t: int,
    ) -> list[_Choice]:
        fresh = [s for s in cluster if isinstance(inputs[s], SiteInputs)]
        valid = {s: f.mode for s, f in in_force.items() if f.valid}
        mode = {s: valid.get(s, ACTIVE) for s in cluster}
        if kind == "tactical":  # an asleep site has no PRBs to split
            fresh = [s for s in fresh if not ASLEEP[mode[s]]]
            cluster = [s for s in cluster if not ASLEEP[mode[s]]]
        out = {s: self._default(kind, s, str(inputs[s])) for s in cluster if s not in fresh}
        if fresh:
            try:
                out.update(self._policy(kind, fresh, sites, inputs, in_force, mode, t))
            except DecisionError as exc:  # the policy refused its inputs: stay safe
                _log.warning("%s decision for %s failed: %s", kind, fresh, exc)
                out.update({s: self._default(kind, s, f"policy: {exc}") for s in fresh})
        return [out[s] for s in cluster]

    @staticmethod
    def _default(kind: ActionKind, site: str, reason: str) -> _Choice:
        if kind == "strategic":
            return _Choice(site, MODES[ACTIVE], None, "safe_default", reason)
        return _Choice(site, None, dict(SAFE_SHARES), "safe_default", reason)

    def _policy(
        self,
        kind: ActionKind,
        fresh: list[str],
        sites: dict[str, str],
        inputs: dict[str, SiteInputs | str],
        in_force: dict[str, _InForce],
        mode: dict[str, int],
        t: int,
    ) -> dict[str, _Choice]:
        rows = [inputs[s] for s in fresh]
        assert all(isinstance(r, SiteInputs) for r in rows)
        data = cluster_data(
            fresh,
            [sites[s] for s in fresh],
            [r for r in rows if isinstance(r, SiteInputs)],
            t,
            self.settings.decision_step_seconds,
        )
        k = len(fresh)
        if kind == "strategic":
            prev = np.array(
                [[in_force[s].mode if s in in_force else ACTIVE for s in fresh]], dtype=np.int64
            )
            modes = np.full((1, k), ACTIVE, dtype=np.int64)
            names = self.service.mode_names
            for pos in range(k):  # sequential inside the cluster, as in training
                obs = energy_obs(data, data.clusters, NOW, pos, modes, prev)
                modes[0, pos] = int(self.service.strategic([fresh[pos]], obs).modes[0])
            chosen = [names[int(m)] for m in modes[0]]
            if any(c not in MODES for c in chosen):
                raise DecisionError(f"the energy policy's modes {names} are not {MODES}")
            return {
                s: _Choice(s, c, None, "federated_forecast")
                for s, c in zip(fresh, chosen, strict=True)
            }
        ctx = slice_context(data, np.array([mode[s] for s in fresh], dtype=np.int64))
        obs = slice_obs(ctx, np.arange(k, dtype=np.int64), np.full(k, NOW, dtype=np.int64))
        shares = self.service.tactical(fresh, obs).shares
        if not np.isfinite(shares).all():
            raise DecisionError("the slice policy produced non-finite shares")
        return {
            s: _Choice(s, None, _shares(row), "federated_forecast")
            for s, row in zip(fresh, shares, strict=True)
        }

    def _store(self, kind: ActionKind, slot: int, now: float, choices: list[_Choice]) -> list[int]:
        """The slot's claim, its decisions and their signed actions, in one transaction.

        Rows go in batches (one insert for the decisions, one for the actions: their ids
        are in the signed bodies), not a round trip per site: every site's action waits
        for this commit."""
        version = self.service.version
        valid_until = now + 2 * self.intervals[kind]
        with Session(self.engine) as session:
            session.add(DecisionTick(kind=kind, slot=slot, claimed_at=now))
            try:
                session.flush()
            except IntegrityError:  # another worker decided this slot
                session.rollback()
                return []
            decisions = [
                Decision(
                    site_id=c.site_id,
                    at=now,
                    policy_version=version,
                    kind=kind,
                    action=self._logged(kind, c),
                )
                for c in choices
            ]
            session.add_all(decisions)
            session.flush()
            rows = [
                ActionRecord(
                    site_id=c.site_id,
                    kind=kind,
                    body=b"",
                    signature=b"",
                    decided_at=now,
                    valid_until=valid_until,
                    policy_version=version,
                    source=c.source,
                    decision_id=d.id,
                )
                for c, d in zip(choices, decisions, strict=True)
            ]
            session.add_all(rows)
            session.flush()
            for c, d, row in zip(choices, decisions, rows, strict=True):
                assert d.id is not None and row.id is not None
                row.body = action_body(
                    row.id,
                    c.site_id,
                    kind,
                    mode=c.mode,
                    shares=c.shares,
                    decided_at=now,
                    valid_until=valid_until,
                    policy_version=version,
                    source=c.source,
                    decision_id=d.id,
                )
                row.signature = sign_action(self.identity, row.body)
            ids = [row.id for row in rows if row.id is not None]
            session.commit()
        return ids

    @staticmethod
    def _logged(kind: ActionKind, c: _Choice) -> dict[str, Any]:
        """What the decision log keeps of a choice."""
        logged: dict[str, Any] = {"mode": c.mode} if kind == "strategic" else {"shares": c.shares}
        logged["source"] = c.source
        if c.reason:
            logged["reason"] = c.reason[:200]
        return logged
