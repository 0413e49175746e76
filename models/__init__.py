"""Load forecasting models.

The numpy-only pieces (spec, scaling, features, ONNX Runtime inference) import eagerly;
the torch pieces load on first use, so the edge agent can import this package without
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models._errors import ModelError
from models._features import (
    PreparedSite,
    fit_profile,
    prepare_site,
    site_features,
    split_bounds,
    time_features,
    windows,
)
from models._onnx_runtime import OnnxForecaster
from models._profile import SiteProfile
from models._scaling import SiteScaler
from models._spec import N_TARGETS, TARGET_FEATURES, ForecastSpec

if TYPE_CHECKING:
    from models._forecaster import LoadForecaster, asymmetric_loss
    from models._onnx_export import export_onnx
    from models._training import Weights, get_weights, predict, set_weights, train_epochs

_LAZY = {
    "LoadForecaster": "models._forecaster",
    "asymmetric_loss": "models._forecaster",
    "export_onnx": "models._onnx_export",
    "Weights": "models._training",
    "get_weights": "models._training",
    "set_weights": "models._training",
    "predict": "models._training",
    "train_epochs": "models._training",
}

__all__ = [
    "N_TARGETS",
    "TARGET_FEATURES",
    "ForecastSpec",
    "LoadForecaster",
    "ModelError",
    "OnnxForecaster",
    "PreparedSite",
    "SiteProfile",
    "SiteScaler",
    "Weights",
    "asymmetric_loss",
    "export_onnx",
    "fit_profile",
    "get_weights",
    "predict",
    "prepare_site",
    "set_weights",
    "site_features",
    "split_bounds",
    "time_features",
    "train_epochs",
    "windows",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
