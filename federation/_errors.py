"""Errors of the federation layer."""

from fedge import FedgeError


class FederationError(FedgeError):
    """A federation plan, message or round that cannot be used."""
