"""Site archetypes: daily/weekly load shapes and the ranges each site's parameters come from.

Shapes are sums of Gaussian bumps over the hour of day; a site draws its own amplitudes,
phase and scale from its archetype's ranges, which is what makes sites non-IID.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Bump = tuple[float, float, float]  # (amplitude, centre hour, width in hours)


@dataclass(frozen=True)
class Archetype:
    name: str
    base: float
    weekday: tuple[Bump, ...]
    weekend: tuple[Bump, ...]
    peak_load: tuple[float, float]  # fraction of capacity at the profile's peak
    max_ues: tuple[float, float]
    noise_sigma: tuple[float, float]  # AR(1) log-noise innovation
    holiday_like_weekend: bool  # holidays follow the weekend shape
    events_per_week: float  # scheduled events (concerts, matches) that lift the evening


ARCHETYPES: dict[str, Archetype] = {
    a.name: a
    for a in (
        Archetype(
            "residential",
            0.12,
            ((0.25, 7.5, 1.2), (0.2, 13.0, 3.0), (0.75, 20.5, 2.0)),
            ((0.45, 14.0, 4.0), (0.7, 20.5, 2.2)),
            (0.55, 0.85),
            (150, 450),
            (0.035, 0.06),
            True,
            0.0,
        ),
        Archetype(
            "business",
            0.08,
            ((0.55, 10.5, 1.8), (0.6, 15.0, 2.0), (0.15, 19.0, 1.5)),
            ((0.12, 13.0, 3.5),),
            (0.6, 0.9),
            (200, 600),
            (0.03, 0.05),
            True,
            0.0,
        ),
        Archetype(
            "transport_hub",
            0.1,
            ((0.9, 8.0, 1.0), (0.3, 13.0, 3.0), (0.85, 18.0, 1.2)),
            ((0.35, 14.0, 4.0), (0.2, 19.0, 2.0)),
            (0.7, 0.95),
            (250, 700),
            (0.04, 0.07),
            True,
            0.0,
        ),
        Archetype(
            "rural",
            0.15,
            ((0.35, 12.0, 4.0), (0.3, 20.0, 2.0)),
            ((0.35, 13.0, 4.5), (0.3, 20.0, 2.0)),
            (0.25, 0.5),
            (30, 120),
            (0.06, 0.09),
            False,
            0.0,
        ),
        Archetype(
            "event_venue",
            0.08,
            ((0.15, 14.0, 4.0), (0.1, 19.0, 2.0)),
            ((0.25, 15.0, 4.0), (0.1, 19.0, 2.0)),
            (0.25, 0.4),
            (200, 800),
            (0.04, 0.07),
            False,
            2.0,
        ),
    )
}
ARCHETYPE_NAMES: tuple[str, ...] = tuple(ARCHETYPES)
# Sites cycle through this pattern: every run of ten covers all five archetypes in a
# realistic mix (residential most common, venues rare).
ARCHETYPE_CYCLE: tuple[str, ...] = (
    "residential",
    "business",
    "rural",
    "transport_hub",
    "event_venue",
    "residential",
    "business",
    "residential",
    "rural",
    "residential",
)


def profile(
    bumps: tuple[Bump, ...], base: float, hours: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Load shape over the hour of day, wrapping around midnight."""
    out = np.full_like(hours, base)
    for amp, centre, width in bumps:
        d = np.abs(hours - centre)
        d = np.minimum(d, 24.0 - d)
        out += amp * np.exp(-0.5 * (d / width) ** 2)
    return out
