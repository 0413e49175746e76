"""``fedge fleet up|status|run|down``: thin typer wrappers over ``simulation._fleet``."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console, Group

_DIR = Annotated[Path, typer.Option("--dir", help="The fleet directory (state, logs, data).")]


def up_command(
    sites: Annotated[int, typer.Option("--sites", help="How many sites (agents).")] = 3,
    directory: _DIR = Path("fleet"),
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="A KPI import file (CSV/Parquet) or a folder of 3GPP PM XML to replay."
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option("--speed", help="Replayed time per wall time (60: 5 min in 5 s).")
    ] = 60.0,
    postgres: Annotated[
        bool, typer.Option("--postgres", help="The coordinator on a PostgreSQL cluster of its own.")
    ] = False,
    policies: Annotated[
        Path | None,
        typer.Option("--policies", help="Decision policies (`fedge decisions train` output)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="The generator's seed.")] = 0,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", help="TLS on every hop, with certificates of the fleet's own CA (tls/)."
        ),
    ] = False,
) -> None:
    """Start (or resume) the whole live system and wait until it is healthy."""
    from fedge.simulation._fleet import FleetSpec, up

    spec = FleetSpec(sites, data, speed, postgres, policies, seed, tls)
    fleet = up(directory, spec, echo=lambda line: typer.echo(line, err=True))
    state = fleet.state
    typer.echo(f"fleet up: {len(state.sites)} sites, coordinator {state.coordinator_url}")
    typer.echo(f"state: {state.root / 'fleet.json'}")


def status_command(
    directory: _DIR = Path("fleet"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch", help="Refresh every this many seconds (a live table until Ctrl-C)."
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", help="With --watch: stop after this many refreshes.")
    ] = None,
) -> None:
    """Per site: the version served, the last forecast, the last action, alerts."""
    from rich.console import Console

    from fedge.simulation._fleet import FleetError, status

    if watch is not None and (not math.isfinite(watch) or not 0.1 <= watch <= 3600):
        raise FleetError(f"--watch: between 0.1 and 3600 seconds, got {watch:g}")
    if count is not None and (watch is None or count < 1):
        raise FleetError("--count: a whole number of refreshes of at least 1, with --watch")
    if as_json and watch is not None:
        raise FleetError("--json and --watch: one at a time (--json prints once)")
    info = status(directory)  # a directory that is not a fleet fails here, before any table
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    console = Console()
    if watch is None:
        console.print(_status_tables(info))
        return
    _watch(console, directory, info, watch, count)


def _watch(
    console: Console, directory: Path, info: dict[str, Any], every: float, count: int | None
) -> None:
    """Redraw in place on a terminal; elsewhere (a pipe, a log) one table per refresh,
    each under its time, so nothing is overwritten."""
    from rich.live import Live

    from fedge.simulation._fleet import status

    shown = 1
    if console.is_terminal:
        with Live(_status_tables(info), console=console, auto_refresh=False) as live:
            while count is None or shown < count:
                time.sleep(every)
                live.update(_status_tables(status(directory)), refresh=True)
                shown += 1
        return
    console.print(_status_tables(info))
    while count is None or shown < count:
        time.sleep(every)
        console.print(_status_tables(status(directory)))
        shown += 1


def _status_tables(info: dict[str, Any]) -> Group:
    """The parts and the sites, under the time they were read."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    read_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    heading = Text(f"fleet {info['dir']}\nread {read_at}", style="bold")
    parts = Table()
    for col in ("part", "pid", "port", "running"):
        parts.add_column(col)
    for name, p in info["parts"].items():
        parts.add_row(name, str(p["pid"]), str(p["port"] or ""), "yes" if p["running"] else "NO")
    sites = Table()
    for col in ("site", "id", "serving", "last forecast", "last action", "alerts w/c"):
        sites.add_column(col)
    for s in info["sites"]:
        fc = s.get("last_forecast")
        act = s.get("last_action")
        alerts = s.get("alerts") or {}
        sites.add_row(
            str(s["index"]),
            (s["site_id"] or "")[:12],
            str(s.get("serving") or "-"),
            f"{fc['model_version']} step {fc['step']}" if fc else "-",
            _action_text(act),
            f"{alerts.get('warning', 0)}/{alerts.get('critical', 0)}" if alerts else "-",
        )
    return Group(heading, parts, sites)


def _action_text(action: dict[str, object] | None) -> str:
    if not action:
        return "-"
    what = action.get("mode") or "shares"
    state = action.get("status") or action.get("ack_status") or ""
    return f"#{action.get('action_id', action.get('id'))} {what} {state}".strip()


def run_command(
    minutes: Annotated[float, typer.Option("--minutes", help="Wall minutes to run the loop.")],
    directory: _DIR = Path("fleet"),
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of the run it starts.")] = 1,
    until_closed: Annotated[
        bool,
        typer.Option(
            "--until-closed",
            help="End early once every site serves the new model, had a forecast ingested "
            "and applied an action.",
        ),
    ] = False,
) -> None:
    """Run the loop: a federated run, its rollout, decisions; then report.json/html."""
    from fedge.simulation._fleet import FleetError
    from fedge.simulation._fleet_report import run_fleet

    if not math.isfinite(minutes) or not 0 < minutes <= 24 * 60:
        raise FleetError(f"--minutes: above 0 and at most a day (1440), got {minutes:g}")
    if not 1 <= rounds <= 100:
        raise FleetError(f"--rounds: between 1 and 100, got {rounds}")
    outcome = run_fleet(
        directory,
        minutes * 60.0,
        rounds=rounds,
        until_closed=until_closed,
        echo=lambda s: typer.echo(s, err=True),
    )
    typer.echo(f"report: {outcome.json_path}  {outcome.html_path}")
    if outcome.missing:
        raise FleetError("the loop did not close: " + "; ".join(outcome.missing))


def down_command(directory: _DIR = Path("fleet")) -> None:
    """Stop everything the fleet started (its data stays for the next `up`)."""
    from fedge.simulation._fleet import FleetError, down

    left = down(directory, echo=lambda line: typer.echo(line, err=True))
    if left:
        raise FleetError(f"processes still alive after down: {left}")
    typer.echo("fleet down")


def register(app: typer.Typer) -> None:
    """Add the ``fleet`` sub-command to the ``fedge`` application."""
    fleet = typer.Typer(
        help="The whole live system on one machine: up, status, run, down.",
        no_args_is_help=True,
    )
    fleet.command("up")(up_command)
    fleet.command("status")(status_command)
    fleet.command("run")(run_command)
    fleet.command("down")(down_command)
    app.add_typer(fleet, name="fleet")
