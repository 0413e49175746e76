"""``fedge coordinator serve``: the API on uvicorn. fastapi is imported only when run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedge.core import LogFormat

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
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (uvicorn); 1: in process.")
    ] = 1,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format", help="Log lines: text (readable) or json (one object a line)."
        ),
    ] = LogFormat.TEXT,
) -> None:
    """Run the coordinator API (settings from FEDGE_COORDINATOR_* variables)."""
    import logging
    import os

    from fedge.coordinator._service import Coordinator
    from fedge.coordinator._settings import load_settings
    from fedge.coordinator._workers import bind_exclusive, serve_app, serve_workers
    from fedge.coordinator.api import ENV_FILE_VARIABLE, LOG_FORMAT_VARIABLE, create_app
    from fedge.core import configure_logging

    configure_logging(log_format)
    os.environ[LOG_FORMAT_VARIABLE] = log_format.value  # the workers log the same way

    overrides: dict[str, object] = {}
    if env_file is not None:
        overrides["_env_file"] = env_file
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(**overrides)
    # A taken port is refused before the database is opened or migrated.
    bind_exclusive(settings.host, settings.port).close()
    if workers == 1:
        app = create_app(settings)
        dialect = app.state.coordinator.engine.dialect.name
    else:  # migrate and recover once here; each worker builds its app from the environment
        settings.make_state_dir()
        once = Coordinator(settings)
        dialect = once.engine.dialect.name
        once.close()
        if env_file is not None:
            os.environ[ENV_FILE_VARIABLE] = str(env_file.resolve())
        os.environ["FEDGE_COORDINATOR_HOST"], os.environ["FEDGE_COORDINATOR_PORT"] = (
            settings.host,
            str(settings.port),
        )
    tls = settings.tls
    url = f"{settings.scheme}://{settings.host}:{settings.port}"
    started = f"coordinator on {url} ({settings.environment.value}, {dialect}, {workers} worker(s))"
    if log_format is LogFormat.JSON:  # nothing but log lines, one object each
        logging.getLogger("fedge.coordinator").info(
            "%s", started,
            extra={"event": "coordinator.start", "url": url, "database": dialect,
                   "environment": settings.environment.value, "workers": workers},
        )  # fmt: skip
    else:
        typer.echo(started)
    if workers == 1:
        serve_app(app, settings.host, settings.port, tls)
    else:
        serve_workers(
            "fedge.coordinator.api:worker_app", settings.host, settings.port, workers, tls
        )


def register(app: typer.Typer) -> None:
    app.add_typer(coordinator_app)
