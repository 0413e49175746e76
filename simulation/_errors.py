"""Errors of the simulation harness and its data paths."""

from fedge import FedgeError


class DataError(FedgeError):
    """Telemetry that cannot be used: bad generator settings or a bad import file."""


class SimulationError(FedgeError):
    """A simulation run that cannot start or complete."""
