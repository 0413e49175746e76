"""Coordinator settings from the environment (``FEDGE_COORDINATOR_*``) or an env file.

Development runs work out of the box with built-in secrets; any other environment must
be given its own, so a forgotten setting cannot ship a well-known admin key. A setting
name that is not one of these is refused, wherever it comes from: a misspelt variable
would otherwise leave its default in force without a word. State (database, key, models)
defaults to a private directory outside the working directory, so a coordinator started
in a checkout writes nothing into it.
"""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from fedge.coordinator._errors import SettingsError

DEV_ADMIN_KEY: Final = "fedge-dev-admin-key"
DEV_KEK: Final = "fedge-dev-kek"
APP_DIR: Final = Path(__file__).resolve().parent.parent
KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/fedge/coordinator``, else ``~/.local/state/fedge/coordinator``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fedge" / "coordinator"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 possibly in brackets) is this host."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Environment(EnvSettingsSource):
    """The process environment, with every unknown ``FEDGE_COORDINATOR_*`` variable kept
    as an input of its own, so that ``extra="forbid"`` refuses it by name exactly as it
    refuses an unknown key of an env file."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix = self.env_prefix if self.case_sensitive else self.env_prefix.lower()
        known = {prefix + (name if self.case_sensitive else name.lower())
                 for name in self.settings_cls.model_fields}  # fmt: skip
        for name, value in self.env_vars.items():
            if name.startswith(prefix) and name not in known:
                data[name] = value
        return data


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class CoordinatorSettings(BaseSettings):
    """Everything ``fedge coordinator serve`` needs to know."""

    model_config = SettingsConfigDict(env_prefix="FEDGE_COORDINATOR_", extra="forbid")

    environment: Environment = Environment.DEVELOPMENT
    # Where the other state paths default to (each may be set on its own instead).
    state_dir: Path = Field(default_factory=default_state_dir)
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['state_dir'] / 'coordinator.db'}"
    )
    model_store: Path = Field(default_factory=lambda data: data["state_dir"] / "models")
    identity_file: Path = Field(default_factory=lambda data: data["state_dir"] / "coordinator.key")
    kek: SecretStr = SecretStr(DEV_KEK)
    admin_api_key: SecretStr = SecretStr(DEV_ADMIN_KEY)
    # Federation runs (coordinator/_runs.py); superlink unset: starting one answers 503.
    # HOST:PORT of the SuperLink, whose Fleet, Control and Runtime APIs share one port
    # (Flower 1.41: 8000 by default).
    superlink: str | None = None
    # How the coordinator's `flwr` reaches the SuperLink's Control API: TLS, verified with
    # ``superlink_root_certificates`` (the PEM CA bundle that signs the SuperLink's
    # certificate) or, unset, with the system's trust store; plaintext only with
    # ``superlink_insecure`` and only to a loopback SuperLink (one host, nothing on the wire).
    superlink_root_certificates: Path | None = None
    superlink_insecure: bool = False
    flwr_app: Path = APP_DIR  # the Flower app `flwr run` ships: fedge's pyproject.toml
    # FLWR_HOME of the coordinator's `flwr run`
    flwr_home: Path = Field(default_factory=lambda data: data["state_dir"] / "flwr")
    public_url: str | None = None  # where ServerApps reach the coordinator; default host:port
    policy_dir: Path | None = None  # from `fedge decisions train`; unset: decisions answer 503
    replay_window_seconds: float = Field(default=300.0, gt=0, le=3600)
    # Request bodies over these are refused (413) before anything reads them
    # (coordinator/api/_limits.py): most routes; decision and forecast batches; models
    # (a 16 MiB ONNX file is 22.4 MB of base64).
    max_body_bytes: int = Field(default=512 * KIB, ge=KIB, le=GIB)
    max_batch_body_bytes: int = Field(default=4 * MIB, ge=KIB, le=GIB)
    max_model_body_bytes: int = Field(default=24 * MIB, ge=KIB, le=GIB)
    # Refusals (401, 403, 413) audited per client address, a token bucket per worker:
    # ``denial_burst`` at once, then ``denial_refill_per_minute``; beyond, 429, unaudited.
    denial_burst: int = Field(default=30, ge=1, le=1_000_000)
    denial_refill_per_minute: float = Field(default=30.0, gt=0, le=1_000_000)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # --- dashboard ---
    # The operator's pages at /ui (coordinator/dashboard, docs/dashboard.md): a login lasts
    # ``dashboard_session_seconds``; a site last heard from (a signed request or a health
    # report) over ``dashboard_late_seconds`` ago is shown late, over
    # ``dashboard_offline_seconds`` ago offline (agents report health every 30 s by default).
    dashboard_session_seconds: float = Field(default=8 * 3600.0, ge=60, le=7 * 86400)
    dashboard_late_seconds: float = Field(default=120.0, gt=0, le=86400)
    dashboard_offline_seconds: float = Field(default=600.0, gt=0, le=30 * 86400)
    # HTTPS: the server's certificate (PEM, its chain after it) and private key; unset,
    # the API is plain HTTP (loopback, or behind a proxy that terminates TLS).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # --- rollout ---
    # Staged model rollout (coordinator/_rollout.py): a promoted version goes to this share
    # of the active sites first (at least one); the rest follow once every canary gave its
    # verdict or the canary timeout passed, unless more than ``max_reject_share`` of the
    # canaries rejected it or their reported forecast error grew by more than
    # ``max_error_increase`` (relative): then the fleet is rolled back. The fleet phase ends
    # when every active site accepted, or at the fleet timeout; the check runs every
    # ``check_seconds`` even when no site calls.
    rollout_canary_share: float = Field(default=0.2, gt=0, le=1)
    rollout_canary_timeout_seconds: float = Field(default=600.0, gt=0, le=7 * 86400)
    rollout_max_reject_share: float = Field(default=0.34, ge=0, lt=1)
    rollout_max_error_increase: float = Field(default=0.1, ge=0, le=100)
    rollout_fleet_timeout_seconds: float = Field(default=3600.0, gt=0, le=30 * 86400)
    rollout_check_seconds: float = Field(default=5.0, ge=0.05, le=3600)

    # --- live decisions ---
    # The decision loop (coordinator/_live_decisions.py), on once ``policy_dir`` is set:
    # a strategic (energy mode) decision per site every ``strategic_interval_seconds``, a
    # tactical (slice shares) one every ``tactical_interval_seconds``, on wall-clock slots
    # (with several workers, one worker takes each slot). A site whose newest forecast or
    # actual is older than ``max_forecast_age_seconds`` (default: twice the tactical
    # interval) gets the safe default. ``decision_step_seconds``: the sites' step grid
    # (``ts // step_seconds``), 5 minutes for the trained policies. ``topology_file``:
    # the cluster topology (TOML, docs/live-loop.md), put in force at every start.
    strategic_interval_seconds: float = Field(default=900.0, ge=0.5, le=86400)
    tactical_interval_seconds: float = Field(default=300.0, ge=0.5, le=86400)
    max_forecast_age_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)
    decision_step_seconds: int = Field(default=300, ge=1, le=3600)
    topology_file: Path | None = None

    @property
    def forecast_age_limit(self) -> float:
        """How old a site's newest inputs may be for a decision to use them."""
        if self.max_forecast_age_seconds is not None:
            return self.max_forecast_age_seconds
        return 2 * self.tactical_interval_seconds

    # --- retraining ---
    # Site key rotation (POST /api/v1/site/rotate): the previous key generation stays
    # valid this long, so a site can restart its agent on the new key file.
    rotation_grace_seconds: float = Field(default=7 * 86400.0, ge=0, le=90 * 86400)
    # The retraining policy (coordinator/_retraining.py), a thread of the coordinator once
    # ``retrain_enabled`` and ``superlink`` are set: a run every ``retrain_interval_seconds``
    # (0: no schedule), and a drift check every ``drift_check_seconds`` (0: none) that
    # starts a run when the median over sites of (latest mean RMSE / the site's RMSE when
    # the serving version was first seen) exceeds 1 + ``drift_threshold``, from at least
    # ``drift_min_sites`` sites and ``retrain_min_interval_seconds`` after the last start.
    retrain_enabled: bool = False
    retrain_interval_seconds: float = Field(default=0.0, ge=0, le=365 * 86400)
    drift_check_seconds: float = Field(default=0.0, ge=0, le=7 * 86400)
    drift_threshold: float = Field(default=0.2, gt=0, le=100)
    drift_min_sites: int = Field(default=3, ge=1, le=1_000_000)
    retrain_min_interval_seconds: float = Field(default=3600.0, ge=0, le=365 * 86400)
    # The run the policy starts: a JSON or TOML run request (num_rounds, strategy, codec,
    # config), checked against the Flower app's run config at start; unset: the defaults.
    retrain_run_config: str | None = Field(default=None, max_length=20_000)
    # Promote a run's model when its ``promote_metric`` (lower is better; eval_rmse is
    # the sites' held-out RMSE) beats the serving version's.
    auto_promote: bool = False
    promote_metric: str = Field(default="eval_rmse", min_length=1, max_length=64)

    @field_validator("retrain_run_config")
    @classmethod
    def _run_request(cls, value: str | None) -> str | None:
        """A run request the API would take (its keys are checked against the app later)."""
        if value is not None:
            from fedge.coordinator._retraining import parse_run_request

            parse_run_request(value)
        return value

    @model_validator(mode="after")
    def _retraining_can_start(self) -> CoordinatorSettings:
        if self.retrain_enabled and self.superlink is None:
            raise ValueError("retrain_enabled needs superlink (runs start on a SuperLink)")
        if self.retrain_enabled and not (self.retrain_interval_seconds or self.drift_check_seconds):
            raise ValueError(
                "retrain_enabled needs retrain_interval_seconds or drift_check_seconds"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls), dotenv_settings, file_secret_settings

    def make_state_dir(self) -> None:
        """Create the state directory, owner-only, when a state path lies inside it (the
        database and the key would otherwise land in a directory anyone may list)."""
        state = self.state_dir.resolve()
        paths = [self.model_store, self.identity_file]
        if self.superlink is not None:  # flwr_home is used, and made, only to start runs
            paths.append(self.flwr_home)
        if self.database_url.startswith("sqlite:///"):
            paths.append(Path(self.database_url.removeprefix("sqlite:///")))
        if any(path.resolve().is_relative_to(state) for path in paths):
            state.mkdir(parents=True, exist_ok=True, mode=0o700)

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

    @field_validator("superlink_root_certificates")
    @classmethod
    def _pem_certificates(cls, value: Path | None) -> Path | None:
        """A CA bundle ``flwr`` can read: checked now, not at the first run's start."""
        if value is None:
            return None
        from cryptography import x509

        try:
            data = value.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from exc
        try:
            x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ValueError(f"{value} holds no PEM certificate") from exc
        return value.resolve()

    @model_validator(mode="after")
    def _plaintext_on_loopback_only(self) -> CoordinatorSettings:
        if not self.superlink_insecure:
            return self
        if self.superlink_root_certificates is not None:
            raise ValueError(
                "superlink_insecure and superlink_root_certificates exclude each other"
            )
        if self.superlink is not None and not is_loopback(self.superlink.rpartition(":")[0]):
            raise ValueError(
                "superlink_insecure: plaintext only to a loopback SuperLink (127.0.0.1, ::1, "
                f"localhost), not {self.superlink}; give superlink_root_certificates instead"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _tls_pair(self) -> CoordinatorSettings:
        """A certificate and its key that load together: checked now, not at the first
        connection."""
        if self.tls_certfile is None and self.tls_keyfile is None:
            return self
        if self.tls_certfile is None or self.tls_keyfile is None:
            raise ValueError("tls_certfile and tls_keyfile go together")
        import ssl

        for name in ("tls_certfile", "tls_keyfile"):
            path: Path = getattr(self, name)
            try:
                path.open("rb").close()
            except OSError as exc:
                raise ValueError(f"{name}: cannot read {path}: {exc.strerror or exc}") from exc
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            # an encrypted key gets an empty password, not OpenSSL's prompt on the terminal
            context.load_cert_chain(self.tls_certfile, self.tls_keyfile, password=lambda: "")
        except ssl.SSLError as exc:
            raise ValueError(
                f"tls_certfile {self.tls_certfile} and tls_keyfile {self.tls_keyfile} are "
                f"not a PEM certificate and its unencrypted key: {exc.reason or exc}"
            ) from exc
        return self

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """The HTTPS certificate and key files, or None for plain HTTP."""
        if self.tls_certfile is None or self.tls_keyfile is None:
            return None
        return self.tls_certfile, self.tls_keyfile

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    @property
    def url(self) -> str:
        """The base URL ServerApps report to."""
        return self.public_url or f"{self.scheme}://{self.host}:{self.port}"

    @model_validator(mode="after")
    def _larger_bodies_where_they_belong(self) -> CoordinatorSettings:
        """A batch or model route never takes less than every other route."""
        for name in ("max_batch_body_bytes", "max_model_body_bytes"):
            if getattr(self, name) < self.max_body_bytes:
                raise ValueError(f"{name} must be at least max_body_bytes")
        return self

    @model_validator(mode="after")
    def _offline_after_late(self) -> CoordinatorSettings:
        if self.dashboard_offline_seconds <= self.dashboard_late_seconds:
            raise ValueError("dashboard_offline_seconds must be over dashboard_late_seconds")
        return self

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
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: "
            + ("not a coordinator setting" if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors()
        )
        raise SettingsError(f"invalid coordinator settings: {problems}") from exc
