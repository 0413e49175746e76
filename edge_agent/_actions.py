"""Actions from the coordinator: verified, recorded, acknowledged, handed to the RAN."""

from __future__ import annotations
