"""The decisions part of ``report.html``: a table and three plots, drawn from ``report.json``."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np

ENERGY_ORDER = ("dqn", "threshold", "always_on", "random")
SLICE_ORDER = ("ppo", "proportional_forecast", "proportional_current", "static")


def decision_html(report: dict[str, Any]) -> str:
    dec = report.get("decisions")
    if not dec:
        return ""
    e, s, lat = dec["energy"], dec["slices"], dec["latency_us"]
    th = e["threshold"].get("thresholds", {})
    rows_e = "".join(
        f"<tr><td>{m}</td><td>{e[m]['energy_saved_pct']:.1f}%</td>"
        f"<td>{100 * e[m]['qos_violation_rate']:.2f}%</td><td>{e[m]['reward']:.4f}</td></tr>"
        for m in ENERGY_ORDER
        if m in e
    )
    rows_s = "".join(
        f"<tr><td>{m}</td><td>{100 * s[m]['sla_satisfaction']:.2f}%</td>"
        f"<td>{s[m]['reserved_prb_pct']:.1f}%</td><td>{s[m]['reward']:.4f}</td></tr>"
        for m in SLICE_ORDER
        if m in s
    )
    held = dec.get("held_out", {})
    return f"""<h2>Central decisions on the held-out days</h2>
