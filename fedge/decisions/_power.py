"""Base-station power per carrier: EARTH, 3GPP TR 38.864, or an operator's figures.

Two models, chosen with ``--power-model``:

* ``earth``: the EARTH load-dependent model (G. Auer et al., "How much energy is needed
  to run a wireless network?", IEEE Wireless Communications 18(5), 2011, macro-cell
  parameters). One sleep state (75 W); modes ``active``, ``capacity_off``, ``deep_sleep``.
* ``tr38864``: the 3GPP TR 38.864 (Rel-18) network energy saving model, relative power
  per state (deep sleep = 1) for Category 1, Set 1 (FR1 TDD, 100 MHz, 64 TxRU), with three
  sleep depths and their transition times and energies; all five modes.

A mode's index is its place in :data:`fedge.core.POWER_MODES`; a model offers a prefix
of that vocabulary (``modes``), so a policy trained under EARTH still names the same
modes under TR 38.864. The relative units of TR 38.864 become watts through one scale
(``watts_per_unit``), the same for every method, so kWh can be reported; savings in
percent do not depend on it (docs/decisions.md, "Power models").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import POWER_MODES
from fedge.decisions._errors import DecisionError

# Indices into POWER_MODES (stable: old policies' mode indices keep their meaning).
ACTIVE, CAP_OFF, SLEEP, LIGHT, MICRO = (
    POWER_MODES.index(m)
    for m in ("active", "capacity_off", "deep_sleep", "light_sleep", "micro_sleep")
)
# What each carrier of a site (coverage, capacity) is in under each mode: -1 awake, else
# the sleep mode whose state it is in. A carrier switched off sleeps in deep sleep.
CARRIER_STATES: NDArray[np.int64] = np.array(
    [[-1, -1], [-1, SLEEP], [SLEEP, SLEEP], [LIGHT, LIGHT], [MICRO, MICRO]], dtype=np.int64
)


def _finite(*values: Any) -> bool:
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


@dataclass(frozen=True)
class PowerModel:
    """EARTH: P = P0 + Δp·load·Pmax for an awake carrier at ``load`` of its capacity;
    P_sleep asleep; waking draws full-load power for ``wake_s`` before it serves."""

    p0_w: float = 130.0
    delta_p: float = 4.7
    pmax_w: float = 20.0
    sleep_w: float = 75.0
    source: str = "EARTH macro cell (Auer et al. 2011)"
    # Our assumption, not EARTH's (docs/decisions.md): a carrier wakes in one minute.
    wake_s: float = 60.0
    name: str = "earth"

    def __post_init__(self) -> None:
        values = (self.p0_w, self.delta_p, self.pmax_w, self.sleep_w, self.wake_s)
        if not _finite(*values):
            raise DecisionError(f"power model figures must be finite numbers, got {values}")
        if self.p0_w <= 0 or self.pmax_w <= 0 or self.delta_p < 0:
            raise DecisionError("power model needs P0 > 0, Pmax > 0 and Δp >= 0")
        if not 0 <= self.sleep_w <= self.p0_w:
            raise DecisionError(
                f"a sleeping carrier must draw between 0 and its idle power "
                f"({self.p0_w} W), got {self.sleep_w} W"
            )
        if self.wake_s < 0:
            raise DecisionError(f"the wake-up time must be >= 0 s, got {self.wake_s}")

    @property
    def modes(self) -> tuple[str, ...]:
        """EARTH has one sleep state: no light or micro sleep."""
        return POWER_MODES[:3]

    @property
    def full_w(self) -> float:
        """One carrier at full load."""
        return self.p0_w + self.delta_p * self.pmax_w

    def carrier(self, load: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = self.p0_w + self.delta_p * np.clip(load, 0.0, 1.0) * self.pmax_w
        return out

    def asleep_w(self) -> NDArray[np.float64]:
        """Power of one carrier in each mode's sleep state (indexed by mode; 0 if none)."""
        out = np.zeros(len(POWER_MODES))
        out[[CAP_OFF, SLEEP]] = self.sleep_w
        return out

    def transition_s(self) -> NDArray[np.float64]:
        """Time to leave each mode's sleep state and serve again, s."""
        out = np.zeros(len(POWER_MODES))
        out[[CAP_OFF, SLEEP]] = self.wake_s
        return out

    def transition_j(self) -> NDArray[np.float64]:
        """Energy above the sleep state of one carrier's sleep-and-wake cycle, J."""
        out = np.zeros(len(POWER_MODES))
        out[[CAP_OFF, SLEEP]] = (self.full_w - self.sleep_w) * self.wake_s
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "p0_w": self.p0_w,
            "delta_p": self.delta_p,
            "pmax_w": self.pmax_w,
            "sleep_w": self.sleep_w,
            "wake_s": self.wake_s,
            "modes": list(self.modes),
        }


