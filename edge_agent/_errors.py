# ruff: noqa: N818 - ModelRejected/KpiRejected read as verdicts
"""The agent's error family: one flat level under ``AgentError`` (itself a ``FedgeError``)."""

from __future__ import annotations

from fedge import FedgeError


class AgentError(FedgeError):
    """Base class of every error the edge agent raises on purpose."""


class ConfigError(AgentError):
    """``agent.toml`` is unreadable or a setting is invalid; the message names the key."""


class BrokerError(AgentError):
    """The MQTT broker cannot be reached, refuses us, or the TLS setup is unusable."""


class StoreError(AgentError):
    """The local SQLite store cannot be opened, written or queried."""


class ModelRejected(AgentError):
    """A candidate model was not put into service; the message says why."""


class KpiRejected(AgentError):
    """A KPI message failed validation; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SupervisorError(AgentError):
    """The ``flower-supernode`` binary cannot be found or started."""


class ActionRejected(AgentError):
    """An action from the coordinator was refused; the subclass names why. The action in
    force stays in force."""


class ActionSignatureError(ActionRejected):
    """The coordinator's signature over the action's body did not verify."""


class ActionFormatError(ActionRejected):
    """The action's body is not the JSON docs/live-loop.md defines (or too large)."""


class ActionSiteError(ActionRejected):
    """The action is addressed to another site."""


class ActionExpiredError(ActionRejected):
    """The action's ``valid_until`` is in the past."""


class ActionReplayError(ActionRejected):
    """The action is not newer than the last accepted one (a replay or a reordering)."""
