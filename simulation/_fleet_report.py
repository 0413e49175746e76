"""``fedge fleet run``: drive the live loop for a while, then report what the system did.

The loop: a federated run (the retraining policy's, or one started over the API when
the policy has not), its model promoted (automatic promotion, or the operator's call
when it did not) and rolled out until every site serves it, decisions flowing to every
site's agent. Every figure of ``report.json`` / ``report.html`` is read from the
running system: the coordinator's API (runs, rounds, models, rollouts, actions, health)
and the agents' own stores and endpoints, plus the replayer's log of what it published.
Energy is the power model (``fedge.decisions.PowerModel``, EARTH macro) over the
replayed demand under the strategic actions the agents acknowledged as applied, against
the same demand always on; the SLA outcome is the demand a mode could not carry, and
for slice actions whether each slice's share met its requirement under the live
traffic mix.
"""

from __future__ import annotations

import html
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, TARGET_KPIS, ApiError, CoordinatorClient, CoordinatorUnreachable
from fedge.simulation._fleet import (
    STEP_SECONDS,
    FleetError,
    FleetState,
    SiteRecord,
    agent_health,
    agent_metrics,
    check_running,
    load_state,
    run_request,
)

__all__ = ["FleetOutcome", "build_report", "run_fleet", "write_fleet_report"]

POLL_S = 3.0
ACTIVE_RUN = ("starting", "running")


@dataclass
class FleetOutcome:
    json_path: Path
    html_path: Path
    report: dict[str, Any]
    missing: list[str] = field(default_factory=list)


class Api:
    """The coordinator's API with the fleet's admin key; errors become FleetError."""

    def __init__(self, state: FleetState) -> None:
        self.client = CoordinatorClient(state.coordinator_url, api_key=state.admin_key(),
                                        timeout=30.0, ca_file=state.ca_file)  # fmt: skip

    def get(self, path: str) -> Any:
        try:
            return self.client.get_json(path)
        except (ApiError, CoordinatorUnreachable) as exc:
            raise FleetError(f"coordinator: GET {path}: {exc}") from exc

    def optional(self, path: str) -> Any:
        try:
            return self.client.get_json(path)
        except (ApiError, CoordinatorUnreachable):
            return None

    def post(self, path: str, body: object) -> Any:
        try:
            return self.client.post_json(path, body)
        except (ApiError, CoordinatorUnreachable) as exc:
            raise FleetError(f"coordinator: POST {path}: {exc}") from exc


def run_fleet(
    directory: Path,
    seconds: float,
    *,
    rounds: int = 1,
    until_closed: bool = False,
    echo: Callable[[str], None] = lambda _: None,
) -> FleetOutcome:
    """Drive the loop for ``seconds`` of wall time (with ``until_closed``, less once the
    loop has closed at every site), then write the report."""
    state = load_state(directory)
    check_running(state)
    api = Api(state)
    t0 = time.time()
    deadline = t0 + seconds
    started: list[str] = []
    attempts = 0
    promoted: dict[int, float] = {}
    timeline: list[dict[str, Any]] = []
    served_at: dict[int, float] = {}
    while True:
        now = time.time()
        every = api.get("/api/v1/runs?limit=50")
        runs = [r for r in every if r["created_at"] >= t0 - 1]
        live = [r for r in every if r["status"] in ACTIVE_RUN]  # the policy's count too
        done = [r for r in runs if r["status"] == "completed" and r.get("model_version_id")]
        if not live and not done and attempts < 3 and deadline - now > 60:
            attempts += 1
            try:
                run = api.post("/api/v1/runs", run_request(len(state.sites), rounds))
            except FleetError as exc:  # e.g. the policy started one in between: next poll
                echo(f"could not start a run: {exc}")
            else:
                started.append(run["id"])
                echo(f"started run {run['id']} ({rounds} round(s))")
        for r in done:
            model_id = int(r["model_version_id"])
            if model_id in promoted:
                continue
            model = api.get(f"/api/v1/models/{model_id}")
            if model["status"] == "candidate":
                try:
                    api.post(f"/api/v1/models/{model_id}/promote", {})
                    echo(f"promoted v{model_id} (run {r['id']})")
                except FleetError as exc:
                    if "production" not in str(exc):
                        raise
            promoted[model_id] = float(model.get("promoted_at") or time.time())
        serving = _serving(state)
        timeline.append({"t": round(now - t0, 2), "serving": serving})
        for model_id in promoted:
            if model_id not in served_at and all(v == f"v{model_id}" for v in serving):
                served_at[model_id] = now
                echo(f"every site serves v{model_id}")
        check_running(state)
        if now >= deadline or (until_closed and served_at and _closed(state, api, t0)):
            break
        time.sleep(min(POLL_S, max(0.0, deadline - now)))
    report = build_report(state, api, t0, time.time(), timeline=timeline, started=started,
                          served_at=served_at)  # fmt: skip
    json_path, html_path = write_fleet_report(report, state.root)
    return FleetOutcome(json_path, html_path, report, _missing(report))


