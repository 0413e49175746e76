"""The central service: enrollment, sites, model versions, rounds (``coordinator.api``),
and the decision serving (:class:`DecisionService`: power modes and slice shares from
ONNX policies, without importing torch).

Importing this package does not import fastapi; ``coordinator.api`` does.
"""

from coordinator._access import REQUEST_CONTEXT, sign_request
from coordinator._decisions import DecisionService, StrategicDecision, TacticalDecision
from coordinator._errors import (
    ConflictError,
    CoordinatorError,
    DatabaseError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    SettingsError,
    UnauthenticatedError,
)
from coordinator._schema import DecisionKind, ModelStatus, Role, RoundStatus, SiteState
from coordinator._service import Coordinator
from coordinator._settings import (
    DEV_ADMIN_KEY,
    DEV_KEK,
    CoordinatorSettings,
    Environment,
    load_settings,
)

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
