"""The simulation's view of compressed, sealed updates: plans, sweeps, report and plots.

``fedge simulate --codec int8`` runs every federated method with sealed int8 updates;
``--sweep`` adds one FedAvg run per codec and an RMSE-vs-bytes (Pareto) plot; ``--attacks``
makes a fraction of sites misbehave and, with ``attack_baseline``, reruns each federated
method clean so that the damage is measured, not guessed.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedge.federation import (
    FEEDBACK_MODES,
    CodecSchedule,
    FederationError,
    FederationOutcome,
    FederationPlan,
    downlink_spec,
)
from fedge.simulation._adversary import AdversaryPlan
from fedge.simulation._errors import SimulationError

if TYPE_CHECKING:
    from fedge.simulation._config import SimulationConfig

Scorer = Callable[[FederationOutcome], dict[str, Any]]


def check_comm_config(config: SimulationConfig) -> None:
    try:
        for codec in (config.codec, *config.sweep):
            if codec != "none":
                CodecSchedule.parse(codec)
        if config.attacks:
            AdversaryPlan.parse(config.attacks, 1, 0)
        downlink_spec(config.downlink_codec)
    except FederationError as exc:
        raise SimulationError(str(exc)) from exc
    if config.feedback not in FEEDBACK_MODES:
        raise SimulationError(f"feedback must be one of {FEEDBACK_MODES}, got {config.feedback!r}")
    if config.attacks and config.codec == "none":
        raise SimulationError("attacks act on sealed updates: give a codec (e.g. --codec int8)")
    if "none" in config.sweep:
        raise SimulationError("the sweep compares codecs; use fp32 for the uncompressed point")
    if not 0.0 < config.residual_decay <= 1.0:
        raise SimulationError("residual_decay must be in (0, 1]")
    if config.residual_decay != 1.0 and config.feedback != "residual":
        raise SimulationError(
            "--residual-decay applies to residual feedback: add --feedback residual"
        )


def attacks_json(config: SimulationConfig, num_sites: int) -> str:
    if not config.attacks:
        return ""
    return AdversaryPlan.parse(config.attacks, num_sites, config.seed).to_json()


def comm_plan(plan: FederationPlan, run_dir: Path, label: str) -> FederationPlan:
    """The plan with a fresh state directory per run: residuals and channels start empty."""
    if plan.codec == "none":
        return plan
    state = run_dir / "site-state" / label
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    return replace(plan, state_dir=str(state))


def attack_summary(config: SimulationConfig, num_sites: int) -> dict[str, Any] | None:
    if not config.attacks:
        return None
    adv = AdversaryPlan.parse(config.attacks, num_sites, config.seed)
    counts: dict[str, int] = {}
    for role in adv.roles().values():
        counts[role] = counts.get(role, 0) + 1
    return {"spec": config.attacks, "boost": adv.boost, "sites_by_attack": counts}


def sweep(
    config: SimulationConfig,
    base: FederationPlan,
    run_dir: Path,
    run: Callable[[FederationPlan], FederationOutcome],
    score: Scorer,
    tick: Callable[[], None],
) -> list[dict[str, Any]]:
    """One FedAvg run per codec of ``config.sweep``: test RMSE against bytes on the wire."""
    points = []
    for codec in config.sweep:
        plan = comm_plan(replace(base, strategy="fedavg", codec=codec), run_dir, f"sweep-{codec}")
        outcome = run(plan)
        comm = (outcome.comm or {}).get("comm", {})
        scores = score(outcome)
        points.append(
            {
                "codec": codec,
                **{k: scores[k] for k in ("rmse", "mae", "r2", "underprovision_rate")},
                "bytes_up_total": comm.get("bytes_up_total"),
                "bytes_per_update_mean": comm.get("bytes_per_update_mean"),
                "compression_ratio": comm.get("compression_ratio"),
            }
        )
        tick()
    return points


def pareto(points: list[dict[str, Any]]) -> list[str]:
    """Codecs no other codec beats on both bytes per update and RMSE."""
    front = []
    for p in points:
        dominated = any(
            q["bytes_per_update_mean"] <= p["bytes_per_update_mean"]
            and q["rmse"] <= p["rmse"]
            and (q["bytes_per_update_mean"], q["rmse"]) != (p["bytes_per_update_mean"], p["rmse"])
            for q in points
        )
        if not dominated:
            front.append(p["codec"])
    return front


# --- report -----------------------------------------------------------------------------


def comm_html(report: dict[str, Any]) -> str:
    """Tables for report.html: bytes on the wire, rejected updates, attacks, the sweep."""
    parts: list[str] = []
    by_method = report.get("comm_by_method") or {}
    if by_method:
        rows = []
        for m, s in by_method.items():
            c, sec = s["comm"], s["security"]
            rejected = ", ".join(f"{k}: {v}" for k, v in sec["rejected"].items()) or "none"
            rows.append(
                f"<tr><td>{html.escape(m)}</td><td>{html.escape(c['codec'])}</td>"
                f"<td>{c['bytes_per_update_mean']}</td><td>{c['compression_ratio']}</td>"
                f"<td>{c['bytes_up_total']:,}</td><td>{c['bytes_down_total']:,}</td>"
                f"<td>{sec['updates_sealed']}</td><td>{sec['accepted']}</td>"
                f"<td>{html.escape(rejected)}</td></tr>"
            )
        parts.append(
            "<h2>Updates on the wire</h2><p>Bytes are Flower protobuf messages as sent and "
            "received (docs/compression.md); the ratio compares with the same reply unsealed "
            "in fp32.</p><table><tr><th>method</th><th>codec</th><th>B/update</th>"
            "<th>ratio</th><th>up B</th><th>down B</th><th>sealed</th><th>accepted</th>"
            "<th>rejected</th></tr>" + "".join(rows) + "</table>"
        )
    adv = report.get("adversarial")
    if adv:
        rows = []
        for m, r in adv.get("methods", {}).items():
            clean = r.get("clean_rmse")
            ratio = f"{r['rmse'] / clean:.3f}" if clean else "-"
            clean_s = f"{clean:.4f}" if clean else "-"
            rows.append(
                f"<tr><td>{html.escape(m)}</td><td>{r['rmse']:.4f}</td><td>{clean_s}</td>"
                f"<td>{ratio}</td></tr>"
            )
        parts.append(
            f"<h2>Adversarial sites</h2><p>{html.escape(json.dumps(adv['sites_by_attack']))} "
            f"(spec <code>{html.escape(adv['spec'])}</code>)</p><table><tr><th>method</th>"
            "<th>RMSE attacked</th><th>RMSE clean</th><th>attacked / clean</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    points = report.get("comm_sweep") or []
    if points:
        front = set(pareto(points))
        rows = [
            f"<tr><td>{html.escape(p['codec'])}{' *' if p['codec'] in front else ''}</td>"
            f"<td>{p['rmse']:.4f}</td><td>{p['bytes_per_update_mean']}</td>"
            f"<td>{p['compression_ratio']}</td></tr>"
            for p in points
        ]
        parts.append(
            "<h2>Codec sweep (FedAvg)</h2><p>* on the Pareto front.</p><table><tr><th>codec</th>"
            "<th>RMSE</th><th>B/update</th><th>ratio</th></tr>" + "".join(rows) + "</table>"
        )
    return "".join(parts)


def comm_plots(report: dict[str, Any], to_png: Callable[[Any], str]) -> list[tuple[str, str]]:
    points = report.get("comm_sweep") or []
    if not points:
        return []
    import matplotlib.pyplot as plt

    front = pareto(points)
    fig, ax = plt.subplots(figsize=(8, 4))
    for p in points:
        on = p["codec"] in front
        ax.scatter(
            p["bytes_per_update_mean"], p["rmse"], color="tab:red" if on else "tab:gray", zorder=3
        )
        ax.annotate(p["codec"], (p["bytes_per_update_mean"], p["rmse"]), fontsize=8)
    fp = sorted(
        (p for p in points if p["codec"] in front), key=lambda p: p["bytes_per_update_mean"]
    )
    ax.step(
        [p["bytes_per_update_mean"] for p in fp],
        [p["rmse"] for p in fp],
        where="post",
        color="tab:red",
        lw=1,
        label="Pareto front",
    )
    ax.set_xscale("log")
    ax.set(
        xlabel="bytes per update on the wire (sealed Flower message)",
        ylabel="test RMSE (fraction of KPI range)",
        title="FedAvg: accuracy against upload size per codec",
    )
    ax.legend()
    png = to_png(fig)
    plt.close(fig)
    return [("RMSE vs bytes per update (Pareto front)", png)]


def comm_sections(
    config: SimulationConfig,
    num_sites: int,
    plan_for: Callable[[str], FederationPlan],
    run_dir: Path,
    outcomes: dict[str, tuple[float, dict[str, Any] | None]],
    run: Callable[[FederationPlan], FederationOutcome],
    score: Scorer,
    progress: Any,
) -> dict[str, Any]:
    """report.json's ``comm``/``security`` (first federated method), per method, attacks, sweep.

    ``outcomes`` maps each federated method run to (test RMSE, its ledger summary).
    """
    out: dict[str, Any] = {}
    by_method = {m: c for m, (_, c) in outcomes.items() if c is not None}
    if by_method:
        first = next(iter(by_method.values()))
        out["comm"], out["security"] = first["comm"], first["security"]
        out["comm_by_method"] = by_method
    adv = attack_summary(config, num_sites)
    if adv is not None:
        methods: dict[str, Any] = {}
        if config.attack_baseline:
            progress.start("clean baselines", len(outcomes))
        for m, (rmse, _) in outcomes.items():
            entry: dict[str, Any] = {"rmse": rmse}
            if config.attack_baseline:
                clean = comm_plan(replace(plan_for(m), attacks=""), run_dir, f"clean-{m}")
                entry["clean_rmse"] = score(run(clean))["rmse"]
                progress.advance("clean baselines")
            methods[m] = entry
        out["adversarial"] = {**adv, "methods": methods}
    if config.sweep:
        progress.start("sweep", len(config.sweep))
        out["comm_sweep"] = sweep(
            config, plan_for("fedavg"), run_dir, run, score, lambda: progress.advance("sweep")
        )
    return out
