"""What sites report about themselves (health, forecast error, actuals)."""

from __future__ import annotations
