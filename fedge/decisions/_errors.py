"""The decision layer's error family: one flat level under ``DecisionError``."""

from fedge import FedgeError


class DecisionError(FedgeError):
    """The decision layer (energy and slice agents) cannot train, load or decide."""


class DecisionInputError(DecisionError):
    """Observations handed to a decision policy have the wrong shape or non-finite values."""


class UnknownSiteError(DecisionError):
    """A decision was asked for a site the service does not know."""


class PolicyError(DecisionError):
    """A policy file or manifest is missing, unreadable or inconsistent."""
