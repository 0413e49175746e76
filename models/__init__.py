"""Load forecasting models.

The numpy-only pieces (spec, scaling, features, ONNX Runtime inference) import eagerly;
the torch pieces load on first use, so the edge agent can import this package without
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedge.models._errors import ModelError
from fedge.models._features import (
    PreparedSite,
    fit_profile,
    prepare_site,
    site_features,
    split_bounds,
    windows,
)
from fedge.models._onnx_runtime import OnnxForecaster, check_onnx_model
from fedge.models._personal import (
    Correction,
    OutputCalibration,
    fit_correction,
    fit_output_calibration,
)
from fedge.models._profile import SiteProfile
from fedge.models._scaling import SiteScaler
from fedge.models._spec import N_TARGETS, ForecastSpec, horizon_steps

if TYPE_CHECKING:
    from fedge.models._forecaster import LoadForecaster, asymmetric_loss
    from fedge.models._onnx_export import export_onnx
    from fedge.models._training import (
        Weights,
        evaluate_loss,
        get_weights,
        predict,
        set_weights,
        train_epochs,
    )

_LAZY = {
    "LoadForecaster": "fedge.models._forecaster",
    "asymmetric_loss": "fedge.models._forecaster",
    "export_onnx": "fedge.models._onnx_export",
    "Weights": "fedge.models._training",
    "get_weights": "fedge.models._training",
    "set_weights": "fedge.models._training",
    "predict": "fedge.models._training",
    "train_epochs": "fedge.models._training",
    "evaluate_loss": "fedge.models._training",
}

__all__ = [
    "N_TARGETS",
    "ForecastSpec",
    "LoadForecaster",
    "Correction",
    "ModelError",
    "OnnxForecaster",
    "OutputCalibration",
    "PreparedSite",
    "SiteProfile",
    "SiteScaler",
    "Weights",
    "asymmetric_loss",
    "check_onnx_model",
    "evaluate_loss",
    "export_onnx",
    "fit_correction",
    "fit_output_calibration",
    "fit_profile",
    "get_weights",
    "horizon_steps",
    "predict",
    "prepare_site",
    "set_weights",
    "site_features",
    "split_bounds",
    "train_epochs",
    "windows",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
