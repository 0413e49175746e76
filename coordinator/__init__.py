"""The central service: enrollment, sites, model versions, rounds (``fedge.coordinator.api``),
and the decision serving (``Coordinator.decisions``, a :class:`fedge.decisions.DecisionService`:
power modes and slice shares from ONNX policies, without importing torch).

Importing this package does not import fastapi; ``fedge.coordinator.api`` does.
"""

from fedge.coordinator._errors import (
    ConflictError,
    CoordinatorError,
    DatabaseError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    SettingsError,
    UnauthenticatedError,
)
from fedge.coordinator._schema import DecisionKind, ModelStatus, Role, RoundStatus, SiteState
from fedge.coordinator._service import Coordinator
from fedge.coordinator._settings import (
    DEV_ADMIN_KEY,
    DEV_KEK,
    CoordinatorSettings,
    Environment,
    load_settings,
)
from fedge.core import REQUEST_CONTEXT, sign_request
from fedge.decisions import DecisionService, StrategicDecision, TacticalDecision

__all__ = [
    "DecisionService",
    "StrategicDecision",
    "TacticalDecision",
    # the service
    "Coordinator",
    "CoordinatorSettings",
    "Environment",
    "load_settings",
    "DEV_ADMIN_KEY",
    "DEV_KEK",
    "DecisionKind",
    "ModelStatus",
    "Role",
    "RoundStatus",
    "SiteState",
    "REQUEST_CONTEXT",
    "sign_request",
    # errors
    "CoordinatorError",
    "ConflictError",
    "DatabaseError",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "SettingsError",
    "UnauthenticatedError",
]
