"""The ``fedge`` command.

Each sub-command's module is imported only when that command runs: ``fedge keys`` and
``fedge agent`` never pay for (or import) torch, pandas, ray, flwr or fastapi, and a
role's install (``fedge[agent]``) runs its own commands without the others' extras.
``fedge --help`` lists every command from the light table below.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click
import typer
from typer.core import TyperGroup

from fedge import FedgeError, __version__
from fedge._errors import MissingExtraError


@dataclass(frozen=True)
class _Entry:
    """Where a sub-command lives, the extra that installs its dependencies, its help."""

    module: str
    extra: str | None
    help: str


# The help strings repeat the commands' own first help lines (a test keeps them equal),
# so that listing the commands imports none of them.
COMMANDS: dict[str, _Entry] = {
    "agent": _Entry(
        "fedge.edge_agent._cli",
        "agent",
        "The gNB edge agent: MQTT KPIs in, forecasts and alerts out.",
    ),
    "keys": _Entry(
        "fedge.security._cli", None, "Site identity keys (post-quantum, encrypted at rest)."
    ),
    "pki": _Entry(
        "fedge.security._cli",
        None,
        "Transport TLS: a private CA and the fleet's certificates (broker, HTTPS, SuperLink).",
    ),
    "site": _Entry(
        "fedge.edge_agent._site_cli",
        None,
        "Sites: enroll this gNB host, rotate its keys; issue tokens, list, revoke sites.",
    ),
    "model": _Entry(
        "fedge.edge_agent._operator_cli",
        None,
        "Model versions on the coordinator: list, promote, roll back.",
    ),
    "rollout": _Entry(
        "fedge.edge_agent._operator_cli",
        None,
        "Staged model rollouts: where each promotion stands, per site.",
    ),
    "run": _Entry(
        "fedge.edge_agent._operator_cli",
        None,
        "Federation runs on the coordinator: list, show, start, cancel; the retraining policy that starts them.",
    ),
    "simulate": _Entry(
        "fedge.simulation._cli",
        "sim",
        "Federated load forecasting over many simulated sites, against the baselines.",
    ),
    "data": _Entry("fedge.simulation._cli", "sim", "Site telemetry: the import format."),
    "decisions": _Entry(
        "fedge.simulation._decisions_cli",
        "sim",
        "Central decisions: DQN energy saving and PPO slice allocation.",
    ),
    "fleet": _Entry(
        "fedge.simulation._fleet_cli",
        "sim",
        "The whole live system on one machine: up, status, run, down.",
    ),
    "coordinator": _Entry(
        "fedge.coordinator._cli",
        "coordinator",
        "The central service: enrollment, sites, model versions, rounds.",
    ),
}

_loaded: dict[str, click.Command] = {}


def _missing(name: str, exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The typed error for a third-party module the command's extra installs, else None."""
    module = (exc.name or "").split(".")[0]
    if not module or module == "fedge":
        return None  # our own code is broken or absent: not an install choice
    entry = COMMANDS[name]
    return MissingExtraError(command=name, extra=entry.extra, module=module)


def _load(name: str) -> click.Command:
    """Import the module of ``name`` and build its click command (once per process)."""
    if name not in _loaded:
        entry = COMMANDS[name]
        try:
            module = importlib.import_module(entry.module)
        except ModuleNotFoundError as exc:
            raise (_missing(name, exc) or exc) from exc
        holder = typer.Typer()
        module.register(holder)
        group = typer.main.get_group(holder)
        for sub, command in group.commands.items():
            if sub in COMMANDS:
                _loaded.setdefault(sub, command)
    return _loaded[name]


class _LazyGroup(TyperGroup):
    """A group whose sub-commands are imported on use; help lists them from the table."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in COMMANDS:
            return command
        if cmd_name in _loaded:
            return _loaded[cmd_name]
        # Only listed (help): a stand-in with the help text; running it loads the real one.
        return click.Command(cmd_name, help=COMMANDS[cmd_name].help)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in COMMANDS and super().get_command(ctx, args[0]) is None:
            _load(args[0])
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:  # a dependency imported when the command runs
            name = ctx.invoked_subcommand
            error = _missing(name, exc) if name in COMMANDS else None
            if error is None:
                raise
            raise error from exc


app = typer.Typer(
    name="fedge",
    cls=_LazyGroup,
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


def _register(only: str | None = None) -> None:
    """Load ``only`` now (every command when None), so that its typed errors, such as a
    missing extra, surface before the command line is parsed."""
    for name in [only] if only is not None else list(COMMANDS):
        _load(name)


def main() -> None:
    """Console-script entry point: typed fedge errors become one clear line, exit 2."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    try:
        if command in COMMANDS:
            _register(command)
        app()
    except FedgeError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
