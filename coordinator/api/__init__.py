"""The coordinator's HTTP API (FastAPI), versioned under ``/api/v1``."""

from coordinator.api._app import Metrics, create_app

__all__ = ["Metrics", "create_app"]
