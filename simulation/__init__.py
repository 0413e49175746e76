"""The simulation harness: synthetic or imported site telemetry, runs and reports.

Only the data pieces import eagerly (numpy/pandas); the harness itself (torch, Flower,
Ray) loads when a run starts.
"""

from fedge.core import ANOMALY_NAMES, KPI_NAMES, KPIS, TARGET_INDEX, TARGET_KPIS
from fedge.simulation._archetypes import ARCHETYPE_NAMES, ARCHETYPES
from fedge.simulation._errors import DataError, SimulationError
from fedge.simulation._generator import GeneratorConfig, SiteGenerator
from fedge.simulation._kpi_file import export_kpi_csv, read_kpi_file
from fedge.simulation._series import SiteSeries
from fedge.simulation._source import (
    ArchivedSites,
    GeneratedSites,
    SiteSource,
    archive_sites,
    open_sites,
)

__all__ = [
    "ANOMALY_NAMES",
    "ARCHETYPES",
    "ARCHETYPE_NAMES",
    "KPIS",
    "KPI_NAMES",
    "TARGET_INDEX",
    "TARGET_KPIS",
    "ArchivedSites",
    "DataError",
    "GeneratedSites",
    "GeneratorConfig",
    "SimulationError",
    "SiteGenerator",
    "SiteSeries",
    "SiteSource",
    "archive_sites",
    "export_kpi_csv",
    "open_sites",
    "read_kpi_file",
]
