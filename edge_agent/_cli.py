"""``fedge agent run|check|rollback``: thin typer wrappers; typed errors exit 2 via fedge._cli."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedge.core import LogFormat

_CONFIG = Annotated[Path, typer.Option("--config", "-c", help="The agent's agent.toml.")]
_LOG_FORMAT = Annotated[
    LogFormat,
    typer.Option("--log-format", help="Log lines: text (readable) or json (one object a line)."),
]


def run(config: _CONFIG = Path("agent.toml"), log_format: _LOG_FORMAT = LogFormat.TEXT) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    import logging
    import signal
    import threading

    from fedge.core import configure_logging
    from fedge.edge_agent._agent import Agent
    from fedge.edge_agent._config import load_config

    configure_logging(log_format)
    cfg = load_config(config)
    agent = Agent(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("fedge.edge_agent").info(
        "fedge agent %s: serving model %s", cfg.site, agent.version or "(none yet)",
        extra={"event": "agent.start", "site": cfg.site, "model_version": agent.version},
    )  # fmt: skip
    agent.run(stop)


def check(config: _CONFIG = Path("agent.toml")) -> None:
    """Validate the config, the store, the model, the keys and the broker connection."""
    from fedge.edge_agent._broker import probe
    from fedge.edge_agent._config import load_config, read_password
    from fedge.edge_agent._errors import AgentError
    from fedge.edge_agent._lifecycle import ModelManager
    from fedge.edge_agent._opener import ModelOpener
    from fedge.edge_agent._store import Store
    from fedge.edge_agent._supernode import resolve_binary

    cfg = load_config(config)
    typer.echo(f"ok    config {config} (site {cfg.site})")
    failures: list[str] = []

    def step(name: str, action: object) -> None:
        try:
            detail = action() if callable(action) else ""
            typer.echo(f"ok    {name}{': ' + detail if detail else ''}")
        except AgentError as exc:
            failures.append(name)
            typer.secho(f"FAIL  {name}: {exc}", fg=typer.colors.RED)

    def store_and_model() -> str:
        store = Store(
            cfg.store.path, synchronous=cfg.store.synchronous, step_seconds=cfg.step_seconds
        )
        try:
            serving = ModelManager(store, cfg.model).load_serving()
            return (
                f"{cfg.store.path} ({store.sample_count()} samples), model "
                f"{serving.version if serving else '(none yet: forecasts start when one arrives)'}"
            )
        finally:
            store.close()

    step("store and model", store_and_model)
    if cfg.security is not None:
        step("site keys and coordinator keys", lambda: (ModelOpener(cfg), "")[1])
    if cfg.coordinator is not None:
        from fedge.edge_agent._uplink import describe_link

        step("coordinator", lambda: describe_link(cfg))
    step(
        "broker",
        lambda: f"{cfg.broker.host}:{cfg.broker.port} accepted " + probe(cfg, read_password(cfg)),
    )
    if cfg.federation is not None:
        fed = cfg.federation
        step("flower-supernode", lambda: f"{resolve_binary(fed.supernode)} -> {fed.superlink}")
    if failures:
        raise AgentError(f"agent check failed: {', '.join(failures)}")


def rollback(config: _CONFIG = Path("agent.toml")) -> None:
    """Serve the previously served model again (a running agent picks it up within 1 s)."""
    from fedge.edge_agent._config import load_config
    from fedge.edge_agent._lifecycle import rollback as do_rollback
    from fedge.edge_agent._store import Store

    cfg = load_config(config)
    store = Store(cfg.store.path, synchronous=cfg.store.synchronous, step_seconds=cfg.step_seconds)
    try:
        record = do_rollback(store)
    finally:
        store.close()
    typer.echo(f"now serving {record.version}")


def register(app: typer.Typer) -> None:
    """Add the ``agent`` sub-command to the ``fedge`` application."""
    agent = typer.Typer(help="The gNB edge agent: MQTT KPIs in, forecasts and alerts out.")
    agent.command("run")(run)
    agent.command("check")(check)
    agent.command("rollback")(rollback)
    app.add_typer(agent, name="agent")
