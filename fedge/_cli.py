"""The ``fedge`` command.

Sub-commands are imported lazily inside their callbacks so that ``fedge agent`` never
pays for (or imports) torch, ray or fastapi.
"""

from __future__ import annotations

import os
import sys

import typer

from fedge import FedgeError, __version__

app = typer.Typer(
    name="fedge",
    help="Federated learning at the radio edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fedge {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Federated learning at the radio edge."""


_registered: set[str] = set()


def _register(only: str | None = None) -> None:
    """Add the sub-commands; ``only="agent"`` adds just the agent's, so that
    ``fedge agent ...`` never imports the simulation (pandas) stack."""
    if "agent" not in _registered:
        _registered.add("agent")
        from fedge.edge_agent._cli import register as register_agent

        register_agent(app)
    if only == "agent" or "rest" in _registered:
        return
    _registered.add("rest")
    from fedge.simulation._cli import register as register_simulate

    register_simulate(app)
    from fedge.security._cli import register as register_keys

    register_keys(app)
    from fedge.simulation._decisions_cli import register as register_decisions

    register_decisions(app)
    from fedge.coordinator._cli import register as register_coordinator

    register_coordinator(app)


def main() -> None:
    """Console-script entry point: typed fedge errors become one clear line, exit 2."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    _register("agent" if command == "agent" else None)
    try:
        app()
    except FedgeError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
