"""The operator's web dashboard at ``/ui``: server-rendered pages over the coordinator's
service layer, with the API's roles, a signed session cookie and CSRF tokens; every asset
(templates, htmx) ships in the package, so it works offline."""

from fedge.coordinator.dashboard._routes import NEEDS, mount, router
from fedge.coordinator.dashboard._session import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    CsrfError,
    DashboardSession,
    SessionError,
    SessionSigner,
)
from fedge.coordinator.dashboard._views import LATE_SECONDS, OFFLINE_SECONDS, Liveness

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LATE_SECONDS",
    "LOGIN_COOKIE",
    "NEEDS",
    "OFFLINE_SECONDS",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "CsrfError",
    "DashboardSession",
    "Liveness",
    "SessionError",
    "SessionSigner",
    "mount",
    "router",
]
