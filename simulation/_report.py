"""The run's outputs: ``report.json`` for machines, a self-contained ``report.html`` for people."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_BY_NAME, TARGET_KPIS
from fedge.simulation._config import PERSONALISED_METHODS

METHOD_ORDER = (
    "fedavg",
    "fedprox",
    "fedtrimmedavg",
    "fedmedian",
    "krum",
    "fedavgm",
    *PERSONALISED_METHODS,
    "local",
    "centralized",
    "seasonal_naive",
    "persistence",
)


def write_report(
    report: dict[str, Any], run_dir: Path, plot_series: dict[str, dict[str, NDArray[np.float64]]]
) -> tuple[Path, Path]:
    json_path = run_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    html_path = run_dir / "report.html"
    html_path.write_text(_html(report, plot_series))
    return json_path, html_path


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(
    report: dict[str, Any], series: dict[str, dict[str, NDArray[np.float64]]]
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    fc = report["forecast"]
    methods = [m for m in METHOD_ORDER if m in fc["methods"]]

    trained = [m for m in methods if fc["methods"][m].get("loss_by_round")]
    if trained:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        for m in trained:
            rows = fc["methods"][m]["loss_by_round"]
            r = [x["round"] for x in rows]
            (line,) = a1.plot(r, [x["train_loss"] for x in rows], marker="o", label=m)
            a2.plot(r, [x["val_loss"] for x in rows], marker="o", color=line.get_color())
            best = fc["methods"][m].get("best_round")
            if best is not None and 1 <= best <= len(rows):
                a2.plot([best], [rows[best - 1]["val_loss"]], marker="*", ms=14,
                        color=line.get_color())  # fmt: skip
        a1.set(title="training loss (asymmetric, scaled)", xlabel="round (epoch: centralized)")
        a2.set(title="validation loss; * = the round kept", xlabel="round (epoch: centralized)")
        a1.legend()
        out.append(("Loss per round: training and validation", _figure_png(fig)))
        plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    a1.bar(methods, [fc["methods"][m]["rmse"] for m in methods], color="tab:blue")
    a1.set(title="test RMSE (fraction of KPI range)")
    a2.bar(methods, [fc["methods"][m]["underprovision_rate"] for m in methods], color="tab:red")
    a2.set(title="under-provisioning rate")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=30)
    out.append(("RMSE per method", _figure_png(fig)))
    plt.close(fig)

    if series:
        names = list(series)
        fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.2 * len(names)), squeeze=False)
        kpi = TARGET_KPIS[0]
        for ax, name in zip(axes[:, 0], names, strict=True):
            for label, values in series[name].items():
                ax.plot(values[:, 0], label=label, lw=1.2 if label == "actual" else 1.0)
            ax.set_title(
                f"{name}: {KPI_BY_NAME[kpi].description} ({KPI_BY_NAME[kpi].unit})", fontsize=9
            )
        axes[0, 0].legend(loc="upper left", fontsize=8)
        axes[-1, 0].set_xlabel(
            f"test step (forecast {report['forecast']['horizon_steps']} steps ahead)"
        )
        fig.tight_layout()
        out.append(("Forecast vs actual, one site per archetype", _figure_png(fig)))
        plt.close(fig)

    sites = fc["sites"]
    if sites:
        fig, ax = plt.subplots(figsize=(10, 3.2))
        ax.boxplot([[s["nrmse"][m] for s in sites] for m in methods], tick_labels=methods)
        ax.set(title="per-site test RMSE (fraction of KPI range) across sites")
        out.append(("Error distribution across sites", _figure_png(fig)))
        plt.close(fig)
    from fedge.simulation._comm import comm_plots

    out.extend(comm_plots(report, _figure_png))
    from fedge.simulation._decision_report import decision_plots

    out.extend(decision_plots(report, _figure_png))
    return out


def _horizon_table(report: dict[str, Any]) -> str:
    """Every method at each report lead time: RMSE, R², under-provisioning, asymmetric cost."""
    by = report["forecast"].get("by_horizon") or {}
    if not by:
        return ""
    heads = "".join(
        f"<th colspan='4'>{html.escape(k)} min (step {v['step']}, {v['minutes']} min)</th>"
        for k, v in by.items()
    )
    sub = "<th>RMSE</th><th>R²</th><th>under</th><th>cost</th>" * len(by)
    rows = []
    methods = next(iter(by.values()))["methods"]
    for m in (m for m in METHOD_ORDER if m in methods):
        cells = ""
        for v in by.values():
            r = v["methods"][m]
            cells += (
                f"<td>{r['rmse']:.4f}</td><td>{r['r2']:.3f}</td>"
                f"<td>{100 * r['underprovision_rate']:.1f}%</td>"
                f"<td>{1000 * r['asymmetric_cost']:.2f}</td>"
            )
        rows.append(f"<tr><td>{m}</td>{cells}</tr>")
    return (
        "<h3>By lead time</h3><table><tr><th>method</th>"
        + heads
        + "</tr><tr><th></th>"
        + sub
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def _best_rounds(report: dict[str, Any]) -> str:
    fc = report["forecast"]["methods"]
    kept = [
        f"{m}: {'epoch' if m == 'centralized' else 'round'} {fc[m]['best_round']}"
        for m in METHOD_ORDER
        if m in fc and fc[m].get("best_round") is not None
    ]
    if not kept:
        return ""
    return (
        "<p>Each trained method keeps its model of the round (epoch) with the lowest "
        "validation loss (validation days only; local: each site its own): "
        + html.escape(", ".join(kept))
        + ".</p>"
    )


def _table(report: dict[str, Any]) -> str:
    fc = report["forecast"]["methods"]
    rows = []
    for m in (m for m in METHOD_ORDER if m in fc):
        r = fc[m]
        rows.append(
            f"<tr><td>{m}</td><td>{r['rmse']:.4f}</td><td>{r['mae']:.4f}</td>"
            f"<td>{r['r2']:.3f}</td><td>{100 * r['underprovision_rate']:.2f}%</td>"
            f"<td>{1000 * r['asymmetric_cost']:.2f}</td></tr>"
        )
    per_kpi = []
    for m in (m for m in METHOD_ORDER if m in fc):
        cells = "".join(f"<td>{fc[m]['per_kpi'][k]['rmse']:.2f}</td>" for k in TARGET_KPIS)
        per_kpi.append(f"<tr><td>{m}</td>{cells}</tr>")
    heads = "".join(f"<th>{k} RMSE ({KPI_BY_NAME[k].unit})</th>" for k in TARGET_KPIS)
    return (
        "<table><tr><th>method</th><th>RMSE</th><th>MAE</th><th>R²</th><th>under-prov.</th>"
        "<th>asym. cost (x1000)</th></tr>"
        + "".join(rows)
        + "</table><h3>Per KPI, original units</h3><table><tr><th>method</th>"
        + heads
        + "</tr>"
        + "".join(per_kpi)
        + "</table>"
        + _horizon_table(report)
        + _best_rounds(report)
    )


def _html(report: dict[str, Any], series: dict[str, dict[str, NDArray[np.float64]]]) -> str:
    cfg = report["config"]
    timing = report["timing"]
    figs = "".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{png}'/>"
        for t, png in _plots(report, series)
    )
    data = report["data"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fedge simulate: {html.escape(cfg["name"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}code{{background:#f4f4f4}}</style></head>
<body><h1>fedge simulate: {html.escape(cfg["name"])}</h1>
<p>{data.get("evaluated_sites")} sites evaluated ({html.escape(", ".join(f"{k}: {v}" for k, v in data["archetypes"].items()))}),
source <code>{html.escape(str(data["source"]))}</code>; {cfg["num_rounds"]} rounds, sampling {cfg["fraction_train"]:.0%},
forecast every step up to {report["forecast"]["horizon_steps"]} steps ({report["forecast"].get("horizon_minutes", "?")} min) ahead from {report["forecast"]["lookback_steps"]} steps.
Wall time {timing["wall_s"]:.0f} s; {timing["site_rounds_per_min"]} site-rounds per minute.</p>
<p>RMSE and MAE are fractions of each site's KPI range averaged over the three targets; R² is the
mean per-site R²; under-provisioning counts forecasts below the actual by more than 5% of the range;
the asymmetric cost is the training objective (squared error, under-forecasts weighted 5), x1000.
Persistence can win on RMSE at short horizons while missing far more peaks: the learned models are
trained to lean high.</p>
<h2>Methods on the held-out days</h2>{_table(report)}
{_comm_html(report)}
{_decision_html(report)}
{figs}
<h2>Configuration</h2><pre>{html.escape(json.dumps(cfg, indent=2))}</pre>
</body></html>
"""


