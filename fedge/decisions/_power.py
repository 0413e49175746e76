"""Base-station power per carrier: the EARTH load-dependent model, or an operator's figures.

EARTH (G. Auer et al., "How much energy is needed to run a wireless network?", IEEE
Wireless Communications 18(5), 2011, macro-cell parameters) is the default; operators
with their equipment's own idle, full-load and sleep figures pass them instead, and the
report's energy ceiling moves with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.decisions._errors import DecisionError


@dataclass(frozen=True)
class PowerModel:
    """P = P0 + Δp·load·Pmax for an awake carrier at ``load`` of its capacity; P_sleep asleep."""

    p0_w: float = 130.0
    delta_p: float = 4.7
    pmax_w: float = 20.0
    sleep_w: float = 75.0
    source: str = "EARTH macro cell (Auer et al. 2011)"

    def __post_init__(self) -> None:
        values = (self.p0_w, self.delta_p, self.pmax_w, self.sleep_w)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise DecisionError(f"power model figures must be finite numbers, got {values}")
        if self.p0_w <= 0 or self.pmax_w <= 0 or self.delta_p < 0:
            raise DecisionError("power model needs P0 > 0, Pmax > 0 and Δp >= 0")
        if not 0 <= self.sleep_w <= self.p0_w:
            raise DecisionError(
                f"a sleeping carrier must draw between 0 and its idle power "
                f"({self.p0_w} W), got {self.sleep_w} W"
            )

    @property
    def full_w(self) -> float:
        """One carrier at full load."""
        return self.p0_w + self.delta_p * self.pmax_w

    def carrier(self, load: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = self.p0_w + self.delta_p * np.clip(load, 0.0, 1.0) * self.pmax_w
        return out


EARTH_MACRO = PowerModel()
