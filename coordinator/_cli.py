"""``fedge coordinator serve``: the API on uvicorn. fastapi is imported only when run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

coordinator_app = typer.Typer(
    name="coordinator",
    help="The central service: enrollment, sites, model versions, rounds.",
    no_args_is_help=True,
)


@coordinator_app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: settings, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings, 8080).")] = None,
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", help="A file of FEDGE_COORDINATOR_* settings.", exists=True),
    ] = None,
) -> None:
    """Run the coordinator API (settings from FEDGE_COORDINATOR_* variables)."""
    import uvicorn

    from coordinator._settings import load_settings
    from coordinator.api import create_app

    overrides: dict[str, object] = {}
    if env_file is not None:
        overrides["_env_file"] = env_file
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(**overrides)
    app = create_app(settings)
    typer.echo(
        f"coordinator on http://{settings.host}:{settings.port} "
        f"({settings.environment.value}, {app.state.coordinator.engine.dialect.name})"
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.add_typer(coordinator_app)
