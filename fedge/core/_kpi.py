"""The KPI schema: the KPIs fedge knows, their units and valid ranges, and the forecast targets.

The one home of these names for every layer (generator, import, models, agent, coordinator)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kpi:
    name: str
    unit: str
    low: float
    high: float | None  # None: unbounded above
    description: str


KPIS: tuple[Kpi, ...] = (
    Kpi("dl_prb_util", "%", 0.0, 100.0, "downlink PRB utilisation"),
    Kpi("ul_prb_util", "%", 0.0, 100.0, "uplink PRB utilisation"),
    Kpi("dl_throughput_mbps", "Mbit/s", 0.0, None, "downlink cell throughput"),
    Kpi("active_ues", "UEs", 0.0, None, "active (RRC-connected) UEs"),
    Kpi("cpu_util", "%", 0.0, 100.0, "gNB host CPU utilisation"),
)
KPI_NAMES: tuple[str, ...] = tuple(k.name for k in KPIS)
# What the forecaster predicts: the capacity-planning KPIs.
TARGET_KPIS: tuple[str, ...] = ("dl_prb_util", "dl_throughput_mbps", "active_ues")
TARGET_INDEX: tuple[int, ...] = tuple(KPI_NAMES.index(k) for k in TARGET_KPIS)
KPI_BY_NAME: dict[str, Kpi] = {k.name: k for k in KPIS}

ANOMALY_NONE = 0
ANOMALY_OUTAGE = 1
ANOMALY_SPIKE = 2
ANOMALY_DEGRADATION = 3
ANOMALY_NAMES: dict[int, str] = {
    ANOMALY_NONE: "none",
    ANOMALY_OUTAGE: "outage",
    ANOMALY_SPIKE: "spike",
    ANOMALY_DEGRADATION: "degradation",
}