<p>{held.get("clusters")} clusters of {held.get("cluster_size")} sites over {held.get("days")} held-out
days; policy version <code>{html.escape(str(dec.get("policy_version")))}</code>. Power per carrier:
{html.escape(_power_line(dec.get("power_model")))} (docs/decisions.md); the threshold heuristic's thresholds (sleep below
{th.get("sleep_below")}, capacity carrier off below {th.get("off_below")}) were chosen on the
validation days. Slices run under the DQN's modes.</p>
<table><tr><th>energy method</th><th>energy saved</th><th>site-steps with QoS violation</th><th>reward</th></tr>{rows_e}</table>
<table><tr><th>slice method</th><th>SLA met (site-steps)</th><th>PRBs reserved</th><th>reward</th></tr>{rows_s}</table>
{_ceilings(e, s)}{_per_model(dec.get("power_models"))}<p>One site's decision (mode, then shares) through the DecisionService: p50 {lat["p50"]} µs,
p99 {lat["p99"]} µs.</p>"""


def _power_line(model: dict[str, Any] | None) -> str:
    if not model:
        return "EARTH macro cell"
    if "relative_power" in model:  # TR 38.864
        rel, ms = model["relative_power"], model["transition_ms"]
        return (
            f"{model['source']}: relative power deep/light/micro sleep "
            f"{rel['deep_sleep']}/{rel['light_sleep']}/{rel['micro_sleep']}, active DL "
            f"{rel['active_dl']}; transitions {ms['deep_sleep']}/{ms['light_sleep']}/"
            f"{ms['micro_sleep']} ms; {model['watts_per_unit']} W per unit"
        )
    return (
        f"{model['source']}: P0 {model['p0_w']} W, Δp {model['delta_p']}, Pmax "
        f"{model['pmax_w']} W, asleep {model['sleep_w']} W"
    )


def _per_model(models: dict[str, Any] | None) -> str:
    """Every power model's methods, its ceiling and each method's share of it."""
    if not models:
        return ""
    rows = []
    for name, m in models.items():
        e = m["energy"]
        ceiling = e.get("hindsight_bound", {}).get("energy_saved_pct")
        for method in (x for x in ENERGY_ORDER if x in e):
            r = e[method]
            ratio = r.get("ratio_to_ceiling")
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{method}</td>"
                f"<td>{r['energy_saved_pct']:.1f}%</td>"
                f"<td>{'-' if ceiling is None else f'{ceiling:.1f}%'}</td>"
                f"<td>{'-' if ratio is None else f'{100 * ratio:.0f}%'}</td>"
                f"<td>{100 * r['qos_violation_rate']:.2f}%</td></tr>"
            )
    return (
        "<p>Per power model (each with its own DQN, trained under it):</p><table><tr>"
        "<th>power model</th><th>method</th><th>energy saved</th><th>hindsight ceiling</th>"
        "<th>of ceiling</th><th>site-steps with QoS violation</th></tr>"
        f"{''.join(rows)}</table>\n"
    )


def _ceilings(energy: dict[str, Any], slices: dict[str, Any]) -> str:
    """What no method can beat on these days, so a gap reads against what was possible."""
    parts = []
    if "hindsight_bound" in energy:
        b = energy["hindsight_bound"]
        parts.append(
            f"knowing each block's demand in advance, at most {b['energy_saved_pct']:.1f}% "
            "energy can be saved with no unserved demand"
        )
    if "hindsight_bound" in slices:
        b = slices["hindsight_bound"]
        parts.append(
            f"giving every slice exactly what it needed meets the SLA in "
            f"{100 * b['sla_satisfaction']:.2f}% of site-steps with {b['reserved_prb_pct']:.1f}% "
            "of the PRBs"
        )
    return f"<p>Ceilings (hindsight, not methods): {'; '.join(parts)}.</p>\n" if parts else ""


def decision_plots(
    report: dict[str, Any], figure_png: Callable[[Any], str]
) -> list[tuple[str, str]]:
    dec = report.get("decisions")
    if not dec or "plot_data" not in dec:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    out: list[tuple[str, str]] = []
    day = dec["plot_data"]["modes_day"]
    hours = np.array(day["hours"])
    clusters = day["clusters"]
    fig, axes = plt.subplots(
        len(clusters), 1, figsize=(10, 1.3 + 1.1 * len(clusters)), squeeze=False
    )
    cmap = ListedColormap(["tab:green", "tab:orange", "tab:gray", "tab:purple", "tab:blue"])
    for c, (ax, cl) in enumerate(zip(axes[:, 0], clusters, strict=True)):
        modes = np.array(cl["modes"])
        ax.imshow(
            modes,
            aspect="auto",
            cmap=cmap,
            vmin=0,
            vmax=4,
            interpolation="nearest",
            extent=(0.0, 24.0, modes.shape[0] - 0.5, -0.5),
        )
        ax.set_yticks(range(modes.shape[0]))
        ax.set_yticklabels(cl["sites"], fontsize=7)
        twin = ax.twinx()
        twin.plot(np.arange(len(hours)) * 0.25 + 0.125, cl["demand"], color="k", lw=1)
        twin.set_ylabel("cluster demand", fontsize=7)
        ax.set_title(
            f"cluster {c}: green active, orange capacity carrier off, grey deep sleep, "
            "purple light sleep, blue micro sleep",
            fontsize=8,
        )
    axes[-1, 0].set_xlabel(f"hours from {hours[0]:.2f} h on the first held-out day")
    out.append(("Strategic (DQN) modes over a held-out day, per cluster", figure_png(fig)))
    plt.close(fig)

    energy = dec["energy"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in (m for m in ENERGY_ORDER if m in energy):
        r = energy[m]
        x, y = 100 * r["qos_violation_rate"], r["energy_saved_pct"]
        ax.scatter(x, y, s=60)
        ax.annotate(f"{m} (reward {r['reward']:.3f})", (x, y), fontsize=8)
    if "hindsight_bound" in energy:
        ceiling = energy["hindsight_bound"]["energy_saved_pct"]
        ax.axhline(ceiling, color="grey", ls="--", lw=1)
        ax.annotate(
            f"hindsight ceiling at zero violations ({ceiling:.1f}%)", (0, ceiling), fontsize=8
        )
    ax.set(xlabel="site-steps with a QoS violation (%)", ylabel="energy saved vs always-on (%)")
    ax.set_xscale("symlog", linthresh=0.1)
    out.append(("Energy saved vs QoS violations, per method", figure_png(fig)))
    plt.close(fig)

    sd = dec["plot_data"]["slice_day"]
    x = np.arange(len(sd["hours"])) / 12.0
    fig, axes = plt.subplots(3, 1, figsize=(10, 6), sharex=True)
    for k, (ax, name) in enumerate(zip(axes, ("eMBB", "URLLC", "mMTC"), strict=True)):
        ax.plot(x, sd["requirement"][k], color="k", lw=1.2, label="needed")
        for m, style in (("ppo", "-"), ("proportional_forecast", ":"), ("static", "--")):
            ax.plot(x, sd["shares"][m][k], style, lw=1, label=m)
        ax.set_ylabel(f"{name} share", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[0].set_title(
        f"{sd['site']}: share of available PRBs reserved vs needed (URLLC with headroom)",
        fontsize=9,
    )
    axes[-1].set_xlabel(f"hours of awake steps from {sd['hours'][0]:.2f} h")
    out.append(("Slice shares vs demand", figure_png(fig)))
    plt.close(fig)
    return out
