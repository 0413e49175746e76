"""Errors of the simulation harness and its data paths."""

from fedge import FedgeError


class DataError(FedgeError):
    """Telemetry that cannot be used: bad generator settings or a bad import file."""


class SimulationError(FedgeError):
    """A simulation run that cannot start or complete."""


class DecisionError(FedgeError):
    """The decision layer (energy and slice agents) cannot train, load or decide."""


class DecisionInputError(DecisionError):
    """Observations handed to a decision policy have the wrong shape or non-finite values."""


class UnknownSiteError(DecisionError):
    """A decision was asked for a site the service does not know."""


class PolicyError(DecisionError):
    """A policy file or manifest is missing, unreadable or inconsistent."""