def _closed(state: FleetState, api: Api, t0: float) -> bool:
    """Every site had a forecast ingested and an action applied since ``t0``."""
    for site in state.sites:
        fc = api.get(f"/api/v1/forecasts?site_id={site.site_id}&limit=1")
        if not fc or float(fc[0]["received_at"]) < t0:
            return False
        acts = api.optional(f"/api/v1/actions?site_id={site.site_id}&limit=20") or []
        if not any(a.get("ack_status") == "applied" and float(a["decided_at"]) >= t0
                   for a in acts):  # fmt: skip
            return False
    return True


def _serving(state: FleetState) -> list[str | None]:
    out: list[str | None] = []
    for site in state.sites:
        try:
            out.append(agent_health(site).get("model_version"))
        except FleetError:
            out.append(None)
    return out


def _missing(report: dict[str, Any]) -> list[str]:
    """What of the loop did not happen during the run (the report says the rest)."""
    out = []
    loop = report["loop"]
    if not loop["rounds_completed"]:
        out.append("no federated round completed")
    if not loop["model_served_by_every_site"]:
        out.append("no promoted model was served by every site")
    if not loop["forecasts_ingested"]:
        out.append("no forecast reached the coordinator")
    if loop["sites_with_applied_action"] < len(report["sites"]):
        out.append(
            f"an action was applied at {loop['sites_with_applied_action']} of "
            f"{len(report['sites'])} sites"
        )
    return out


# --- reading the system -------------------------------------------------------------------


def _store(site: SiteRecord) -> sqlite3.Connection:
    path = Path(site.dir) / "agent.db"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _position(state: FleetState) -> dict[str, Any]:
    path = state.root / "replayer" / "position.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FleetError(f"replayer: cannot read {path}: {exc}") from exc
    return loaded


def wall_to_step(position: dict[str, Any], wall: float) -> float:
    """The replayed step index the fleet was at at wall time ``wall``."""
    from fedge.simulation._replayer import wall_to_index

    return wall_to_index(position, wall)


def _published(state: FleetState) -> dict[tuple[int, int], float]:
    """(site index, replay index) → wall time the replayer published it."""
    out: dict[tuple[int, int], float] = {}
    path = state.root / "replayer" / "published.csv"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) == 3:
            out[(int(parts[0]), int(parts[1]))] = float(parts[2])
    return out


