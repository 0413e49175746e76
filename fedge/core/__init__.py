"""The dependency-free core: what several layers share, with numpy at most.

Everything here is used by more than one of ``fedge.models``, ``fedge.federation``,
``fedge.edge_agent``, ``fedge.decisions``, ``fedge.coordinator`` and ``fedge.simulation``,
so it lives once, below all of them: the KPI schema, the calendar, the model bundle, the
signed site request and the HTTP headers, the power modes and the policy manifest.
"""

from fedge.core._agent_store import AgentStoreError, StoredCell, read_cell, stored_cells
from fedge.core._bundle import BUNDLE_MAGIC, ModelBundle
from fedge.core._client import ApiError, CoordinatorClient, CoordinatorUnreachable, SiteClient
from fedge.core._errors import BundleError, CoreError, ManifestError, SiteRequestError
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
from fedge.core._logs import LogFormat, configure_logging, log_fields
from fedge.core._manifest import (
    ENERGY_ONNX,
    ENERGY_OUTPUTS,
    MANIFEST,
    MANIFEST_FORMAT,
    OBS_INPUT,
    SLICE_ONNX,
    SLICE_OUTPUT,
    PolicyFile,
    PolicyManifest,
    policy_version,
)
from fedge.core._modes import POWER_MODES, UnknownModeError, mode_index
from fedge.core._pm import (
    PM_COUNTERS,
    PM_NAMESPACE,
    PmCell,
    PmError,
    PmImport,
    read_pm_folder,
    write_pm_file,
)
from fedge.core._time import (
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    TIME_FEATURE_NAMES,
    datetime_minute_of_week,
    day_type,
    minute_of_week,
    step_minute_of_week,
    step_of_day,
    time_features,
)
from fedge.core._wire import (
    ACTION_CONTEXT,
    NONCE_HEADER,
    REQUEST_CONTEXT,
    RUN_TOKEN_HEADER,
    SIGNATURE_HEADER,
    SITE_HEADER,
    TIMESTAMP_HEADER,
    RequestSigner,
    SiteRequest,
    parse_site_request,
    request_message,
    sign_request,
)

__all__ = [
    # log lines
    "LogFormat",
    "configure_logging",
    "log_fields",
    # KPI schema
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
    # 3GPP PM files (TS 32.435 measCollecFile)
    "PM_COUNTERS",
    "PM_NAMESPACE",
    "PmCell",
    "PmError",
    "PmImport",
    "read_pm_folder",
    "write_pm_file",
    # calendar
    "MINUTES_PER_DAY",
    "MINUTES_PER_WEEK",
    "TIME_FEATURE_NAMES",
    "datetime_minute_of_week",
    "day_type",
    "minute_of_week",
    "step_minute_of_week",
    "step_of_day",
    "time_features",
    # model bundle
    "BUNDLE_MAGIC",
    "AgentStoreError",
    "StoredCell",
    "read_cell",
    "stored_cells",
    "ModelBundle",
    # site requests and headers
    "NONCE_HEADER",
    "ACTION_CONTEXT",
    "REQUEST_CONTEXT",
    "RUN_TOKEN_HEADER",
    "SIGNATURE_HEADER",
    "SITE_HEADER",
    "TIMESTAMP_HEADER",
    "RequestSigner",
    "SiteClient",
    "SiteRequest",
    "parse_site_request",
    "request_message",
    "sign_request",
    # power modes
    "POWER_MODES",
    "UnknownModeError",
    "mode_index",
    # policy manifest
    "ENERGY_ONNX",
    "ENERGY_OUTPUTS",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "OBS_INPUT",
    "SLICE_ONNX",
    "SLICE_OUTPUT",
    "PolicyFile",
    "PolicyManifest",
    "policy_version",
    # the coordinator's API
    "ApiError",
    "CoordinatorClient",
    "CoordinatorUnreachable",
    # errors
    "BundleError",
    "CoreError",
    "ManifestError",
    "SiteRequestError",
]
