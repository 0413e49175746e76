"""``fedge simulate``'s terminal lines under the table: the compression, attack and
decision results of report.json, and nothing when the run computed none."""

from __future__ import annotations

from typing import Any

from fedge.simulation._report import console_results


def _report() -> dict[str, Any]:
    """The parts of a report.json with ``--codec int8 --sweep ... --decisions`` (the keys
    ``fedge.simulation._comm`` and ``_decisions`` write)."""
    comm = {"codec": "int8", "bytes_per_update_mean": 29876.4, "compression_ratio": 3.9,
            "bytes_up_total": 478022, "bytes_down_total": 960000}  # fmt: skip
    security = {"updates_sealed": 16, "accepted": 15, "rejected": {"stale": 1}}
    return {
        "comm_by_method": {"fedavg": {"comm": comm, "security": security}},
        "comm_sweep": [
            {"codec": "fp32", "rmse": 0.0521, "bytes_per_update_mean": 116000.0},
            {"codec": "int8", "rmse": 0.0523, "bytes_per_update_mean": 29876.4},
            {"codec": "int4", "rmse": 0.0601, "bytes_per_update_mean": 30100.0},
        ],
        "adversarial": {"methods": {"fedavg": {"rmse": 0.09, "clean_rmse": 0.06}}},
        "decisions": {
            "energy": {
                "dqn": {"energy_saved_pct": 21.34, "qos_violation_rate": 0.0123},
                "always_on": {"energy_saved_pct": 0.0, "qos_violation_rate": 0.0},
            },
            "slices": {"ppo": {"sla_satisfaction": 0.9876, "reserved_prb_pct": 61.2}},
            "latency_us": {"p50": 180, "p99": 420},
        },
    }


def test_the_lines_give_each_computed_result() -> None:
    updates, sweep, attack, energy, slices, latency = console_results(_report())
    assert updates == (
        "fedavg updates: codec int8, 29,876 B/update (3.9x smaller than fp32), up 478,022 B, "
        "down 960,000 B; 16 sealed, 15 accepted, rejected: stale 1"
    )
    # int4 is dominated by int8 (more bytes, higher RMSE): off the front
    assert sweep == (
        "codec sweep (RMSE at B/update): fp32* 0.0521 at 116,000, int8* 0.0523 at 29,876, "
        "int4 0.0601 at 30,100  (* on the Pareto front)"
    )
    assert attack == "fedavg under attack: RMSE 0.0900 (clean 0.0600, x1.500)"
    assert energy == "energy saved (QoS violations): dqn 21.3% (1.23%), always_on 0.0% (0.00%)"
    assert slices == "slice SLA met (PRBs reserved): ppo 98.76% (61.2%)"
    assert latency == "one site's decision: p50 180 µs, p99 420 µs"


def test_a_plain_run_adds_no_line() -> None:
    assert console_results({"forecast": {"methods": {}}}) == []
