"""Errors of the coordinator; the API layer turns them into HTTP answers."""

from fedge import FedgeError


class CoordinatorError(FedgeError):
    """Base of the coordinator's own errors."""


class SettingsError(CoordinatorError):
    """Settings that must not be used (a default secret outside development, a bad URL)."""


class DatabaseError(CoordinatorError):
    """The database cannot be reached, migrated or written."""


class NotFoundError(CoordinatorError):
    """The named record does not exist."""


class ConflictError(CoordinatorError):
    """The request clashes with the current state (promote a retired model, ...)."""


class InvalidInputError(CoordinatorError):
    """A request body that parses but cannot be used (not an ONNX file, bad key bytes)."""


class UnauthenticatedError(CoordinatorError):
    """No credentials, or credentials that do not check out (HTTP 401)."""


class ForbiddenError(CoordinatorError):
    """Valid credentials without the role the call needs (HTTP 403)."""


class UnavailableError(CoordinatorError):
    """A service the call needs is not there: not configured, or not reachable (HTTP 503)."""


class NotConfiguredError(UnavailableError):
    """The feature is off because the setting that turns it on is unset; names the setting,
    so an operator reads what to do rather than a bare 404."""

    def __init__(self, feature: str, setting: str, hint: str) -> None:
        super().__init__(f"{feature} is not configured: set {setting} ({hint})")
        self.setting = setting
