"""The decision runtime: observations, the power model and serving, without torch.

What training (``fedge.simulation``) and serving (``fedge.coordinator``) must agree on
lives here once: the arrays the agents see, the energy and slice observation builders,
how slice margins become PRB shares, the carrier power models (EARTH, TR 38.864), the policy service (ONNX
Runtime) and the errors. Environments and training stay with the simulation, on top.
"""

from fedge.decisions._data import (
    DECISION_STEPS,
    DEFAULT_HEADROOM,
    HOUR_STEPS,
    DecisionData,
    check_headroom,
    make_clusters,
)
from fedge.decisions._energy import (
    ASLEEP,
    CAPACITY,
    ENERGY_OBS_DIM,
    ENERGY_OBS_NAMES,
    MODES,
    OFFLOAD_EFFICIENCY,
    PREV_GROUP,
    energy_obs,
)
from fedge.decisions._errors import (
    DecisionError,
    DecisionInputError,
    PolicyError,
    UnknownSiteError,
)
from fedge.decisions._power import (
    ACTIVE,
    CAP_OFF,
    CARRIER_STATES,
    EARTH_MACRO,
    LIGHT,
    MICRO,
    POWER_MODELS,
    SLEEP,
    TR38864,
    CarrierPower,
    PowerModel,
    TR38864Model,
    feasible_modes,
    power_model,
)
from fedge.decisions._service import DecisionService, StrategicDecision, TacticalDecision
from fedge.decisions._slices import (
    ACTION_DIM,
    BASE_FLOOR,
    EMBB,
    MARGIN_RANGE,
    MMTC,
    SHARE_NAMES,
    SHARES_DIM,
    SLICE_OBS_DIM,
    SLICE_OBS_NAMES,
    SLICES,
    URLLC,
    URLLC_HEADROOM,
    SliceContext,
    expected_requirement,
    fit_carrier,
    shares_from_action,
    slice_obs,
)

__all__ = [
    # data and observations
    "DECISION_STEPS",
    "DEFAULT_HEADROOM",
    "HOUR_STEPS",
    "DecisionData",
    "check_headroom",
    "make_clusters",
    "ACTIVE",
    "ASLEEP",
    "CAP_OFF",
    "CAPACITY",
    "ENERGY_OBS_DIM",
    "ENERGY_OBS_NAMES",
    "LIGHT",
    "MICRO",
    "MODES",
    "OFFLOAD_EFFICIENCY",
    "PREV_GROUP",
    "SLEEP",
    "energy_obs",
    "ACTION_DIM",
    "BASE_FLOOR",
    "EMBB",
    "MARGIN_RANGE",
    "MMTC",
    "SHARE_NAMES",
    "SHARES_DIM",
    "SLICE_OBS_DIM",
    "SLICE_OBS_NAMES",
    "SLICES",
    "URLLC",
    "URLLC_HEADROOM",
    "SliceContext",
    "expected_requirement",
    "fit_carrier",
    "shares_from_action",
    "slice_obs",
    # power
    "CARRIER_STATES",
    "EARTH_MACRO",
    "POWER_MODELS",
    "TR38864",
    "CarrierPower",
    "PowerModel",
    "TR38864Model",
    "feasible_modes",
    "power_model",
    # serving
    "DecisionService",
    "StrategicDecision",
    "TacticalDecision",
    # errors
    "DecisionError",
    "DecisionInputError",
    "PolicyError",
    "UnknownSiteError",
]
