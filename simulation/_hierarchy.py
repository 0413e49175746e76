"""The simulation's view of regional aggregators: settings, the flat comparison, the report.

``fedge simulate --regions K`` runs the federated methods with K regions between the
sites and the coordinator (``fedge.federation.RegionalStrategy``); with
``hierarchy_baseline`` the first federated method runs again flat, on the same sites,
seed and codec, so report.json's ``hierarchy`` compares the two on measured figures:
bytes per tier, rounds to a target validation loss, test RMSE (docs/hierarchy.md).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedge.federation import CodecSchedule, FederationError, RoundRecord
from fedge.simulation._errors import SimulationError

if TYPE_CHECKING:
    from fedge.simulation._config import SimulationConfig

#: The target validation loss: the flat run's best, plus this fraction.
TARGET_SLACK = 0.02
#: Acceptance figures the report checks (docs/hierarchy.md).
BYTES_FACTOR = 5.0
RMSE_TOLERANCE = 0.02


def check_hierarchy_config(config: SimulationConfig) -> None:
    """``regions`` is None (flat) or a whole number in [1, sites], on sealed updates."""
    k = config.regions
    if k is None:
        if config.region_codec:
            raise SimulationError("--region-codec applies to a run with --regions")
        return
    if isinstance(k, bool) or not isinstance(k, int):
        raise SimulationError(f"--regions must be a whole number of regions, got {k!r}")
    if k < 1:
        raise SimulationError(f"--regions must be >= 1 (leave it out for a flat run), got {k}")
    if config.data_path is None and k > config.generator.num_sites:
        raise SimulationError(
            f"--regions {k} is more than the {config.generator.num_sites} sites: "
            "every region needs a site"
        )
    if config.codec == "none":
        raise SimulationError(
            "regions aggregate sealed updates: give --codec (fp32 for uncompressed)"
        )
    from fedge.simulation._config import FEDERATED_METHODS

    if not any(m in FEDERATED_METHODS for m in config.methods):
        raise SimulationError("--regions applies to the federated methods: list one")
    if config.region_codec:
        try:
            CodecSchedule.parse(config.region_codec)
        except FederationError as exc:
            raise SimulationError(f"--region-codec: {exc}") from exc


@dataclass
class Arm:
    """One side of the comparison, as measured."""

    rmse: float
    rounds: list[RoundRecord]
    comm: dict[str, Any]  # the run's Ledger summary (plus ``hierarchy`` when regional)
    seconds: float


def _best_val(rounds: list[RoundRecord]) -> float | None:
    vals = [r.val_loss for r in rounds if r.val_loss is not None]
    return min(vals) if vals else None


def rounds_to(rounds: list[RoundRecord], target: float | None) -> int | None:
    """The first round whose aggregated validation loss is at or under ``target``."""
    if target is None:
        return None
    return next((r.round for r in rounds if r.val_loss is not None and r.val_loss <= target), None)


def _arm(arm: Arm, target: float | None, bytes_: dict[str, int], into: int) -> dict[str, Any]:
    return {
        "rmse": arm.rmse,
        "best_val_loss": _best_val(arm.rounds),
        "rounds_to_target": rounds_to(arm.rounds, target),
        "val_loss_by_round": [r.val_loss for r in arm.rounds],
        "wall_s": round(arm.seconds, 2),
        "bytes": bytes_,
        "bytes_into_coordinator": into,
    }


def compare(config: SimulationConfig, method: str, hier: Arm, flat: Arm | None) -> dict[str, Any]:
    """report.json's ``hierarchy``: the regional run's tiers and, with the flat run, the
    two side by side and the acceptance checks."""
    tiers = hier.comm["hierarchy"]
    out: dict[str, Any] = {
        "method": method,
        "regions": tiers["regions"],
        "sites_per_region": tiers["sites_per_region"],
        "assignment": "site i of n in region floor(i * K / n)",
        "codec": config.codec,
        "region_codec": tiers["region_codec"],
        "downlink_codec": config.downlink_codec,
        "regional_updates_by_round": tiers["regional_updates_by_round"],
        "bytes_per_regional_update_mean": tiers["bytes_per_regional_update_mean"],
        "region_security": tiers["security"],
    }
    if flat is None:
        out["hierarchical"] = _arm(
            hier, None, tiers["bytes"], tiers["bytes"]["regions_to_coordinator"]
        )
        return out
    best_flat = _best_val(flat.rounds)
    target = best_flat * (1 + TARGET_SLACK) if best_flat is not None else None
    fc = flat.comm["comm"]
    flat_in = int(fc["bytes_up_total"])
    hier_in = int(tiers["bytes"]["regions_to_coordinator"])
    flat_bytes = {
        "sites_to_coordinator": flat_in,
        "coordinator_to_sites": int(fc["bytes_down_total"]),
    }
    ratio = flat_in / hier_in if hier_in else None
    rel = (hier.rmse - flat.rmse) / flat.rmse if flat.rmse else None
    out.update(
        {
            "target_val_loss": target,
            "target_rule": f"the flat run's best validation loss + {TARGET_SLACK:.0%}",
            "flat": {
                **_arm(flat, target, flat_bytes, flat_in),
                "bytes_per_update_mean": fc["bytes_per_update_mean"],
            },
            "hierarchical": _arm(hier, target, tiers["bytes"], hier_in),
            "coordinator_bytes_ratio": round(ratio, 2) if ratio is not None else None,
            "rmse_rel_diff": float(f"{rel:.3g}") if rel is not None else None,
            "meets": {
                f"coordinator_bytes_{BYTES_FACTOR:g}x": ratio is not None and ratio >= BYTES_FACTOR,
                f"rmse_within_{RMSE_TOLERANCE:.0%}": rel is not None and rel <= RMSE_TOLERANCE,
            },
        }
    )
    return out


def hierarchy_section(
    config: SimulationConfig,
    method: str,
    hier: Arm,
    run_flat: Callable[[], Arm],
    progress: Any,
) -> dict[str, Any]:
    flat = None
    if config.hierarchy_baseline:
        progress.start("flat baseline", 1)
        flat = run_flat()
        progress.advance("flat baseline")
    return compare(config, method, hier, flat)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else html.escape(str(v))


def hierarchy_html(report: dict[str, Any]) -> str:
    """report.html's table: flat against hierarchical, tier by tier."""
    h = report.get("hierarchy")
    if not h:
        return ""
    arms = [(name, h[name]) for name in ("flat", "hierarchical") if name in h]
    tiers = sorted({t for _, a in arms for t in a["bytes"]})
    head = "".join(f"<th>{html.escape(n)}</th>" for n, _ in arms)
    rows = [
        ("test RMSE", [a["rmse"] for _, a in arms]),
        ("best validation loss", [a["best_val_loss"] for _, a in arms]),
        ("rounds to target", [a["rounds_to_target"] for _, a in arms]),
        ("bytes into the coordinator", [a["bytes_into_coordinator"] for _, a in arms]),
        *((f"bytes {t.replace('_', ' ')}", [a["bytes"].get(t) for _, a in arms]) for t in tiers),
        ("wall s", [a["wall_s"] for _, a in arms]),
    ]
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>{''.join(f'<td>{_cell(v)}</td>' for v in vals)}</tr>"
        for label, vals in rows
    )
    summary = (
        f"{h['regions']} regions ({_cell(h['sites_per_region'])} sites), sites' codec "
        f"<code>{html.escape(h['codec'])}</code>, regions' <code>"
        f"{html.escape(h['region_codec'])}</code>; coordinator bytes flat / hierarchical: "
        f"{_cell(h.get('coordinator_bytes_ratio'))}, RMSE relative difference: "
        f"{_cell(h.get('rmse_rel_diff'))}; target validation loss "
        f"{_cell(h.get('target_val_loss'))} ({html.escape(h.get('target_rule', '-'))})."
    )
    return (
        "<h2>Regional aggregators</h2><p>"
        + summary
        + f"</p><table><tr><th></th>{head}</tr>{body}</table>"
    )
