"""Live decisions: observations from ingested forecasts, signed actions, acknowledgements."""

from __future__ import annotations
