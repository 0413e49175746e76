"""Federated training of the forecaster on Flower (Message API).

``federation.client_app:app`` and ``federation.server_app:app`` are the Flower
components; :func:`run_rounds` is the round loop both the simulation and a deployment
run.
"""

from federation._errors import FederationError
from federation._plan import STRATEGIES, FederationPlan, cosine_lr
from federation._rounds import FederationOutcome, RoundRecord, initial_weights, run_rounds

__all__ = [
    "STRATEGIES",
    "FederationError",
    "FederationOutcome",
    "FederationPlan",
    "RoundRecord",
    "cosine_lr",
    "initial_weights",
    "run_rounds",
]
