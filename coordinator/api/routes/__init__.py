"""One module per resource; ``ROUTERS`` is what the app always mounts (``decisions``
only when policies are configured, ``runs.control`` only when a SuperLink is)."""

from fedge.coordinator.api.routes import (
    audit,
    decisions,
    enrollment,
    forecasts,
    health,
    keys,
    models,
    rounds,
    runs,
    site,
    sites,
)

ROUTERS = [
    health.router,
    enrollment.router,
    sites.router,
    models.router,
    site.router,
    rounds.router,
    runs.router,
    forecasts.router,
    keys.router,
    audit.router,
]

__all__ = ["ROUTERS", "decisions", "runs"]
