"""The operator's web dashboard at ``/ui``: server-rendered pages over the coordinator's
service layer, with the API's roles, a signed session cookie and CSRF tokens; every asset
(templates, htmx) ships in the package, so it works offline."""

from fedge.coordinator.dashboard._routes import NEEDS, mount, router
from fedge.coordinator.dashboard._session import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    CsrfError,
    DashboardSession,
    SessionError,
    SessionSigner,
)
from fedge.coordinator.dashboard._views import Liveness

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_COOKIE",
    "NEEDS",
    "SESSION_COOKIE",
    "CsrfError",
    "DashboardSession",
    "Liveness",
    "SessionError",
    "SessionSigner",
    "mount",
    "router",
]
