"""The coordinator's HTTP API (FastAPI), versioned under ``/api/v1``."""

from fedge.coordinator.api._app import (
    ENV_FILE_VARIABLE,
    LOG_FORMAT_VARIABLE,
    Metrics,
    create_app,
    worker_app,
)

__all__ = ["ENV_FILE_VARIABLE", "LOG_FORMAT_VARIABLE", "Metrics", "create_app", "worker_app"]
