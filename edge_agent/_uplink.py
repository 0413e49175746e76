"""The agent's coordinator link: outbox upload, health, model pull, off the broker thread."""

from __future__ import annotations
