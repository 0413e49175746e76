"""The forecaster's shape: what goes in, what comes out. Shared by torch, ONNX and the agent."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fedge.core import KPI_NAMES, TARGET_KPIS, TIME_FEATURE_NAMES
from fedge.models._errors import ModelError

# The input layout: every KPI of the schema, then the time encodings (fedge.core).
N_KPIS = len(KPI_NAMES)
N_TIME_FEATURES = len(TIME_FEATURE_NAMES)
N_TARGETS = len(TARGET_KPIS)


@dataclass(frozen=True)
class ForecastSpec:
    lookback: int = 12
    horizon: int = 1
    hidden: tuple[int, int] = (128, 64)
    beta_under: float = 5.0
    beta_over: float = 1.0
    # Forecast the change from the latest observation rather than the level: at short
    # horizons persistence is a strong prior, and every method (local, federated, pooled)
    # starts from it instead of having to learn it.
    persistence_skip: bool = True
    # Feed the site's own mean weekday/weekend shape (models._profile) now and over the
    # horizon, so one shared model can tell a business district from a housing estate.
    site_profile: bool = True

    def __post_init__(self) -> None:
        if self.lookback < 1:
            raise ModelError(f"lookback must be >= 1, got {self.lookback}")
        if self.horizon < 1:
            raise ModelError(f"horizon must be >= 1, got {self.horizon}")
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ModelError(f"hidden must be two positive sizes, got {self.hidden}")
        if not all(0 < b < math.inf for b in (self.beta_under, self.beta_over)):
            raise ModelError("loss weights must be positive and finite")

    @property
    def n_features(self) -> int:
        return N_KPIS + N_TIME_FEATURES + self.profile_features

    @property
    def profile_features(self) -> int:
        return N_TARGETS * (self.horizon + 1) if self.site_profile else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> ForecastSpec:
        """A spec from JSON-like ``data``: fields it leaves out keep this class's defaults,
        so a partial spec (``{"horizon": 3}``) still gets the current forecaster; a field
        this class does not have is refused rather than silently ignored."""
        if not isinstance(data, dict):
            raise ModelError(f"a forecast spec is a JSON object, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in cls.__dataclass_fields__)
        if unknown:
            raise ModelError(
                f"unknown forecast spec field(s) {', '.join(unknown)}; "
                f"known: {', '.join(cls.__dataclass_fields__)}"
            )
        default = cls()
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kwargs[name] = _typed(name, value, getattr(default, name))
        try:
            return cls(**kwargs)
        except ModelError as exc:
            raise ModelError(f"forecast spec: {exc}") from exc


def horizon_steps(horizon_minutes: int, step_minutes: int) -> int:
    """A horizon given in minutes as a number of ``step_minutes`` steps.

    Operators think in minutes (a 15-minute decision interval, an hour ahead); the model
    counts steps, and sites' steps differ (5 min generated, 2 min on some exports). A
    horizon that falls between steps, or is shorter than one, has no honest meaning.
    """
    for name, v in (("horizon_minutes", horizon_minutes), ("step_minutes", step_minutes)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ModelError(f"{name} must be a whole number of minutes, got {v!r}")
    if step_minutes < 1:
        raise ModelError(f"step_minutes must be >= 1, got {step_minutes}")
    if horizon_minutes < step_minutes:
        raise ModelError(
            f"a horizon of {horizon_minutes} min is shorter than one {step_minutes}-min step"
        )
    if horizon_minutes % step_minutes:
        raise ModelError(
            f"a horizon of {horizon_minutes} min is not a whole number of {step_minutes}-min steps"
        )
    return horizon_minutes // step_minutes


def _typed(name: str, value: object, default: object) -> object:
    """``value`` as the type of ``default``; JSON's int, float and bool are not mixed up."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ModelError(f"forecast spec {name} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ModelError(f"forecast spec {name} must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ModelError(f"forecast spec {name} must be a number, got {value!r}")
    # hidden: two layer sizes
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise ModelError(f"forecast spec {name} must be a list of integers, got {value!r}")
