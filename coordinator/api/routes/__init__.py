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
    rollouts,
    rounds,
    runs,
    site,
    site_actions,
    site_health,
    site_keys,
    site_model,
    sites,
    topology,
)

ROUTERS = [
    health.router,
    enrollment.router,
    sites.router,
    models.router,
    site.router,
    site_health.router,
    site_model.router,
    site_actions.router,
    site_keys.router,
    rollouts.router,
    topology.router,
    rounds.router,
    runs.router,
    runs.retraining,
    forecasts.router,
    keys.router,
    audit.router,
]

__all__ = ["ROUTERS", "decisions", "runs"]
