"""Read a shipped systemd unit's [Service] command line and environment, so a test can
run exactly what the unit runs (with its ports and paths moved into a temp dir)."""

from __future__ import annotations

import shlex
from pathlib import Path

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def service_entries(unit: Path) -> list[tuple[str, str]]:
    """The ``[Service]`` section's ``Key=value`` lines in order, continuations joined."""
    entries: list[tuple[str, str]] = []
    section, pending = "", ""
    for raw in unit.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            entries.append((key, value))
    return entries


def exec_start(unit: Path, moves: dict[str, str]) -> list[str]:
    """The unit's one ``ExecStart=`` as argv, each word's ``moves`` keys replaced."""
    (command,) = [value for key, value in service_entries(unit) if key == "ExecStart"]
    words = shlex.split(command)
    for old, new in moves.items():
        words = [word.replace(old, new) for word in words]
    return words


def environment(unit: Path, moves: dict[str, str]) -> dict[str, str]:
    """Every ``Environment=`` assignment of the unit, values' ``moves`` keys replaced."""
    env: dict[str, str] = {}
    for key, value in service_entries(unit):
        if key == "Environment":
            for item in shlex.split(value):
                name, _, text = item.partition("=")
                for old, new in moves.items():
                    text = text.replace(old, new)
                env[name] = text
    return env
