"""``fedge model list|promote|rollback``, ``fedge rollout list|show`` and ``fedge run
list|show|start|cancel|retraining``: the coordinator's API for operators, from any install.

They need only the standard-library client (``fedge.core``), typer and rich, so they live
beside ``fedge site`` and run from a gNB host's ``fedge[agent]`` install as well as from
the coordinator's. The API key comes from ``--api-key-file`` or ``$FEDGE_API_KEY``, the
coordinator's URL from ``--coordinator`` or ``$FEDGE_COORDINATOR_URL``; an API error is
an ``ApiError``, which ``fedge._cli.main`` shows as ``error: <status> <detail>``, exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from fedge.core import CoordinatorClient

__all__ = ["register"]

URL_ENV = "FEDGE_COORDINATOR_URL"
KEY_ENV = "FEDGE_API_KEY"

COORDINATOR = typer.Option(
    None, "--coordinator", help=f"The coordinator's URL (default: ${URL_ENV})."
)
API_KEY_FILE = typer.Option(
    None, "--api-key-file", help=f"File holding an operator API key (default: ${KEY_ENV})."
)
CA_ENV = "FEDGE_CA_FILE"
CA_FILE = typer.Option(
    None,
    "--ca-file",
    help=f"CA bundle that signs an https coordinator's certificate (default: ${CA_ENV}).",
)
AS_JSON = typer.Option(False, "--json", help="Print the API's JSON instead of a table.")
_HEX = frozenset("0123456789abcdef")


def coordinator_url(url: str | None) -> str:
    """The coordinator's URL from the flag, else the environment; a typed error if neither."""
    from fedge.core import ApiError

    url = url or os.environ.get(URL_ENV, "").strip()
    if not url:
        raise ApiError(0, f"no coordinator: pass --coordinator URL or set ${URL_ENV}")
    return url


def api_key(key_file: Path | None) -> str:
    """The operator's API key from ``key_file``, else ``$FEDGE_API_KEY``."""
    from fedge.core import ApiError

    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiError(0, f"cannot read the API key file {key_file}: {exc}") from exc
        if not key:
            raise ApiError(0, f"the API key file {key_file} is empty")
        return key
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise ApiError(0, f"no API key: pass --api-key-file FILE or set ${KEY_ENV}")
    return key


def ca_bundle(ca_file: Path | None) -> Path | None:
    """The CA bundle from ``--ca-file``, else ``$FEDGE_CA_FILE``; refused when unreadable."""
    from fedge.core import ApiError

    if ca_file is None:
        env = os.environ.get(CA_ENV, "").strip()
        ca_file = Path(env) if env else None
    if ca_file is not None and not ca_file.is_file():
        raise ApiError(0, f"the CA file {ca_file} is not a readable file")
    return ca_file


def operator_client(
    url: str | None, key_file: Path | None, ca_file: Path | None = None
) -> CoordinatorClient:
    from fedge.core import CoordinatorClient

    return CoordinatorClient(
        coordinator_url(url), api_key=api_key(key_file), ca_file=ca_bundle(ca_file)
    )


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column.endswith("_at") and isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def show(data: Any, columns: Sequence[str], *, as_json: bool, title: str | None = None) -> None:
    """``data`` (one object or a list) as JSON, or as a rich table of ``columns``."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    rows = data if isinstance(data, list) else [data]
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(_cell(row.get(c), c) for c in columns))
    # Not a terminal (a pipe, a log): wide enough that ids are never cut.
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(table)


_MODEL_COLUMNS = ("id", "status", "parent_id", "sha256", "created_at", "promoted_at", "note")
_RUN_COLUMNS = ("id", "status", "num_rounds", "strategy", "codec", "created_at", "detail")


def _model_commands() -> typer.Typer:
    model = typer.Typer(help="Model versions on the coordinator: list, promote, roll back.")

    @model.command("list")
    def list_models(
        status: str | None = typer.Option(
            None, "--status", help="Only versions in this state (candidate, production, ...)."
        ),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """The model versions, newest first."""
        from urllib.parse import quote

        client = operator_client(coordinator, api_key_file, ca_file)
        path = "/api/v1/models" + (f"?status={quote(status)}" if status else "")
        show(client.get_json(path), _MODEL_COLUMNS, as_json=as_json)

    @model.command("promote")
    def promote(
        model_id: int = typer.Argument(..., min=1, help="The candidate version's id."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """Make a candidate the production version (admin); the current one is retired."""
        client = operator_client(coordinator, api_key_file, ca_file)
        show(client.post_json(f"/api/v1/models/{model_id}/promote", {}), _MODEL_COLUMNS,
             as_json=as_json)  # fmt: skip

    @model.command("rollback")
    def rollback(
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """Retire the production version (admin); the version it replaced serves again."""
        client = operator_client(coordinator, api_key_file, ca_file)
        show(client.post_json("/api/v1/models/rollback", {}), _MODEL_COLUMNS, as_json=as_json)

    return model


_ROLLOUT_COLUMNS = (
    "id", "version", "state", "previous_model_id", "canaries", "delivered", "accepted",
    "rejected", "started_at", "updated_at", "reason",
)  # fmt: skip
_ROLLOUT_SITE_COLUMNS = (
    "site_id", "role", "assigned_at", "delivered_at", "verdict", "verdict_at", "reason",
    "candidate_score", "serving_score", "error_before", "error_after",
)  # fmt: skip


def _rollout_commands() -> typer.Typer:
    rollout = typer.Typer(help="Staged model rollouts: where each promotion stands, per site.")

    @rollout.command("list")
    def list_rollouts(
        limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many, newest first."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """The rollouts, newest first, with counts of canaries, deliveries and verdicts."""
        client = operator_client(coordinator, api_key_file, ca_file)
        show(client.get_json(f"/api/v1/rollouts?limit={limit}"), _ROLLOUT_COLUMNS,
             as_json=as_json)  # fmt: skip

    @rollout.command("show")
    def show_rollout(
        rollout_id: int = typer.Argument(..., min=1, max=2**31 - 1, help="The rollout's id."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """One rollout and every site it reaches: role, delivery and the site's verdict."""
        client = operator_client(coordinator, api_key_file, ca_file)
        detail = client.get_json(f"/api/v1/rollouts/{rollout_id}")
        if as_json:
            show(detail, (), as_json=True)
            return
        show(detail, _ROLLOUT_COLUMNS, as_json=False, title=f"rollout {rollout_id}")
        show(detail.get("sites", []), _ROLLOUT_SITE_COLUMNS, as_json=False, title="sites")

    return rollout