def _decision_html(report: dict[str, Any]) -> str:
    from fedge.simulation._decision_report import decision_html

    return decision_html(report)


def _comm_html(report: dict[str, Any]) -> str:
    from fedge.simulation._comm import comm_html
    from fedge.simulation._hierarchy import hierarchy_html
    from fedge.simulation._placements import placements_html

    return comm_html(report) + hierarchy_html(report) + placements_html(report)


def console_summary(report: dict[str, Any]) -> Any:
    """A rich table of the methods, with the comparisons an engineer looks at first."""
    from rich.table import Table

    fc = report["forecast"]["methods"]
    table = Table(
        title=f"fedge simulate: {report['config']['name']}  (test days, {report['data']['evaluated_sites']} sites)"
    )
    for col in ("method", "RMSE", "MAE", "R²", "under-prov.", "asym. cost", "s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m in (m for m in METHOD_ORDER if m in fc):
        r = fc[m]
        table.add_row(
            m,
            f"{r['rmse']:.4f}",
            f"{r['mae']:.4f}",
            f"{r['r2']:.3f}",
            f"{100 * r['underprovision_rate']:.2f}%",
            f"{1000 * r['asymmetric_cost']:.2f}",
            f"{r['seconds']:.0f}",
        )
    ratios = []
    if "fedavg" in fc:
        for ref in ("centralized", "seasonal_naive", "local"):
            if ref in fc and fc[ref]["rmse"] > 0:
                ratios.append(f"fedavg/{ref} RMSE = {fc['fedavg']['rmse'] / fc[ref]['rmse']:.3f}")
    by = report["forecast"].get("by_horizon") or {}
    best = _best_federated(fc)
    if best is not None and by and all("persistence" in v["methods"] for v in by.values()):
        ratios.append(
            f"{best}/persistence RMSE by lead time: "
            + ", ".join(
                f"{k} min {v['methods'][best]['rmse'] / v['methods']['persistence']['rmse']:.3f}"
                for k, v in by.items()
                if v["methods"]["persistence"]["rmse"] > 0
            )
        )
    table.caption = "  ".join(ratios)
    return table


def console_results(report: dict[str, Any]) -> list[str]:
    """The compression and decision results the run computed, one line each, for the
    terminal under the table (report.html has them in full); none when it computed none."""
    lines = []
    for method, s in (report.get("comm_by_method") or {}).items():
        c, sec = s["comm"], s["security"]
        rejected = ", ".join(f"{k} {v}" for k, v in sec.get("rejected", {}).items()) or "none"
        lines.append(
            f"{method} updates: codec {c['codec']}, {c['bytes_per_update_mean']:,.0f} B/update "
            f"({c['compression_ratio']}x smaller than fp32), up {c['bytes_up_total']:,} B, "
            f"down {c['bytes_down_total']:,} B; {sec['updates_sealed']} sealed, "
            f"{sec['accepted']} accepted, rejected: {rejected}"
        )
    sweep = report.get("comm_sweep") or []
    if sweep:
        from fedge.simulation._comm import pareto

        front = set(pareto(sweep))
        lines.append(
            "codec sweep (RMSE at B/update): "
            + ", ".join(
                f"{p['codec']}{'*' if p['codec'] in front else ''} {p['rmse']:.4f} at "
                f"{p['bytes_per_update_mean']:,.0f}"
                for p in sweep
            )
            + "  (* on the Pareto front)"
        )
    for method, r in (report.get("adversarial") or {}).get("methods", {}).items():
        clean = r.get("clean_rmse")
        vs = f" (clean {clean:.4f}, x{r['rmse'] / clean:.3f})" if clean else ""
        lines.append(f"{method} under attack: RMSE {r['rmse']:.4f}{vs}")
    dec = report.get("decisions")
    if dec:
        from fedge.simulation._decision_report import ENERGY_ORDER, SLICE_ORDER

        e, sl = dec["energy"], dec["slices"]
        lines.append(
            "energy saved (QoS violations): "
            + ", ".join(
                f"{m} {e[m]['energy_saved_pct']:.1f}% ({100 * e[m]['qos_violation_rate']:.2f}%)"
                for m in ENERGY_ORDER
                if m in e
            )
        )
        lines.append(
            "slice SLA met (PRBs reserved): "
            + ", ".join(
                f"{m} {100 * sl[m]['sla_satisfaction']:.2f}% ({sl[m]['reserved_prb_pct']:.1f}%)"
                for m in SLICE_ORDER
                if m in sl
            )
        )
        lat = dec.get("latency_us") or {}
        if lat:
            lines.append(f"one site's decision: p50 {lat['p50']} µs, p99 {lat['p99']} µs")
    return lines


def _best_federated(methods: dict[str, Any]) -> str | None:
    """The federated method with the lowest asymmetric cost over every lead time."""
    fed = [m for m in METHOD_ORDER[:6] if m in methods]
    return min(fed, key=lambda m: methods[m]["asymmetric_cost"]) if fed else None
