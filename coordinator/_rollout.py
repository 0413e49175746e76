"""Staged model rollout: canaries first, then the rest, rolled back when canaries reject."""

from __future__ import annotations
