"""Federated training of the forecaster on Flower (Message API).

``fedge.federation.client_app:app`` and ``fedge.federation.server_app:app`` are the
deployed Flower components; :func:`run_rounds` is the round loop both the simulation and
a deployment run, and :func:`site_app` builds a ClientApp around a :class:`Site` (the
simulation builds its own). Keys come from the coordinator's per-run export
(:func:`export_run_keys`, :func:`load_run_keys`) and from each node's own config.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedge.federation._accounting import Ledger, wire_size
from fedge.federation._codec import (
    CODECS,
    DOWNLINK_CODECS,
    Arrays,
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
from fedge.federation._introduce import BoundGrid, Introducer
from fedge.federation._keys import (
    KEY_DIRECTORY,
    NodeSetup,
    ServerKeys,
    export_run_keys,
    load_run_keys,
    node_setup,
)
from fedge.federation._plan import STRATEGIES, FederationPlan, cosine_lr
from fedge.federation._regional import Hierarchy, RegionalStrategy, RegionMap
from fedge.federation._residual import FEEDBACK_MODES, ResidualStore, compress_with_feedback
from fedge.federation._sealed_strategy import SealedStrategy
from fedge.federation._site_mod import Site, SiteResolver, Uplink, sealed_mod

if TYPE_CHECKING:
    from fedge.federation._rounds import (
        FederationOutcome,
        RoundRecord,
        initial_weights,
        run_rounds,
    )
    from fedge.federation._site_app import site_app

#: The round loop and the site app train and score with torch: they load on first use, so
#: the coordinator's API (plans, key exports) never loads torch.
_LAZY = {
    "FederationOutcome": "fedge.federation._rounds",
    "RoundRecord": "fedge.federation._rounds",
    "initial_weights": "fedge.federation._rounds",
    "run_rounds": "fedge.federation._rounds",
    "site_app": "fedge.federation._site_app",
}

__all__ = [
    "CODECS",
    "KEY_DIRECTORY",
    "STRATEGIES",
    "Arrays",
    "BoundGrid",
    "Introducer",
    "NodeSetup",
    "ServerKeys",
    "Site",
    "SiteResolver",
    "Uplink",
    "export_run_keys",
    "load_run_keys",
    "node_setup",
    "sealed_mod",
    "site_app",
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
    "wire_size",
    "FederationOutcome",
    "Hierarchy",
    "RegionMap",
    "RegionalStrategy",
    "FederationPlan",
    "RoundRecord",
    "cosine_lr",
    "initial_weights",
    "run_rounds",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedge.federation' has no attribute {name!r}")
