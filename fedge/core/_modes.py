"""The strategic power modes: the names a site's strategic action may carry.

The coordinator signs them, the agent checks them and the decision layer indexes them,
so the vocabulary lives here once. A mode's index is its place in the tuple and never
changes: new modes are appended, so a policy trained on the first three still means
the same modes.
"""

from __future__ import annotations

from typing import Final

from fedge.core._errors import CoreError

POWER_MODES: Final[tuple[str, ...]] = (
    "active",  # both carriers serve
    "capacity_off",  # the capacity carrier is off (in deep sleep), the coverage one serves
    "deep_sleep",  # both carriers in deep sleep
    "light_sleep",  # both carriers in light sleep (shorter wake-up, more power)
    "micro_sleep",  # both carriers in micro sleep (immediate wake-up, most power)
)


class UnknownModeError(CoreError):
    """A power mode that is not one of :data:`POWER_MODES`."""


def mode_index(mode: object) -> int:
    """The index of ``mode`` in :data:`POWER_MODES`; :class:`UnknownModeError` otherwise."""
    if not isinstance(mode, str) or mode not in POWER_MODES:
        raise UnknownModeError(f"power mode: one of {POWER_MODES} expected, not {mode!r}")
    return POWER_MODES.index(mode)
