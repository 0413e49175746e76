"""Coordinator settings from the environment (``FEDGE_COORDINATOR_*``) or an env file.

Development runs work out of the box with built-in secrets; any other environment must
be given its own, so a forgotten setting cannot ship a well-known admin key.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Final

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedge.coordinator._errors import SettingsError

DEV_ADMIN_KEY: Final = "fedge-dev-admin-key"
DEV_KEK: Final = "fedge-dev-kek"
APP_DIR: Final = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class CoordinatorSettings(BaseSettings):
    """Everything ``fedge coordinator serve`` needs to know."""

    model_config = SettingsConfigDict(env_prefix="FEDGE_COORDINATOR_", extra="forbid")

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite:///coordinator.db"
    model_store: Path = Path("coordinator-models")
    identity_file: Path = Path("coordinator.key")
    kek: SecretStr = SecretStr(DEV_KEK)
    admin_api_key: SecretStr = SecretStr(DEV_ADMIN_KEY)
    # Federation runs (coordinator/_runs.py); superlink unset: the coordinator starts none.
    superlink: str | None = None  # the SuperLink's Control API, HOST:PORT
    flwr_app: Path = APP_DIR  # the Flower app `flwr run` ships: fedge's pyproject.toml
    flwr_home: Path = Path("coordinator-flwr")  # FLWR_HOME of the coordinator's `flwr run`
    public_url: str | None = None  # where ServerApps reach the coordinator; default host:port
    policy_dir: Path | None = None  # from `fedge decisions train`; unset: no decisions API
    replay_window_seconds: float = Field(default=300.0, gt=0, le=3600)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError("database_url must start with sqlite:/// or postgresql+psycopg://")
        return value

    @field_validator("superlink")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("superlink must be HOST:PORT")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return None if value is None else value.rstrip("/")

    @property
    def url(self) -> str:
        """The base URL ServerApps report to."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @model_validator(mode="after")
    def _no_default_secrets(self) -> CoordinatorSettings:
        if self.environment is Environment.DEVELOPMENT:
            return self
        if self.admin_api_key.get_secret_value() == DEV_ADMIN_KEY:
            raise ValueError("admin_api_key keeps its development default")
        if self.kek.get_secret_value() == DEV_KEK:
            raise ValueError("kek keeps its development default")
        if len(self.admin_api_key.get_secret_value()) < 24:
            raise ValueError("admin_api_key must be at least 24 characters")
        return self


def load_settings(**overrides: object) -> CoordinatorSettings:
    """Settings from the environment plus ``overrides``; invalid ones raise SettingsError."""
    try:
        return CoordinatorSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid coordinator settings: {problems}") from exc
