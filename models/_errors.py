"""Errors of the forecasting models."""

from fedge import FedgeError


class ModelError(FedgeError):
    """A model, spec or artifact that cannot be used as asked."""
