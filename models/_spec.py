"""The forecaster's shape: what goes in, what comes out. Shared by torch, ONNX and the agent."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fedge.models._errors import ModelError

N_KPIS = 5
N_TIME_FEATURES = 4  # sin/cos time of day, sin/cos day of week
N_TARGETS = 3
# Where the targets sit among the KPI features (dl_prb_util, dl_throughput_mbps, active_ues):
# the persistence skip adds their latest scaled values to the network's output.
TARGET_FEATURES: tuple[int, ...] = (0, 2, 3)


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
        if self.beta_under <= 0 or self.beta_over <= 0:
            raise ModelError("loss weights must be positive")

    @property
    def n_features(self) -> int:
        return N_KPIS + N_TIME_FEATURES + self.profile_features

    @property
    def profile_features(self) -> int:
        return N_TARGETS * (self.horizon + 1) if self.site_profile else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForecastSpec:
        try:
            hidden = tuple(int(h) for h in data.get("hidden", (128, 64)))
            return cls(
                lookback=int(data.get("lookback", 12)),
                horizon=int(data.get("horizon", 1)),
                hidden=(hidden[0], hidden[1]) if len(hidden) == 2 else (0, 0),
                beta_under=float(data.get("beta_under", 5.0)),
                beta_over=float(data.get("beta_over", 1.0)),
                # Specs written before the skip or the profile existed describe models without them.
                persistence_skip=bool(data.get("persistence_skip", False)),
                site_profile=bool(data.get("site_profile", False)),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"bad forecast spec {data!r}: {exc}") from exc
