"""Settings: development defaults work; other environments refuse default secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.coordinator import (
    DEV_ADMIN_KEY,
    Coordinator,
    CoordinatorSettings,
    DatabaseError,
    Environment,
    SettingsError,
    load_settings,
)

STRONG = "x" * 32


def test_development_defaults() -> None:
    settings = load_settings()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.database_url.startswith("sqlite:///")
    assert settings.admin_api_key.get_secret_value() == DEV_ADMIN_KEY


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGE_COORDINATOR_DATABASE_URL", "postgresql+psycopg://u@db:5432/fedge")
    monkeypatch.setenv("FEDGE_COORDINATOR_PORT", "9000")
    settings = load_settings()
    assert (settings.database_url, settings.port) == ("postgresql+psycopg://u@db:5432/fedge", 9000)


def test_env_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / "coordinator.env"
    env.write_text(
        f"FEDGE_COORDINATOR_ENVIRONMENT=production\nFEDGE_COORDINATOR_ADMIN_API_KEY={STRONG}\nFEDGE_COORDINATOR_KEK=another-secret\n"
    )
    settings = load_settings(_env_file=env)
    assert settings.environment is Environment.PRODUCTION


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kek": "k" * 16}, "admin_api_key keeps its development default"),
        ({"admin_api_key": STRONG}, "kek keeps its development default"),
        ({"admin_api_key": "short-but-custom", "kek": "k" * 16}, "at least 24 characters"),
    ],
)
def test_production_refuses_default_or_weak_secrets(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environment="production", **overrides)
    assert load_settings(environment="production", admin_api_key=STRONG, kek="k" * 16)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"database_url": "mysql://db/fedge"}, "database_url"),
        ({"superlink": "no-port"}, "superlink"),
        ({"superlink": "host:99999"}, "superlink"),
        ({"port": 0}, "port"),
        ({"replay_window_seconds": 0}, "replay_window_seconds"),
        ({"environment": "staging"}, "environment"),
        ({"unknown_option": 1}, "unknown_option"),
    ],
)
def test_bad_values_are_refused(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        load_settings(**overrides)


def test_wrong_kek_for_the_identity_file(tmp_path: Path, identity_file: Path) -> None:
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        identity_file=identity_file,
        kek="not-the-dev-kek",  # type: ignore[arg-type]
        model_store=tmp_path / "models",
    )
    with pytest.raises(SettingsError, match="coordinator identity"):
        Coordinator(settings)


def test_unreachable_database_is_a_typed_error(tmp_path: Path, identity_file: Path) -> None:
    from tests.support.ports import free_port

    settings = CoordinatorSettings(
        database_url=f"postgresql+psycopg://fedge@127.0.0.1:{free_port()}/none",
        identity_file=identity_file,
        model_store=tmp_path / "models",
    )
    with pytest.raises(DatabaseError, match="cannot connect"):
        Coordinator(settings)


def test_an_unknown_environment_variable_is_refused_like_an_env_file_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FEDGE_COORDINATOR_SUPERLNK", "127.0.0.1:8000")  # misspelt
    with pytest.raises(SettingsError) as from_env:
        load_settings()
    monkeypatch.delenv("FEDGE_COORDINATOR_SUPERLNK")
    env = tmp_path / "coordinator.env"
    env.write_text("FEDGE_COORDINATOR_SUPERLNK=127.0.0.1:8000\n")
    with pytest.raises(SettingsError) as from_file:
        load_settings(_env_file=env)
    expected = "fedge_coordinator_superlnk: not a coordinator setting"
    assert expected in str(from_env.value) and expected in str(from_file.value)
    # Known names stay case-insensitive; other prefixes are none of the coordinator's business.
    monkeypatch.setenv("fedge_coordinator_port", "9000")
    monkeypatch.setenv("FEDGE_AGENT_SOMETHING", "x")
    assert load_settings().port == 9000


def test_state_defaults_to_a_private_directory_outside_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    home = tmp_path / "state" / "fedge" / "coordinator"
    assert settings.state_dir == home
    assert settings.database_url == f"sqlite:///{home / 'coordinator.db'}"
    assert (settings.identity_file, settings.model_store, settings.flwr_home) == (
        home / "coordinator.key",
        home / "models",
        home / "flwr",
    )
    settings.make_state_dir()
    assert home.stat().st_mode & 0o777 == 0o700
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert (
        load_settings().state_dir
        == tmp_path / "home" / ".local" / "state" / "fedge" / "coordinator"
    )
    moved = load_settings(state_dir=tmp_path / "elsewhere", model_store=tmp_path / "blobs")
    assert moved.identity_file == tmp_path / "elsewhere" / "coordinator.key"
    assert moved.model_store == tmp_path / "blobs"


def test_no_state_directory_when_every_path_is_set_elsewhere(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path / "unused",
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        model_store=tmp_path / "models",
        identity_file=tmp_path / "c.key",
        flwr_home=tmp_path / "flwr",
    )
    settings.make_state_dir()
    assert not (tmp_path / "unused").exists()