@dataclass(frozen=True)
class TR38864Model:
    """3GPP TR 38.864 relative power per state, per carrier, in watts via one scale.

    An awake carrier at ``load`` (share of its PRBs over the block) is in Active DL for
    that share of the time and in micro sleep for the rest (the TR's evaluation is per
    slot: a slot with nothing to send sleeps). Active DL itself follows the TR's scaling
    ``P3 + s_a·(P4 - P3)·[A + (s_f·s_p/η)·(1 - A)]`` with ``P4`` the table's Active DL;
    at the reference configuration (s_a = s_f = s_p = η = 1) it is ``P4`` whatever P3
    and A are. P3 and A could not be verified here: they are ``None`` unless an operator
    gives them, and a configuration that needs them is refused.
    """

    deep: float = 1.0
    light: float = 25.0
    micro: float = 55.0
    active_dl: float = 280.0  # P4: Active DL at the reference configuration, full PRBs
    active_ul: float = 110.0  # not used: the decisions' demand is downlink PRB use
    deep_ms: float = 50.0
    deep_energy: float = 1000.0  # relative units · ms
    light_ms: float = 6.0
    light_energy: float = 90.0
    micro_ms: float = 0.0
    micro_energy: float = 0.0
    s_a: float = 1.0  # active TxRU share
    s_p: float = 1.0  # transmit power over the reference
    eta: float = 1.0  # PA efficiency over the reference's
    p3: float | None = None
    a: float | None = None
    # One relative unit in watts: Active DL at full load = an EARTH macro carrier at full
    # load (224 W), so kWh read on the same scale under both models (docs/decisions.md).
    watts_per_unit: float = 0.8
    source: str = "3GPP TR 38.864 (Rel-18), Category 1, Set 1: FR1 TDD 100 MHz, 64 TxRU"
    name: str = "tr38864"

    def __post_init__(self) -> None:
        figures = (
            self.deep,
            self.light,
            self.micro,
            self.active_dl,
            self.active_ul,
            self.deep_ms,
            self.deep_energy,
            self.light_ms,
            self.light_energy,
            self.micro_ms,
            self.micro_energy,
            self.s_a,
            self.s_p,
            self.eta,
            self.watts_per_unit,
        )
        optional = tuple(v for v in (self.p3, self.a) if v is not None)
        if not _finite(*figures, *optional):
            raise DecisionError(f"power model figures must be finite numbers, got {figures}")
        if not 0 <= self.deep <= self.light <= self.micro <= self.active_dl:
            raise DecisionError(
                "relative powers must rise deep <= light <= micro sleep <= active DL, got "
                f"{self.deep}, {self.light}, {self.micro}, {self.active_dl}"
            )
        if min(self.deep_ms, self.light_ms, self.micro_ms) < 0:
            raise DecisionError("transition times must be >= 0 ms")
        if min(self.deep_energy, self.light_energy, self.micro_energy) < 0:
            raise DecisionError("transition energies must be >= 0")
        if not (0 < self.s_a <= 1 and self.s_p > 0 and self.eta > 0):
            raise DecisionError("need 0 < s_a <= 1, s_p > 0 and η > 0")
        if self.watts_per_unit <= 0:
            raise DecisionError(f"watts_per_unit must be > 0, got {self.watts_per_unit}")
        if self.a is not None and not 0 <= self.a <= 1:
            raise DecisionError(f"A must be in [0, 1], got {self.a}")
        if self.p3 is not None and not 0 <= self.p3 <= self.active_dl:
            raise DecisionError(f"P3 must be in [0, P4 = {self.active_dl}], got {self.p3}")
        reference = self.s_a == 1.0 and self.s_p == self.eta
        if not reference and (self.p3 is None or self.a is None):
            raise DecisionError(
                "a configuration other than the reference (s_a = 1, s_p = η) needs the "
                "TR's P3 and A, which could not be verified here: pass them (p3=, a=)"
            )
        if self.dl_relative(1.0) < self.micro:
            raise DecisionError("Active DL at full PRBs must draw at least micro sleep")

    @property
    def modes(self) -> tuple[str, ...]:
        return POWER_MODES

    def dl_relative(self, s_f: float) -> float:
        """Active DL power (relative units) at PRB share ``s_f`` within a slot."""
        if self.p3 is None or self.a is None:
            return self.active_dl  # the reference configuration, full PRBs in the slot
        p3, p4, a = self.p3, self.active_dl, self.a
        return p3 + self.s_a * (p4 - p3) * (a + (s_f * self.s_p / self.eta) * (1 - a))

    @property
    def full_w(self) -> float:
        """One carrier at full load."""
        return self.dl_relative(1.0) * self.watts_per_unit

    def carrier(self, load: NDArray[np.float64]) -> NDArray[np.float64]:
        """Active DL for ``load`` of the time, micro sleep for the rest."""
        u = np.clip(load, 0.0, 1.0)
        out: NDArray[np.float64] = (
            self.micro + (self.dl_relative(1.0) - self.micro) * u
        ) * self.watts_per_unit
        return out

    def asleep_w(self) -> NDArray[np.float64]:
        w = self.watts_per_unit
        out = np.zeros(len(POWER_MODES))
        out[[CAP_OFF, SLEEP]] = self.deep * w
        out[LIGHT], out[MICRO] = self.light * w, self.micro * w
        return out

    def transition_s(self) -> NDArray[np.float64]:
        out = np.zeros(len(POWER_MODES))
        out[[CAP_OFF, SLEEP]] = self.deep_ms / 1000.0
        out[LIGHT], out[MICRO] = self.light_ms / 1000.0, self.micro_ms / 1000.0
        return out

    def transition_j(self) -> NDArray[np.float64]:
        """The TR's transition energy (relative units · ms) in joules."""
        k = self.watts_per_unit / 1000.0
        out = np.zeros(len(POWER_MODES))
        out[[CAP_OFF, SLEEP]] = self.deep_energy * k
        out[LIGHT], out[MICRO] = self.light_energy * k, self.micro_energy * k
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "relative_power": {
                "deep_sleep": self.deep,
                "light_sleep": self.light,
                "micro_sleep": self.micro,
                "active_dl": self.active_dl,
                "active_ul": self.active_ul,
            },
            "transition_ms": {
                "deep_sleep": self.deep_ms,
                "light_sleep": self.light_ms,
                "micro_sleep": self.micro_ms,
            },
            "transition_energy": {
                "deep_sleep": self.deep_energy,
                "light_sleep": self.light_energy,
                "micro_sleep": self.micro_energy,
            },
            "scaling": {"s_a": self.s_a, "s_p": self.s_p, "eta": self.eta},
            "p3": self.p3,
            "a": self.a,
            "watts_per_unit": self.watts_per_unit,
            "modes": list(self.modes),
        }


CarrierPower = PowerModel | TR38864Model
"""Either power model; both offer the same methods to the environment."""

EARTH_MACRO = PowerModel()
TR38864 = TR38864Model()
POWER_MODELS: dict[str, CarrierPower] = {"tr38864": TR38864, "earth": EARTH_MACRO}


def power_model(name: str) -> CarrierPower:
    """The named model (``--power-model``); a typed error for any other name."""
    try:
        return POWER_MODELS[name]
    except (KeyError, TypeError):
        raise DecisionError(
            f"unknown power model {name!r}; choose from {', '.join(POWER_MODELS)}"
        ) from None


def feasible_modes(power: CarrierPower, block_s: float) -> NDArray[np.bool_]:
    """Which of POWER_MODES a site may enter for a block of ``block_s`` seconds: the
    model offers it and the sleep's transition (enter and wake) fits in the block."""
    ok = np.zeros(len(POWER_MODES), dtype=bool)
    ok[: len(power.modes)] = True
    out: NDArray[np.bool_] = ok & (power.transition_s() <= block_s)
    return out