def _site_store_view(
    site: SiteRecord, first_step: int, last_step: int
) -> tuple[dict[str, Any], NDArray[np.float64], NDArray[np.float64]]:
    """The site's own record over the replayed steps [first, last]: models received,
    sample and forecast counts, forecast error at one step ahead by replayed hour;
    and its demand (dl_prb_util / 100) and active UEs per step (NaN where not stored)."""
    conn = _store(site)
    try:
        models = [
            dict(zip(("version", "state", "received", "decided", "serving_since",
                      "serving_score", "candidate_score", "reason"), row, strict=True))
            for row in conn.execute(
                "SELECT version, state, received, decided, serving_since, serving_score, "
                "candidate_score, reason FROM models ORDER BY received"
            )
        ]  # fmt: skip
        samples = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        forecasts = conn.execute("SELECT count(*) FROM forecasts").fetchone()[0]
        n = last_step - first_step + 1
        load = np.full(n, np.nan)
        ues = np.full(n, np.nan)
        i_load, i_ues = KPI_NAMES.index("dl_prb_util"), KPI_NAMES.index("active_ues")
        for step, *vals in conn.execute(
            f"SELECT step, {', '.join(KPI_NAMES)} FROM samples WHERE step BETWEEN ? AND ?",
            (first_step, last_step),
        ):
            if vals[i_load] is not None:
                load[step - first_step] = vals[i_load] / 100.0
            if vals[i_ues] is not None:
                ues[step - first_step] = vals[i_ues]
        rows = conn.execute(
            "SELECT f.step, f.values_json, "
            + ", ".join(f"s.{k}" for k in TARGET_KPIS)
            + " FROM forecasts f JOIN samples s ON s.cell = f.cell AND s.step = f.step "
            "WHERE f.step = f.made_step + 1 AND f.step BETWEEN ? AND ? ORDER BY f.step",
            (first_step, last_step),
        ).fetchall()
    finally:
        conn.close()
    hours: dict[int, list[list[float]]] = {}
    for step, values_json, *actual in rows:
        predicted = json.loads(values_json)
        errs = [
            abs(float(p) - float(a)) if a is not None else float("nan")
            for p, a in zip(predicted, actual, strict=False)
        ]
        hours.setdefault(step // 12, []).append(errs)
    error = [
        {
            "hour_step": hour * 12,
            "n": len(errs),
            "mae": {
                k: _round(float(np.nanmean([e[i] for e in errs])))
                for i, k in enumerate(TARGET_KPIS)
            },
        }
        for hour, errs in sorted(hours.items())
    ]
    view = {
        "models": models,
        "samples_stored": int(samples),
        "forecasts_stored": int(forecasts),
        "forecast_error_h1": error,
    }
    return view, load, ues


def _round(value: float, digits: int = 4) -> float | None:
    return None if not np.isfinite(value) else round(value, digits)


def _in_force(
    actions: list[dict[str, Any]], kind: str, position: dict[str, Any], first: int, n: int
) -> list[dict[str, Any] | None]:
    """Per replayed step, the applied action of ``kind`` in force at the site: the newest
    one the agent acknowledged as applied by the time the step was published."""
    applied = sorted(
        (a for a in actions if a["kind"] == kind and a.get("ack_status") == "applied"
         and a.get("acked_at")),
        key=lambda a: float(a["acked_at"]),
    )  # fmt: skip
    out: list[dict[str, Any] | None] = [None] * n
    for a in applied:
        start = int(np.ceil(wall_to_step(position, float(a["acked_at"])))) - first
        end = int(np.floor(wall_to_step(position, float(a["valid_until"])))) - first
        for i in range(max(0, start), min(n, end + 1)):
            out[i] = a
    return out


def _energy(
    state: FleetState,
    loads: list[NDArray[np.float64]],
    ues: list[NDArray[np.float64]],
    actions: dict[str, list[dict[str, Any]]],
    position: dict[str, Any],
    first: int,
) -> dict[str, Any]:
    """Energy under the applied strategic actions against always-on, over the replayed
    demand, per cluster (offload between a cluster's sites as in training), and the
    slices' SLA under the applied tactical shares."""
    from fedge.coordinator._live_decisions import LIVE_MMTC_PER_UE, LIVE_URLLC_SHARE
    from fedge.decisions import CAPACITY, MODES, URLLC, URLLC_HEADROOM
    from fedge.simulation._energy_env import resolve
    from fedge.simulation._slice_env import outcome

    n = len(loads[0]) if loads else 0
    ids = [s.site_id or "" for s in state.sites]
    modes = np.zeros((len(ids), n), dtype=np.int64)
    steered = np.zeros((len(ids), n), dtype=bool)
    shares: list[list[dict[str, Any] | None]] = []
    for i, sid in enumerate(ids):
        for j, a in enumerate(_in_force(actions.get(sid, []), "strategic", position, first, n)):
            if a is not None and a.get("mode") in MODES:
                modes[i, j] = MODES.index(a["mode"])
                steered[i, j] = True
        shares.append(_in_force(actions.get(sid, []), "tactical", position, first, n))
    demand = np.nan_to_num(np.stack(loads), nan=0.0) if loads else np.zeros((0, 0))
    clusters = [list(range(k, min(k + 3, len(ids)))) for k in range(0, len(ids), 3)]
    used_wh = np.zeros(len(ids))
    base_wh = np.zeros(len(ids))
    unserved = np.zeros(len(ids))
    violations = np.zeros(len(ids), dtype=np.int64)
    hours = STEP_SECONDS / 3600.0
    for members in clusters:
        idx = np.array(members)
        prev = np.zeros((1, len(members)), dtype=np.int64)
        for j in range(n):
            d = demand[idx, j][None, :, None]
            m = modes[idx, j][None, :]
            out = resolve(m, d, prev)
            base = resolve(np.zeros_like(m), d, np.zeros_like(m))
            used_wh[idx] += out.power_w[0] * hours
            base_wh[idx] += base.power_w[0] * hours
            lost = out.unserved[0, :, 0]
            unserved[idx] += lost
            violations[idx] += lost > 1e-6
            prev = m
    # Slices: the live mix (the decisions' own traffic model) over the measured load.
    met = np.zeros(len(ids), dtype=np.int64)
    judged = np.zeros(len(ids), dtype=np.int64)
    for i in range(len(ids)):
        top = np.nanmax(ues[i]) if np.isfinite(ues[i]).any() else 1.0
        for j, a in enumerate(shares[i]):
            if a is None or not a.get("shares") or not np.isfinite(loads[i][j]):
                continue
            load = float(loads[i][j])
            u = float(ues[i][j]) / top if np.isfinite(ues[i][j]) and top > 0 else 0.0
            urllc = LIVE_URLLC_SHARE * load
            mmtc = LIVE_MMTC_PER_UE * u
            embb = max(0.0, load - urllc - mmtc)
            cap = CAPACITY[modes[i, j]]
            if cap <= 0:
                continue
            req = np.array([[embb, urllc, mmtc]]) / cap
            req[:, URLLC] *= URLLC_HEADROOM
            s = a["shares"]
            alloc = np.array([[s.get("embb", 0.0), s.get("urllc", 0.0), s.get("mmtc", 0.0),
                               s.get("unreserved", 0.0)]])  # fmt: skip
            _, ok, _ = outcome(alloc, req)
            met[i] += int(ok[0])
            judged[i] += 1
    per_site = [
        {
            "site_id": sid,
            "energy_wh": round(float(used_wh[i]), 2),
            "always_on_wh": round(float(base_wh[i]), 2),
            "saved_pct": _round(100.0 * (1 - used_wh[i] / base_wh[i]) if base_wh[i] else 0.0, 2),
            "steps": n,
            "steps_under_strategic_action": int(steered[i].sum()),
            "mode_steps": {mode: int((modes[i] == k).sum()) for k, mode in enumerate(MODES)},
            "unserved_demand": round(float(unserved[i]), 4),
            "qos_violation_steps": int(violations[i]),
            "slice_steps_judged": int(judged[i]),
            "slice_sla_met_steps": int(met[i]),
        }
        for i, sid in enumerate(ids)
    ]
    total, base_total = float(used_wh.sum()), float(base_wh.sum())
    return {
        "power_model": "EARTH macro cell (Auer et al. 2011), 2 carriers per site",
        "replayed_steps": n,
        "energy_wh": round(total, 2),
        "always_on_wh": round(base_total, 2),
        "saved_pct": _round(100.0 * (1 - total / base_total) if base_total else 0.0, 2),
        "unserved_demand": round(float(unserved.sum()), 4),
        "qos_violation_steps": int(violations.sum()),
        "slice_sla_met_share": _round(float(met.sum() / judged.sum())) if judged.sum() else None,
        "sites": per_site,
    }


def build_report(
    state: FleetState,
    api: Api,
    t0: float,
    t1: float,
    *,
    timeline: list[dict[str, Any]] | None = None,
    started: list[str] | None = None,
    served_at: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Everything the fleet did between wall times ``t0`` and ``t1``."""
    position = _position(state)
    first = int(np.floor(wall_to_step(position, t0)))
    last = int(np.floor(wall_to_step(position, t1)))
    runs = [r for r in api.get("/api/v1/runs?limit=100") if r["created_at"] >= t0 - 1]
    for r in runs:
        r["rounds"] = api.get(f"/api/v1/rounds?run_id={r['id']}")
    models = api.get("/api/v1/models")
    rollouts = api.optional("/api/v1/rollouts?limit=20") or []
    rollouts = [r for r in rollouts if float(r.get("started_at", 0)) >= t0 - 1]
    for r in rollouts:
        detail = api.optional(f"/api/v1/rollouts/{r['id']}")
        r["sites"] = detail.get("sites", []) if isinstance(detail, dict) else []
    health = {h["site_id"]: h for h in (api.optional("/api/v1/health/sites") or [])}
    published = _published(state)
    sites: list[dict[str, Any]] = []
    actions_by_site: dict[str, list[dict[str, Any]]] = {}
    loads: list[NDArray[np.float64]] = []
    ues: list[NDArray[np.float64]] = []
    lags: list[float] = []
    for site in state.sites:
        sid = site.site_id or ""
        offset = _step0(position, site.index)
        view, load, ue = _site_store_view(site, first + offset, max(first, last) + offset)
        loads.append(load)
        ues.append(ue)
        acts = [a for a in (api.optional(f"/api/v1/actions?site_id={sid}&limit=5000") or [])
                if float(a["decided_at"]) >= t0 - 1]  # fmt: skip
        actions_by_site[sid] = acts
        fcs = api.get(f"/api/v1/forecasts?site_id={sid}&limit=5000")
        in_window = [f for f in fcs if float(f["received_at"]) >= t0 - 1]
        for f in in_window:
            sent = published.get((site.index, int(f["made_step"]) - offset))
            if sent is not None and f["step"] == f["made_step"] + 1:
                lags.append(float(f["received_at"]) - sent)
        try:
            h = agent_health(site)
            m = agent_metrics(site)
        except FleetError:
            h, m = {}, {}
        applied = [a for a in acts if a.get("ack_status") == "applied"]
        sites.append(
            {
                "index": site.index,
                "site_id": sid,
                "archetype": site.archetype,
                "serving": h.get("model_version"),
                "kpis_in": int(m.get('fedge_agent_messages_in_total{kind="kpi"}', 0.0)),
                "alerts": {
                    sev: int(m.get(f'fedge_agent_alerts_total{{severity="{sev}"}}', 0.0))
                    for sev in ("warning", "critical")
                },
                "coordinator_health": health.get(sid),
                "forecasts_ingested": len(in_window),
                "actions": {
                    "total": len(acts),
                    "applied": len(applied),
                    "rejected": sum(a.get("ack_status") == "rejected" for a in acts),
                    "unacknowledged": sum(a.get("ack_status") is None for a in acts),
                    "by_kind_source": _count(acts, ("kind", "source")),
                },
                "action_log": [
                    {
                        k: a.get(k)
                        for k in (
                            "id",
                            "kind",
                            "mode",
                            "shares",
                            "source",
                            "decided_at",
                            "acked_at",
                            "ack_status",
                        )
                    }
                    for a in sorted(acts, key=lambda a: int(a["id"]))
                ],
                **view,
            }
        )
    rounds = [x for r in runs for x in r["rounds"]]
    served = served_at or {}
    versions_served = {s["serving"] for s in sites}
    promoted_ids = [m["id"] for m in models if m.get("promoted_at") and m["promoted_at"] >= t0 - 1]
    report: dict[str, Any] = {
        "fleet": {
            "dir": state.dir,
            "sites": len(state.sites),
            "speed": state.spec["speed"],
            "data": state.spec.get("data") or "generator",
            "postgres": bool(state.spec.get("postgres")),
            "started_at": t0,
            "ended_at": t1,
            "wall_s": round(t1 - t0, 1),
            "replayed_steps": [first, last],
        },
        "loop": {
            "runs_started_by_fleet": started or [],
            "runs": len(runs),
            "rounds_completed": sum(r["status"] == "completed" for r in rounds),
            "models_promoted": promoted_ids,
            "model_served_by_every_site": bool(promoted_ids)
            and len(versions_served) == 1
            and next(iter(versions_served)) in {f"v{i}" for i in promoted_ids},
            "rollout_s": {
                f"v{k}": round(v - _promoted_at(models, k), 2) for k, v in served.items()
            },
            "forecasts_ingested": sum(s["forecasts_ingested"] for s in sites),
            "sites_with_applied_action": sum(s["actions"]["applied"] > 0 for s in sites),
            "ingest_lag_ms": _percentiles([1000 * x for x in lags]),
        },
        "runs": runs,
        "retraining": api.optional("/api/v1/retraining"),
        "models": models,
        "rollouts": rollouts,
        "sites": sites,
        "decisions": {
            "actions": sum(len(a) for a in actions_by_site.values()),
            "by_kind_source_status": _count(
                [a for v in actions_by_site.values() for a in v], ("kind", "source", "ack_status")
            ),
        },
        "energy": _energy(state, loads, ues, actions_by_site, position, first),
        "alerts": {sev: sum(s["alerts"][sev] for s in sites) for sev in ("warning", "critical")},
        "timeline": timeline or [],
    }
    return report


def _step0(position: dict[str, Any], site: int) -> int:
    """The site's store step of replay index 0."""
    return int(position["step0"][site])


def _promoted_at(models: list[dict[str, Any]], model_id: int) -> float:
    for m in models:
        if m["id"] == model_id and m.get("promoted_at"):
            return float(m["promoted_at"])
    return float("nan")


def _count(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        key = "/".join(str(row.get(k)) for k in keys)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 2),
        "p99": round(float(np.percentile(arr, 99)), 2),
    }


# --- writing ------------------------------------------------------------------------------


def write_fleet_report(report: dict[str, Any], root: Path) -> tuple[Path, Path]:
    json_path = root / "report.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    html_path = root / "report.html"
    html_path.write_text(_html(report))
    return json_path, html_path


def _plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedge.simulation._report import _figure_png

    out: list[tuple[str, str]] = []
    fig, ax = plt.subplots(figsize=(10, 3.2))
    drawn = False
    for s in report["sites"]:
        err = s["forecast_error_h1"]
        if err:
            ax.plot([e["hour_step"] for e in err], [e["mae"][TARGET_KPIS[0]] for e in err],
                    marker=".", label=f"site {s['index']}")  # fmt: skip
            drawn = True
    if drawn:
        ax.set_xlabel("replayed step (5 min)")
        ax.set_ylabel(f"MAE {TARGET_KPIS[0]} (pct points)")
        ax.legend(fontsize=7)
        out.append(("Forecast error per site, one step ahead, by replayed hour", _figure_png(fig)))
    plt.close(fig)
    return out


def _table(rows: list[list[Any]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _ago(at: float | None, rollout: dict[str, Any]) -> str:
    return "-" if at is None else f"{float(at) - float(rollout['started_at']):.1f}"


def _html(report: dict[str, Any]) -> str:
    fleet, loop, energy = report["fleet"], report["loop"], report["energy"]
    figs = "".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{png}'/>"
        for t, png in _plots(report)
    )
    runs = _table(
        [[r["id"][:8], r["status"], r["num_rounds"], len(r["rounds"]),
          r.get("model_version_id") or "-", r.get("detail", "")[:80]] for r in report["runs"]],
        ["run", "status", "rounds asked", "rounds recorded", "model", "detail"],
    )  # fmt: skip
    rollouts = _table(
        [[r["id"], r["version"], r["state"], r["canaries"], r["delivered"], r["accepted"],
          r["rejected"], r.get("reason", "")[:80]] for r in report["rollouts"]],
        ["rollout", "version", "state", "canaries", "delivered", "accepted", "rejected", "reason"],
    )  # fmt: skip
    per_site = _table(
        [[r["version"], x["site_id"][:12], x["role"], _ago(x.get("delivered_at"), r),
          x.get("verdict") or "-", x.get("reason") or ""] for r in report["rollouts"]
         for x in r.get("sites", [])],
        ["version", "site", "role", "delivered after (s)", "verdict", "reason"],
    )  # fmt: skip
    sites = _table(
        [[s["index"], s["site_id"][:12], s["archetype"], s["serving"] or "-", s["kpis_in"],
          s["forecasts_ingested"], s["actions"]["applied"], s["actions"]["rejected"],
          f"{s['alerts']['warning']}/{s['alerts']['critical']}"] for s in report["sites"]],
        ["site", "id", "archetype", "serving", "KPIs in", "forecasts ingested",
         "actions applied", "rejected", "alerts w/c"],
    )  # fmt: skip
    en = _table(
        [[e["site_id"][:12], e["energy_wh"], e["always_on_wh"], e["saved_pct"],
          e["steps_under_strategic_action"], e["unserved_demand"], e["qos_violation_steps"],
          f"{e['slice_sla_met_steps']}/{e['slice_steps_judged']}"] for e in energy["sites"]],
        ["site", "Wh", "always-on Wh", "saved %", "steps steered", "unserved demand",
         "QoS violation steps", "slice SLA met"],
    )  # fmt: skip
    lag = loop["ingest_lag_ms"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fedge fleet: {fleet["sites"]} sites</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}code{{background:#f4f4f4}}</style></head>
<body><h1>fedge fleet: {fleet["sites"]} sites, {fleet["wall_s"]:.0f} s</h1>
<p>Replayed at {fleet["speed"]}x real time from <code>{html.escape(str(fleet["data"]))}</code>,
coordinator on {"PostgreSQL" if fleet["postgres"] else "SQLite"}. {loop["rounds_completed"]} round(s) completed,
model(s) promoted: {", ".join(f"v{i}" for i in loop["models_promoted"]) or "none"};
served by every site: {"yes" if loop["model_served_by_every_site"] else "no"}
(promotion to every site: {html.escape(json.dumps(loop["rollout_s"]))} s).
{loop["forecasts_ingested"]} forecasts ingested (KPI published to forecast stored: p50 {lag["p50"]} ms,
p99 {lag["p99"]} ms over {lag["n"]}); {report["decisions"]["actions"]} actions, applied at
{loop["sites_with_applied_action"]} of {fleet["sites"]} sites. Alerts: {report["alerts"]["warning"]} warning,
{report["alerts"]["critical"]} critical.</p>
<h2>Runs</h2>{runs}
<h2>Rollouts</h2>{rollouts}{per_site}
<h2>Sites</h2>{sites}
<h2>Energy and SLA over the replayed demand</h2>
<p>{html.escape(energy["power_model"])}; the strategic actions the agents applied against always on,
over {energy["replayed_steps"]} replayed steps: {energy["energy_wh"]} Wh against {energy["always_on_wh"]} Wh
({energy["saved_pct"]}% saved), unserved demand {energy["unserved_demand"]} (site capacity x steps),
{energy["qos_violation_steps"]} QoS violation step(s); slice SLA met in
{energy["slice_sla_met_share"] if energy["slice_sla_met_share"] is not None else "-"} of judged steps.</p>{en}
<h2>Decisions</h2><pre>{html.escape(json.dumps(report["decisions"], indent=2))}</pre>
{figs}
</body></html>
"""
