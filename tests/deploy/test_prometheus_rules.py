"""deploy/prometheus as shipped: promtool accepts the scrape config and the alert rules,
the rules' unit tests pass, and each alert's tests depend on its expression: with the
expression replaced by one that never fires, or by one that always does, they fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS / "fedge-alerts.yml"
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (deploy/system-deps.sh installs it)"
)


def promtool(*args: str | Path, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def alerts(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def alerts_under_test() -> set[str]:
    names = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            names |= {t["alertname"] for t in case.get("alert_rule_test", [])}
    return names


def test_promtool_accepts_the_scrape_config_and_the_rules() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout
    rules = promtool("check", "rules", RULES)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    count = len(alerts(yaml.safe_load(RULES.read_text())))
    assert f"SUCCESS: {count} rules found" in rules.stdout


def test_every_alert_has_unit_tests_that_pass() -> None:
    shipped = {r["alert"] for r in alerts(yaml.safe_load(RULES.read_text()))}
    assert {
        "FedgeAgentDown",
        "FedgeKpiIngestStalled",
        "FedgeForecastErrorDrift",
        "FedgeRunFailed",
        "FedgeRolloutRolledBack",
        "FedgeCoordinatorApi5xx",
    } <= shipped
    assert alerts_under_test() == shipped
    done = promtool("test", "rules", *UNIT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def failed_alerts(output: str) -> set[str]:
    return set(re.findall(r"alertname: (\w+), time:", output))


@pytest.mark.parametrize(
    "expr",
    [
        "vector(0) > 1",  # never fires: every test expecting an alert fails
        'label_replace(vector(1), "instance", "anywhere", "", "")',  # always: the rest fail
    ],
    ids=["never", "always"],
)
def test_each_alerts_tests_fail_when_its_expression_is_broken(tmp_path: Path, expr: str) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for rule in alerts(rules):
        rule["expr"] = expr
    (tmp_path / "fedge-alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests").mkdir()
    for path in UNIT_TESTS:
        shutil.copy(path, tmp_path / "tests" / path.name)
    broken = promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yml")), cwd=tmp_path)
    assert broken.returncode != 0
    assert failed_alerts(broken.stdout + broken.stderr) == alerts_under_test()
