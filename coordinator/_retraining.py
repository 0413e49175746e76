"""The retraining policy: scheduled and drift-triggered runs, automatic promotion."""

from __future__ import annotations
