"""deploy/grafana as shipped, against the real processes: every metric a dashboard panel,
a dashboard variable or an alert rule reads is exported by a running ``fedge agent`` or
``fedge coordinator serve``, scraped over HTTP; both run with ``--log-format json`` and
every line they log is one JSON object. One agent (on a real Mosquitto) and one
coordinator for the whole module."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from fedge.coordinator import DEV_ADMIN_KEY
from tests.deploy.promql import histogram_base, metric_names
from tests.edge_agent.conftest import (
    MOSQUITTO,
    Models,
    Mosquitto,
    agent_env,
    tiny_models,  # noqa: F401 (the session's models)
    write_config,
)
from tests.support.ports import free_port, service, wait_for_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = DEPLOY / "grafana" / "provisioning"
RULES = DEPLOY / "prometheus" / "fedge-alerts.yml"
FEDGE = str(Path(sys.executable).with_name("fedge"))
#: Series Prometheus writes for every scrape itself.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


@dataclass(frozen=True)
class Live:
    agent: str  # http://host:port of the agent's /metrics
    coordinator: str
    agent_log: Path
    coordinator_log: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_models: Models) -> Iterator[Live]:  # noqa: F811
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed (deploy/system-deps.sh installs it)")
    root = tmp_path_factory.mktemp("monitoring")
    broker = Mosquitto(root / "mosquitto")
    broker.start()
    metrics_port, api_port = free_port(), free_port()
    config = write_config(
        root,
        broker.url,
        model={"initial": str(tiny_models.good)},
        metrics={"enabled": True, "host": "127.0.0.1", "port": metrics_port},
    )
    env = {
        **agent_env(),
        "FEDGE_COORDINATOR_DATABASE_URL": f"sqlite:///{root / 'c.db'}",
        "FEDGE_COORDINATOR_MODEL_STORE": str(root / "models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(root / "coordinator.key"),
        "XDG_STATE_HOME": str(root / "state"),
    }
    agent_cmd = [FEDGE, "agent", "run", "--config", str(config), "--log-format", "json"]
    coordinator_cmd = [FEDGE, "coordinator", "serve", "--port", str(api_port),
                       "--log-format", "json"]  # fmt: skip
    try:
        with (
            service(coordinator_cmd, root / "coordinator.log", env),
            service(agent_cmd, root / "agent.log", agent_env()),
        ):
            wait_for_port(api_port, timeout=90)
            wait_for_port(metrics_port, timeout=90)
            yield Live(
                f"http://127.0.0.1:{metrics_port}",
                f"http://127.0.0.1:{api_port}",
                root / "agent.log",
                root / "coordinator.log",
            )
    finally:
        broker.stop()


def exported(base: str) -> dict[str, str]:
    """Every series name ``base/metrics`` can hold, by its ``# TYPE`` lines (a labelled
    family with no child yet has no sample but has its type): name -> type."""
    answer = httpx.get(f"{base}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    names: dict[str, str] = {}
    for line in answer.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names[name] = kind
        elif line and not line.startswith("#"):
            names.setdefault(line.split("{", 1)[0].split(" ", 1)[0], "sample")
    return names


def missing(names: set[str], series: dict[str, str]) -> set[str]:
    """The names not among ``series``: ``x_bucket``, ``x_sum`` and ``x_count`` need ``x``
    to be a histogram."""
    out = set()
    for name in names - SCRAPE_SERIES:
        base = histogram_base(name)
        if base is not None and series.get(base) == "histogram":
            continue
        if base is None and series.get(name) not in (None, "histogram"):
            continue
        out.add(name)
    return out


def panel_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) of every panel target and every query variable."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"{dashboard['uid']}: {panel['title']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        yield f"{dashboard['uid']}: ${variable['name']}", query["query"]


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def read_by_process(expressions: Iterator[tuple[str, str]]) -> dict[str, set[str]]:
    """Each expression's metric names; every expression names at least one."""
    found: dict[str, set[str]] = {}
    for where, expr in expressions:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        found[where] = names
    return found


def check_against(live: Live, found: dict[str, set[str]]) -> None:
    agent, coordinator = exported(live.agent), exported(live.coordinator)
    problems = []
    for where, names in found.items():
        for name in names:
            process = coordinator if name.startswith("fedge_coordinator_") else agent
            if missing({name}, process):
                problems.append(f"{where}: {name}")
    assert not problems, "not exported by the running processes:\n" + "\n".join(problems)


def test_every_dashboard_metric_is_exported_by_the_running_agent_or_coordinator(
    live: Live,
) -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "fedge-fleet", "fedge-agent", "fedge-runs", "fedge-decisions", "fedge-coordinator-api",
    }  # fmt: skip
    found: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == path.stem and dashboard["panels"]
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "fedge-prometheus"
        found |= read_by_process(panel_expressions(dashboard))
    names = set().union(*found.values())
    assert {n for n in names if n.startswith("fedge_agent_")}, names
    assert {n for n in names if n.startswith("fedge_coordinator_")}, names
    check_against(live, found)


def test_every_alert_rule_metric_is_exported_by_the_running_agent_or_coordinator(
    live: Live,
) -> None:
    check_against(live, read_by_process(rule_expressions()))


def test_the_check_catches_a_metric_nobody_exports(live: Live) -> None:
    """The check itself: a misspelt counter, a histogram's suffix on a gauge, a
    non-histogram's ``_bucket``: each one fails it."""
    for expr in (
        "rate(fedge_agent_messages_inn_total[5m])",
        "fedge_agent_store_bytes_bucket",
        'sum(rate(fedge_coordinator_requests_total_count{status="500"}[5m]))',
    ):
        with pytest.raises(AssertionError, match="not exported"):
            check_against(live, {"probe": metric_names(expr)})


def test_the_provisioning_points_the_dashboards_at_the_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "fedge.yml").read_text())
    [source] = datasources["datasources"]
    assert source["uid"] == "fedge-prometheus" and source["type"] == "prometheus"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "fedge.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_both_processes_log_one_json_object_per_line(live: Live) -> None:
    answer = httpx.post(
        f"{live.coordinator}/api/v1/enrollment/tokens",
        json={"ttl_seconds": 60},
        headers={"X-API-Key": DEV_ADMIN_KEY},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    events: dict[str, list[dict[str, Any]]] = {}
    for name, path in (("agent", live.agent_log), ("coordinator", live.coordinator_log)):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert lines, f"the {name} logged nothing"
        for line in lines:
            record = json.loads(line)  # a line that is not one JSON object fails here
            assert {"ts", "level", "logger", "message"} <= set(record), record
            events.setdefault(name, []).append(record)
    assert any(r.get("event") == "agent.start" for r in events["agent"]), events["agent"]
    coordinator = events["coordinator"]
    assert any(r.get("event") == "coordinator.start" for r in coordinator), coordinator
    [token] = [r for r in coordinator if r.get("event") == "enrollment.token"]
    assert token["actor"] == "operator:bootstrap-admin" and token["level"] == "info"
