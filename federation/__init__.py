"""Federated training of the forecaster on Flower (Message API).

``fedge.federation.client_app:app`` and ``fedge.federation.server_app:app`` are the Flower
components; :func:`run_rounds` is the round loop both the simulation and a deployment
run.
"""

from fedge.federation._accounting import Ledger, wire_size
from fedge.federation._adversary import ATTACKS, AdversaryPlan
from fedge.federation._codec import (
    CODECS,
    DOWNLINK_CODECS,
    CodecId,
    CodecSchedule,
    CodecSpec,
    decode,
    downlink_spec,
    encode,
    error_bound,
)
from fedge.federation._errors import (
    CodecError,
    CorruptPayloadError,
    FederationError,
    TruncatedPayloadError,
    UpdateRejectedError,
)
from fedge.federation._plan import STRATEGIES, FederationPlan, cosine_lr
from fedge.federation._residual import FEEDBACK_MODES, ResidualStore, compress_with_feedback
from fedge.federation._rounds import FederationOutcome, RoundRecord, initial_weights, run_rounds
from fedge.federation._sealed_strategy import SealedStrategy
from fedge.federation._site_mod import sealed_update_mod

__all__ = [
    "ATTACKS",
    "CODECS",
    "STRATEGIES",
    "AdversaryPlan",
    "CodecError",
    "CodecId",
    "CodecSchedule",
    "DOWNLINK_CODECS",
    "FEEDBACK_MODES",
    "downlink_spec",
    "CodecSpec",
    "CorruptPayloadError",
    "FederationError",
    "Ledger",
    "ResidualStore",
    "SealedStrategy",
    "TruncatedPayloadError",
    "UpdateRejectedError",
    "compress_with_feedback",
    "decode",
    "encode",
    "error_bound",
    "sealed_update_mod",
    "wire_size",
    "FederationOutcome",
    "FederationPlan",
    "RoundRecord",
    "cosine_lr",
    "initial_weights",
    "run_rounds",
]
