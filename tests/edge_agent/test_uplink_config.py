"""agent.toml's [coordinator]: defaults, and one typed error per validation rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedge.edge_agent import ConfigError, parse_config


def _data(tmp_path: Path, coordinator: dict[str, Any] | None, *, security: bool = True) -> Any:
    kek = tmp_path / "kek"
    kek.write_bytes(b"site-kek\n")
    kek.chmod(0o600)
    data: dict[str, Any] = {
        "agent": {"site": "ab" * 16},
        "store": {"path": "agent.db"},
        "model": {"dir": "models"},
    }
    if security:
        data["security"] = {
            "key_file": "site.key",
            "kek_file": "kek",
            "coordinator_keys": "coordinator.pub",
        }
    if coordinator is not None:
        data["coordinator"] = coordinator
    return data


def test_without_a_coordinator_section_there_is_no_link(tmp_path: Path) -> None:
    assert parse_config(_data(tmp_path, None), tmp_path).coordinator is None


def test_defaults_and_values(tmp_path: Path) -> None:
    cfg = parse_config(_data(tmp_path, {"url": "http://10.0.0.1:8000/"}), tmp_path).coordinator
    assert cfg is not None
    assert (cfg.url, cfg.ca_file, cfg.upload_interval_s, cfg.health_interval_s) == (
        "http://10.0.0.1:8000", None, 0.2, 30.0,
    )  # fmt: skip
    assert (cfg.batch_max, cfg.model_poll_s, cfg.timeout_s, cfg.action_wait_s) == (
        1000, 30.0, 10.0, 25.0,
    )  # fmt: skip
    (tmp_path / "ca.pem").write_text("not checked here\n")
    full = {
        "url": "https://coordinator.example",
        "ca_file": "ca.pem",
        "upload_interval_s": 0.5,
        "health_interval_s": 5,
        "batch_max": 2000,
        "model_poll_s": 10,
        "timeout_s": 3,
        "action_wait_s": 30,
    }
    cfg = parse_config(_data(tmp_path, full), tmp_path).coordinator
    assert cfg is not None and cfg.ca_file == tmp_path / "ca.pem" and cfg.batch_max == 2000


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "coordinator.url: required"),
        ({"url": 8000}, "coordinator.url: expected str"),
        ({"url": "ftp://host"}, "coordinator.url: must look like http"),
        ({"url": "http://"}, "coordinator.url: must look like http"),
        ({"url": "http://host:99999"}, "coordinator.url: bad port"),
        ({"url": "http://host/api"}, "coordinator.url: only scheme, host and port"),
        ({"url": "http://u@host"}, "coordinator.url: only scheme, host and port"),
        ({"url": "http://host?x=1"}, "coordinator.url: only scheme, host and port"),
        ({"url": "http://host", "ca_file": "ca.pem"}, "coordinator.ca_file: a CA needs an https"),
        ({"url": "https://host", "ca_file": "absent.pem"}, "coordinator.ca_file: no such file"),
        ({"url": "http://host", "upload_interval_s": 0}, "coordinator.upload_interval_s: must be > 0"),
        ({"url": "http://host", "upload_interval_s": -0.2}, "coordinator.upload_interval_s: must be"),
        ({"url": "http://host", "upload_interval_s": float("nan")}, "coordinator.upload_interval_s: must"),
        ({"url": "http://host", "upload_interval_s": 10.5}, "coordinator.upload_interval_s: at most 10"),
        ({"url": "http://host", "upload_interval_s": float("inf")}, "coordinator.upload_interval_s: at most"),
        ({"url": "http://host", "upload_interval_s": "2"}, "coordinator.upload_interval_s: expected float"),
        ({"url": "http://host", "health_interval_s": -1}, "coordinator.health_interval_s: must be"),
        ({"url": "http://host", "batch_max": 0}, "coordinator.batch_max: must be > 0"),
        ({"url": "http://host", "batch_max": 2001}, "coordinator.batch_max: at most 2000"),
        ({"url": "http://host", "batch_max": 1.5}, "coordinator.batch_max: expected int"),
        ({"url": "http://host", "model_poll_s": "often"}, "coordinator.model_poll_s: expected float"),
        ({"url": "http://host", "timeout_s": 0}, "coordinator.timeout_s: must be > 0"),
        ({"url": "http://host", "action_wait_s": 31}, "coordinator.action_wait_s: at most 30"),
        ({"url": "http://host", "action_wait_s": True}, "coordinator.action_wait_s: expected float"),
        ({"url": "http://host", "colour": 3}, "coordinator.colour: unknown setting"),
    ],
)  # fmt: skip
def test_a_bad_value_is_a_config_error(tmp_path: Path, table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_data(tmp_path, table), tmp_path)
    assert str(info.value).startswith(message), str(info.value)


def test_a_coordinator_needs_the_site_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"coordinator: needs a \[security\] section"):
        parse_config(_data(tmp_path, {"url": "http://host"}, security=False), tmp_path)


def test_a_coordinator_needs_the_enrolled_site_id(tmp_path: Path) -> None:
    data = _data(tmp_path, {"url": "http://host"})
    data["agent"]["site"] = "gnb-1"
    with pytest.raises(ConfigError, match=r"coordinator: agent\.site must be the enrolled site id"):
        parse_config(data, tmp_path)


def test_a_coordinator_that_is_not_a_table_is_a_config_error(tmp_path: Path) -> None:
    data = _data(tmp_path, None)
    data["coordinator"] = "http://host"
    with pytest.raises(ConfigError, match="coordinator: expected a table"):
        parse_config(data, tmp_path)
