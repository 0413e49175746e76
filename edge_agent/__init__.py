"""The gNB edge agent: MQTT KPI ingestion, ONNX Runtime forecasts and anomaly alerts, a
durable SQLite store, shadow-gated model swaps, and a supervised Flower SuperNode.

Importing this package never imports torch, ray, fastapi or flwr (see docs/agent.md).
"""

from fedge.edge_agent._agent import Agent, ModelOpener
from fedge.edge_agent._anomaly import Alert, KpiDeviation, ResidualDetector
from fedge.edge_agent._broker import Inbound, Link, MqttLink, backoff_delay, falls_back, probe
from fedge.edge_agent._config import (
    AgentConfig,
    AnomalyConfig,
    BrokerConfig,
    FederationConfig,
    IngestConfig,
    MetricsConfig,
    ModelConfig,
    SecurityConfig,
    StoreConfig,
    TlsConfig,
    load_config,
    parse_config,
)
from fedge.edge_agent._errors import (
    AgentError,
    BrokerError,
    ConfigError,
    KpiRejected,
    ModelRejected,
    StoreError,
    SupervisorError,
)
from fedge.edge_agent._forecast import ForecastEngine, Serving, shadow_score
from fedge.edge_agent._kpi import KpiSample, OrderGuard, Reason, parse_kpi
from fedge.edge_agent._lifecycle import ModelManager, Verdict, rollback
from fedge.edge_agent._store import ForecastRow, ModelRecord, Store, read_cell_series, stored_cells
from fedge.edge_agent._supernode import SupernodeSupervisor, resolve_binary, supernode_command

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "Alert",
    "AnomalyConfig",
    "BrokerConfig",
    "BrokerError",
    "ConfigError",
    "Verdict",
    "FederationConfig",
    "ForecastEngine",
    "ForecastRow",
    "Inbound",
    "IngestConfig",
    "KpiDeviation",
    "KpiRejected",
    "KpiSample",
    "Link",
    "MetricsConfig",
    "ModelConfig",
    "ModelManager",
    "ModelOpener",
    "ModelRecord",
    "ModelRejected",
    "MqttLink",
    "OrderGuard",
    "Reason",
    "ResidualDetector",
    "SecurityConfig",
    "Serving",
    "Store",
    "StoreConfig",
    "StoreError",
    "SupernodeSupervisor",
    "SupervisorError",
    "TlsConfig",
    "backoff_delay",
    "falls_back",
    "load_config",
    "parse_config",
    "parse_kpi",
    "probe",
    "read_cell_series",
    "resolve_binary",
    "rollback",
    "shadow_score",
    "stored_cells",
    "supernode_command",
]
