"""The dependency-free core: what several layers share, with numpy at most.

Everything here is imported by more than one of ``fedge.models``, ``fedge.federation``,
``fedge.edge_agent``, ``fedge.decisions``, ``fedge.coordinator`` and ``fedge.simulation``,
so it lives once, below all of them.
"""

from fedge.core._kpi import (
    ANOMALY_DEGRADATION,
    ANOMALY_NAMES,
    ANOMALY_NONE,
    ANOMALY_OUTAGE,
    ANOMALY_SPIKE,
    KPI_BY_NAME,
    KPI_NAMES,
    KPIS,
    TARGET_INDEX,
    TARGET_KPIS,
    Kpi,
)

__all__ = [
    "ANOMALY_DEGRADATION",
    "ANOMALY_NAMES",
    "ANOMALY_NONE",
    "ANOMALY_OUTAGE",
    "ANOMALY_SPIKE",
    "KPIS",
    "KPI_BY_NAME",
    "KPI_NAMES",
    "TARGET_INDEX",
    "TARGET_KPIS",
    "Kpi",
]
