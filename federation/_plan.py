"""What a federated run does, in one record that travels to every site with each round."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fedge.federation._errors import FederationError
from fedge.models import ForecastSpec

#: Fields only the simulation harness uses; never sent to sites.
SIMULATION_ONLY = ("attacks", "state_dir")
MAX_ROUND_TIMEOUT = 86_400.0  # a day: past that a round is lost, not slow
MAX_MIN_NODES = 100_000
STRATEGIES = ("fedavg", "fedprox", "fedtrimmedavg", "fedmedian", "krum", "fedavgm")


@dataclass(frozen=True)
class FederationPlan:
    data_spec: str  # JSON: how each worker opens the sites (see simulation.open_sites)
    strategy: str = "fedavg"
    num_rounds: int = 10
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    local_epochs: float = 1.0  # passes over the site's windows per round; may be fractional
    batch_size: int = 64
    learning_rate: float = 1e-3
    proximal_mu: float = 0.01
    seed: int = 0
    val_days: int = 2
    test_days: int = 3
    forecast: ForecastSpec = field(default_factory=ForecastSpec)
    # Compressed, sealed updates (docs/compression.md); "none": plain Flower messages.
    codec: str = "none"
    downlink_codec: str = "int8"  # the sealed global model sent down (dense codecs only)
    residual_decay: float = 1.0  # error-feedback residual x decay**missed_rounds
    feedback: str = "tracked"  # error feedback: "tracked" (EF21) or "residual" (classic)
    attacks: str = ""  # simulation only: AdversaryPlan JSON (the harness's, never sent)
    state_dir: str = ""  # simulation only: where the harness keeps its sites' state
    trim_beta: float = 0.2  # fedtrimmedavg: fraction cut at each end
    krum_malicious: int = 2  # krum: assumed number of malicious sites
    server_momentum: float = 0.9  # fedavgm: momentum of the server's update
    # Each round waits at most this long for its nodes (to appear, prove their site, and
    # answer); fewer than min_nodes by then and the run fails, saying how many came.
    round_timeout: float = 600.0
    min_nodes: int = 1
    # Regional aggregators (docs/hierarchy.md): 0 is flat; K sends each site's update to
    # its region and one sealed update per region to the coordinator, compressed with
    # ``region_codec`` ("" = the sites' codec of the round).
    regions: int = 0
    region_codec: str = ""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise FederationError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.num_rounds < 1:
            raise FederationError(f"num_rounds must be >= 1, got {self.num_rounds}")
        for name in ("fraction_train", "fraction_evaluate"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise FederationError(f"{name} must be in (0, 1], got {v}")
        if not (self.local_epochs > 0 and math.isfinite(self.local_epochs)):
            raise FederationError(f"local_epochs must be positive, got {self.local_epochs}")
        if self.batch_size < 1:
            raise FederationError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise FederationError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.proximal_mu < 0:
            raise FederationError("proximal_mu must be >= 0")
        if self.val_days < 1 or self.test_days < 1:
            raise FederationError("val_days and test_days must be >= 1")
        try:
            json.loads(self.data_spec)
        except json.JSONDecodeError as exc:
            raise FederationError(f"data_spec is not JSON: {exc}") from exc
        if self.codec != "none":
            from fedge.federation._codec import CodecSchedule

            CodecSchedule.parse(self.codec)
        from fedge.federation._codec import downlink_spec

        downlink_spec(self.downlink_codec)  # a CodecError is a FederationError
        from fedge.federation._residual import FEEDBACK_MODES

        if self.feedback not in FEEDBACK_MODES:
            raise FederationError(
                f"feedback must be one of {FEEDBACK_MODES}, got {self.feedback!r}"
            )
        if not 0.0 < self.residual_decay <= 1.0:
            raise FederationError(f"residual_decay must be in (0, 1], got {self.residual_decay}")
        if self.residual_decay != 1.0 and self.feedback != "residual":
            raise FederationError(
                "residual_decay applies to residual feedback (feedback='residual')"
            )
        if not 0.0 <= self.trim_beta < 0.5:
            raise FederationError(f"trim_beta must be in [0, 0.5), got {self.trim_beta}")
        if self.krum_malicious < 0:
            raise FederationError("krum_malicious must be >= 0")
        if not 0.0 <= self.server_momentum < 1.0:
            raise FederationError(f"server_momentum must be in [0, 1), got {self.server_momentum}")
        timeout = self.round_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise FederationError(f"round_timeout must be a number of seconds, got {timeout!r}")
        if not 0.0 < timeout <= MAX_ROUND_TIMEOUT:
            raise FederationError(
                f"round_timeout must be in (0, {MAX_ROUND_TIMEOUT:.0f}] seconds, got {timeout}"
            )
        if isinstance(self.min_nodes, bool) or not isinstance(self.min_nodes, int):
            raise FederationError(f"min_nodes must be an integer, got {self.min_nodes!r}")
        if not 1 <= self.min_nodes <= MAX_MIN_NODES:
            raise FederationError(
                f"min_nodes must be in [1, {MAX_MIN_NODES}], got {self.min_nodes}"
            )

        if isinstance(self.regions, bool) or not isinstance(self.regions, int):
            raise FederationError(f"regions must be an integer, got {self.regions!r}")
        if self.regions < 0:
            raise FederationError(f"regions must be >= 0 (0: flat), got {self.regions}")
        if self.regions and self.codec == "none":
            raise FederationError(
                "regions aggregate sealed updates: give a codec (fp32 for uncompressed)"
            )
        if self.region_codec:
            if not self.regions:
                raise FederationError("region_codec applies to a run with regions")
            from fedge.federation._codec import CodecSchedule

            CodecSchedule.parse(self.region_codec)

    def learning_rate_at(self, server_round: int) -> float:
        """Cosine decay to a tenth over the run: the same schedule the baselines get."""
        return cosine_lr(self.learning_rate, server_round - 1, self.num_rounds)

    def to_config(self) -> dict[str, Any]:
        """Flat, Flower-ConfigRecord-friendly view sent to sites each round (without the
        simulation's own settings, which its harness keeps in-process)."""
        out: dict[str, Any] = {
            k: v for k, v in asdict(self).items() if k not in ("forecast", *SIMULATION_ONLY)
        }
        out["forecast"] = json.dumps(self.forecast.to_dict())
        return {k.replace("_", "-"): v for k, v in out.items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FederationPlan:
        """Inverse of :meth:`to_config`; also reads a ``flwr run`` run-config."""
        known = {f.replace("_", "-") for f in cls.__dataclass_fields__}
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key not in known:
                continue
            name = key.replace("-", "_")
            if name == "forecast":
                try:
                    kwargs[name] = ForecastSpec.from_dict(json.loads(str(value)))
                except json.JSONDecodeError as exc:
                    raise FederationError(f"forecast is not JSON: {exc}") from exc
            else:
                kwargs[name] = value
        try:
            plan = cls(**kwargs)
        except TypeError as exc:
            raise FederationError(f"bad federation config: {exc}") from exc
        return plan


def cosine_lr(base: float, step: int, total: int) -> float:
    frac = step / max(total - 1, 1)
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))
