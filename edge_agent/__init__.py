"""The gNB edge agent: MQTT KPI ingestion, ONNX Runtime forecasts and anomaly alerts, a
durable SQLite store, shadow-gated model swaps, and a supervised Flower SuperNode.

Importing this package never imports torch, ray, fastapi or flwr (see docs/agent.md).

Names load on first use, so ``fedge agent --help`` or a role that needs one module does
not pay for the whole agent (numpy, ONNX Runtime, paho).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedge.edge_agent._actions import Action, ActionLog, ActionPoller, verify_action
    from fedge.edge_agent._agent import Agent
    from fedge.edge_agent._alert_score import (
        AlertEventScore,
        AlertScoreError,
        score_alert_events,
        total_alert_score,
    )
    from fedge.edge_agent._anomaly import Alert, KpiDeviation, ResidualDetector
    from fedge.edge_agent._broker import Inbound, Link, MqttLink, backoff_delay, falls_back, probe
    from fedge.edge_agent._config import (
        AgentConfig,
        AnomalyConfig,
        BrokerConfig,
        CoordinatorConfig,
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
        ActionExpiredError,
        ActionFormatError,
        ActionRejected,
        ActionReplayError,
        ActionSignatureError,
        ActionSiteError,
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
    from fedge.edge_agent._opener import ModelOpener
    from fedge.edge_agent._store import (
        ForecastRow,
        ModelRecord,
        Store,
        read_cell_series,
        stored_cells,
    )
    from fedge.edge_agent._supernode import SupernodeSupervisor, resolve_binary, supernode_command
    from fedge.edge_agent._uplink import Uplink

_LAZY = {
    "Action": "fedge.edge_agent._actions",
    "ActionLog": "fedge.edge_agent._actions",
    "ActionPoller": "fedge.edge_agent._actions",
    "verify_action": "fedge.edge_agent._actions",
    "ActionExpiredError": "fedge.edge_agent._errors",
    "ActionFormatError": "fedge.edge_agent._errors",
    "ActionRejected": "fedge.edge_agent._errors",
    "ActionReplayError": "fedge.edge_agent._errors",
    "ActionSignatureError": "fedge.edge_agent._errors",
    "ActionSiteError": "fedge.edge_agent._errors",
    "Agent": "fedge.edge_agent._agent",
    "ModelOpener": "fedge.edge_agent._opener",
    "AlertEventScore": "fedge.edge_agent._alert_score",
    "AlertScoreError": "fedge.edge_agent._alert_score",
    "score_alert_events": "fedge.edge_agent._alert_score",
    "total_alert_score": "fedge.edge_agent._alert_score",
    "Alert": "fedge.edge_agent._anomaly",
    "KpiDeviation": "fedge.edge_agent._anomaly",
    "ResidualDetector": "fedge.edge_agent._anomaly",
    "Inbound": "fedge.edge_agent._broker",
    "Link": "fedge.edge_agent._broker",
    "MqttLink": "fedge.edge_agent._broker",
    "backoff_delay": "fedge.edge_agent._broker",
    "falls_back": "fedge.edge_agent._broker",
    "probe": "fedge.edge_agent._broker",
    "AgentConfig": "fedge.edge_agent._config",
    "AnomalyConfig": "fedge.edge_agent._config",
    "BrokerConfig": "fedge.edge_agent._config",
    "CoordinatorConfig": "fedge.edge_agent._config",
    "FederationConfig": "fedge.edge_agent._config",
    "IngestConfig": "fedge.edge_agent._config",
    "MetricsConfig": "fedge.edge_agent._config",
    "ModelConfig": "fedge.edge_agent._config",
    "SecurityConfig": "fedge.edge_agent._config",
    "StoreConfig": "fedge.edge_agent._config",
    "TlsConfig": "fedge.edge_agent._config",
    "load_config": "fedge.edge_agent._config",
    "parse_config": "fedge.edge_agent._config",
    "AgentError": "fedge.edge_agent._errors",
    "BrokerError": "fedge.edge_agent._errors",
    "ConfigError": "fedge.edge_agent._errors",
    "KpiRejected": "fedge.edge_agent._errors",
    "ModelRejected": "fedge.edge_agent._errors",
    "StoreError": "fedge.edge_agent._errors",
    "SupervisorError": "fedge.edge_agent._errors",
    "ForecastEngine": "fedge.edge_agent._forecast",
    "Serving": "fedge.edge_agent._forecast",
    "shadow_score": "fedge.edge_agent._forecast",
    "KpiSample": "fedge.edge_agent._kpi",
    "OrderGuard": "fedge.edge_agent._kpi",
    "Reason": "fedge.edge_agent._kpi",
    "parse_kpi": "fedge.edge_agent._kpi",
    "ModelManager": "fedge.edge_agent._lifecycle",
    "Verdict": "fedge.edge_agent._lifecycle",
    "rollback": "fedge.edge_agent._lifecycle",
    "ForecastRow": "fedge.edge_agent._store",
    "ModelRecord": "fedge.edge_agent._store",
    "Store": "fedge.edge_agent._store",
    "read_cell_series": "fedge.edge_agent._store",
    "stored_cells": "fedge.edge_agent._store",
    "SupernodeSupervisor": "fedge.edge_agent._supernode",
    "resolve_binary": "fedge.edge_agent._supernode",
    "supernode_command": "fedge.edge_agent._supernode",
    "Uplink": "fedge.edge_agent._uplink",
}

__all__ = [
    "Action",
    "ActionExpiredError",
    "ActionFormatError",
    "ActionLog",
    "ActionPoller",
    "ActionRejected",
    "ActionReplayError",
    "ActionSignatureError",
    "ActionSiteError",
    "verify_action",
    "Agent",
    "AgentConfig",
    "AgentError",
    "Alert",
    "AlertEventScore",
    "AlertScoreError",
    "AnomalyConfig",
    "BrokerConfig",
    "BrokerError",
    "ConfigError",
    "CoordinatorConfig",
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
    "Uplink",
    "backoff_delay",
    "falls_back",
    "load_config",
    "parse_config",
    "parse_kpi",
    "probe",
    "read_cell_series",
    "resolve_binary",
    "rollback",
    "score_alert_events",
    "shadow_score",
    "stored_cells",
    "supernode_command",
    "total_alert_score",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedge.edge_agent' has no attribute {name!r}")
