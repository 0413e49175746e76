"""What every versioned router shares: the prefix and the documented error answers."""

from typing import Any, Final

from fedge.coordinator.api._bodies import Problem

PREFIX: Final = "/api/v1"

ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": Problem, "description": "No valid credentials."},
    403: {"model": Problem, "description": "The credentials lack the role this call needs."},
    413: {
        "model": Problem,
        "description": "The body is over the route's limit (``setting`` names the limit).",
    },
    429: {
        "model": Problem,
        "description": "This client was refused too often; retry after ``Retry-After`` s.",
    },
}