def _run_id(value: str) -> str:
    """A run id as the API names runs (32 hex digits), refused before any request."""
    if len(value) != 32 or not set(value) <= _HEX:
        raise typer.BadParameter(f"a run id is 32 lowercase hex digits, not {value!r}")
    return value


def _config_item(item: str) -> tuple[str, bool | int | float | str]:
    """``key=value`` of the app's run config; the value as JSON when it parses (numbers,
    booleans), else as text."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"--config takes key=value, not {item!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if not isinstance(value, bool | int | float | str):
        value = raw
    return key.strip(), value


_RUN_CONFIG = typer.Option([], "--config", help="key=value of the app's run config (repeatable).")


def _run_commands() -> typer.Typer:
    run = typer.Typer(
        help="Federation runs on the coordinator: list, show, start, cancel; the retraining "
        "policy that starts them."
    )

    @run.command("list")
    def list_runs(
        limit: int = typer.Option(100, "--limit", min=1, max=1000, help="At most this many."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """The runs, newest first."""
        client = operator_client(coordinator, api_key_file, ca_file)
        show(client.get_json(f"/api/v1/runs?limit={limit}"), _RUN_COLUMNS, as_json=as_json)

    @run.command("show")
    def show_run(
        run_id: str = typer.Argument(..., callback=_run_id, help="The run's id."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """One run and its rounds."""
        client = operator_client(coordinator, api_key_file, ca_file)
        found = client.get_json(f"/api/v1/runs/{run_id}")
        if as_json:
            show(found, (), as_json=True)
            return
        show(found, (*_RUN_COLUMNS, "model_version_id", "finished_at"), as_json=False)
        rounds = client.get_json(f"/api/v1/rounds?run_id={run_id}")
        columns = ("number", "status", "participants", "bytes_up", "bytes_down", "metrics")
        show(rounds, columns, as_json=False, title="rounds")

    @run.command("start")
    def start(
        num_rounds: int = typer.Option(3, "--rounds", min=1, max=10_000, help="Rounds."),
        strategy: str = typer.Option("fedavg", "--strategy", help="fedavg, fedprox, ..."),
        codec: str = typer.Option("none", "--codec", help="The update codec."),
        config: list[str] = _RUN_CONFIG,
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """Start a run on the coordinator's SuperLink (operator)."""
        items = dict(_config_item(i) for i in config)
        body = {"num_rounds": num_rounds, "strategy": strategy, "codec": codec, "config": items}
        client = operator_client(coordinator, api_key_file, ca_file)
        show(client.post_json("/api/v1/runs", body), _RUN_COLUMNS, as_json=as_json)

    @run.command("cancel")
    def cancel(
        run_id: str = typer.Argument(..., callback=_run_id, help="The run's id."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """Cancel a live run (operator); an ended run is refused (409)."""
        client = operator_client(coordinator, api_key_file, ca_file)
        show(client.delete_json(f"/api/v1/runs/{run_id}"), _RUN_COLUMNS, as_json=as_json)

    @run.command("retraining")
    def retraining(
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """The retraining policy: its settings, last drift check and latest run starts."""
        client = operator_client(coordinator, api_key_file, ca_file)
        state = client.get_json("/api/v1/retraining")
        if as_json:
            show(state, (), as_json=True)
            return
        show(state, _POLICY_COLUMNS, as_json=False, title="retraining policy")
        show(state.get("starts", []), _START_COLUMNS, as_json=False, title="run starts")

    return run


_POLICY_COLUMNS = ("enabled", "acting", "retrain_interval_seconds", "drift_check_seconds",
                   "drift_threshold", "auto_promote", "checked_at", "statistic", "sites",
                   "detail")  # fmt: skip
_START_COLUMNS = ("at", "run_id", "trigger", "statistic", "sites", "baseline_model_id", "detail")


def register(app: typer.Typer) -> None:
    """Add the ``model``, ``rollout`` and ``run`` sub-commands to the ``fedge`` application."""
    app.add_typer(_model_commands(), name="model")
    app.add_typer(_rollout_commands(), name="rollout")
    app.add_typer(_run_commands(), name="run")
