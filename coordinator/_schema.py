"""The coordinator's records (SQLModel): Base / Create / Public / table variants.

Times are Unix seconds (float) so SQLite and PostgreSQL round-trip them identically.
The audit log is append-only: the migration installs triggers that refuse UPDATE and
DELETE on it, in both databases.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from fedge.coordinator._store import MAX_MODEL_BASE64


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class SiteState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    RETIRED = "retired"


class DecisionKind(StrEnum):
    STRATEGIC = "strategic"  # power modes from the DQN energy policy
    TACTICAL = "tactical"  # slice PRB shares from the PPO slice policy


class RoundStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"


class RunStatus(StrEnum):
    STARTING = "starting"  # handed to `flwr run`, no Flower run id yet
    RUNNING = "running"
    COMPLETED = "completed"  # every round recorded and the model version stored
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the coordinator restarted during the run
    CANCELLED = "cancelled"  # an operator stopped it (``DELETE /runs/{id}``)

    @property
    def live(self) -> bool:
        return self in (RunStatus.STARTING, RunStatus.RUNNING)


def _finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    if not all(math.isfinite(v) for v in metrics.values()):
        raise ValueError("metrics must be finite numbers")
    return metrics


#: Bounded keys and text of request bodies: metric names, run-config keys and their text.
ShortName = Annotated[str, PydanticField(max_length=64)]
ConfigText = Annotated[str, PydanticField(max_length=4096)]


# --- sites -------------------------------------------------------------------------------


class SiteBase(SQLModel):
    archetype: str | None = Field(default=None, max_length=64)
    region: str | None = Field(default=None, max_length=64)


class Site(SiteBase, table=True):
    __tablename__ = "sites"

    id: str = Field(primary_key=True, max_length=32)  # site id (key fingerprint), hex
    generation: int = 0
    public_keys: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    previous_keys: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    previous_until: float = 0.0
    status: SiteState = Field(default=SiteState.ACTIVE, max_length=16)
    enrolled_at: float
    last_seen: float | None = None


class SitePublic(SiteBase):
    id: str
    generation: int
    status: SiteState
    enrolled_at: float
    last_seen: float | None


class SiteDetail(SitePublic):
    """One site with its model state: the version the rollout assigns it and the one its
    latest health report says it serves (they differ while a delivery or gate is pending,
    or when the site's shadow gate rejected the assigned version)."""

    assigned_version: str | None = None
    served_version: str | None = None
    health_received_at: float | None = None


# --- enrollment tokens -------------------------------------------------------------------


class EnrollmentToken(SQLModel, table=True):
    __tablename__ = "enrollment_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)  # SHA3-256, hex
    expires_at: float
    created_at: float
    created_by: str = Field(max_length=64)
    used_at: float | None = None


class EnrollmentChallenge(SQLModel, table=True):
    """A begun enrollment (``security.PendingEnrollment``): shared by every worker and
    kept across restarts, until a correct proof, too many wrong ones, or its expiry."""

    __tablename__ = "enrollment_challenges"

    site_id: str = Field(primary_key=True, max_length=32)  # hex
    public_keys: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    token_hash: str = Field(max_length=64, foreign_key="enrollment_tokens.token_hash")
    challenge: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    proof_hash: str = Field(max_length=64)  # SHA-256 of the expected proof, hex
    expires_at: float = Field(index=True)
    failures: int = 0
    created_at: float


class TokenCreate(SQLModel):
    ttl_seconds: float = Field(default=86400.0, gt=0, le=30 * 86400)


class TokenIssued(SQLModel):
    token: str
    expires_at: float


# --- rounds ------------------------------------------------------------------------------


class RoundBase(SQLModel):
    run_id: str = Field(max_length=64, index=True)
    number: int = Field(ge=1)
    strategy: str = Field(max_length=32)
    codec: str = Field(default="none", max_length=32)
    participants: int = Field(default=0, ge=0)
    bytes_up: int = Field(default=0, ge=0)
    bytes_down: int = Field(default=0, ge=0)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: RoundStatus = Field(default=RoundStatus.RUNNING, max_length=16)
    started_at: float
    finished_at: float | None = None


class Round(RoundBase, table=True):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)


class RoundPublic(RoundBase):
    id: int


class RoundReport(SQLModel):
    """What the ServerApp reports for one round (``PUT /runs/{id}/rounds/{number}``)."""

    status: RoundStatus
    strategy: str = Field(max_length=32)
    codec: str = Field(default="none", max_length=32)
    participants: int = Field(default=0, ge=0, le=1_000_000)
    bytes_up: int = Field(default=0, ge=0, le=2**62)
    bytes_down: int = Field(default=0, ge=0, le=2**62)
    metrics: dict[ShortName, float] = Field(default_factory=dict, max_length=64)
    started_at: float = Field(ge=0, le=2**40)
    finished_at: float | None = Field(default=None, ge=0, le=2**40)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(metrics)


# --- federation runs ---------------------------------------------------------------------

RunConfigValue = bool | int | float | str


class RunBase(SQLModel):
    num_rounds: int = Field(default=3, ge=1, le=10_000)
    strategy: str = Field(default="fedavg", max_length=32)
    codec: str = Field(default="none", max_length=64)
    #: Other keys of the app's run config ([tool.flwr.app.config]), e.g. ``local-epochs``.
    config: dict[str, RunConfigValue] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )


class RunCreate(RunBase):
    config: dict[ShortName, bool | int | float | ConfigText] = Field(
        default_factory=dict, max_length=64
    )


class Run(RunBase, table=True):
    __tablename__ = "runs"

    id: str = Field(primary_key=True, max_length=32)  # random hex; rounds.run_id
    status: RunStatus = Field(default=RunStatus.STARTING, max_length=16)
    flwr_run_id: str | None = Field(default=None, max_length=32)  # the SuperLink's uint64
    token_hash: str = Field(max_length=64)  # SHA-256 of the run token the ServerApp sends
    model_version_id: int | None = Field(default=None, foreign_key="model_versions.id")
    rerun_of: str | None = Field(default=None, max_length=32)
    detail: str = Field(default="", max_length=500)
    created_at: float
    created_by: str = Field(max_length=64)
    finished_at: float | None = None


class RunPublic(RunBase):
    id: str
    status: RunStatus
    flwr_run_id: str | None
    model_version_id: int | None
    rerun_of: str | None
    detail: str
    created_at: float
    created_by: str
    finished_at: float | None


class RunModelReport(SQLModel):
    """The run's final global model, as ONNX (``POST /runs/{id}/model``)."""

    onnx_base64: str = Field(min_length=1, max_length=MAX_MODEL_BASE64)
    metrics: dict[ShortName, float] = Field(default_factory=dict, max_length=64)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(metrics)


class RunFailure(SQLModel):
    detail: str = Field(min_length=1, max_length=500)


# --- model versions ----------------------------------------------------------------------


class ModelVersionBase(SQLModel):
    parent_id: int | None = Field(default=None, foreign_key="model_versions.id")
    metrics: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    note: str = Field(default="", max_length=200)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(metrics)


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_versions"
    #: At most one production version, enforced by the database (a partial unique index).
    __table_args__ = (
        Index(
            "one_production_model",
            "status",
            unique=True,
            sqlite_where=text("status = 'PRODUCTION'"),
            postgresql_where=text("status = 'PRODUCTION'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True)
    size: int
    status: ModelStatus = Field(default=ModelStatus.CANDIDATE, max_length=16)
    created_at: float
    created_by: str = Field(max_length=64)
    promoted_by: str | None = Field(default=None, max_length=64)
    promoted_at: float | None = None
    replaced_id: int | None = None  # the production version this one replaced


class ModelVersionCreate(ModelVersionBase):
    onnx_base64: str = Field(min_length=1, max_length=MAX_MODEL_BASE64)
    metrics: dict[ShortName, float] = Field(default_factory=dict, max_length=64)


class ModelVersionPublic(ModelVersionBase):
    id: int
    sha256: str
    size: int
    status: ModelStatus
    created_at: float
    created_by: str
    promoted_by: str | None
    promoted_at: float | None


# --- decisions ---------------------------------------------------------------------------


class Decision(SQLModel, table=True):
    __tablename__ = "decisions"

    id: int | None = Field(default=None, primary_key=True)
    site_id: str = Field(max_length=64)
    at: float = Field(index=True)  # an append-only log: see migration 0005
    policy_version: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    action: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DecisionRequest(BaseModel):
    """Plain pydantic, not SQLModel: SQLModel's ``__init__`` wrapper cost ~0.15 ms of
    every 64-site request on top of pydantic-core's own validation."""

    kind: DecisionKind
    site_ids: list[Annotated[str, PydanticField(max_length=64)]] = PydanticField(
        min_length=1, max_length=1024
    )
    observations: list[Annotated[list[float], PydanticField(max_length=64)]] = PydanticField(
        min_length=1, max_length=1024
    )


class DecisionAnswer(SQLModel):
    kind: DecisionKind
    version: str
    site_ids: list[str]
    actions: list[dict[str, Any]]


# --- forecasts ---------------------------------------------------------------------------


class ForecastBase(SQLModel):
    cell: str = Field(min_length=1, max_length=64)
    step: int = Field(ge=0, le=2**40, sa_type=BigInteger)  # the step forecast
    made_step: int = Field(ge=0, le=2**40, sa_type=BigInteger)  # the newest step seen
    values: list[float] = Field(min_length=1, max_length=16, sa_column=Column(JSON, nullable=False))

    @field_validator("values")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in values):
            raise ValueError("forecast values must be finite")
        return values


class Forecast(ForecastBase, table=True):
    """Forecasts sites report; re-sent batches are idempotent on the natural key."""

    __tablename__ = "forecasts"
    __table_args__ = (UniqueConstraint("site_id", "cell", "step", "made_step"),)

    id: int | None = Field(default=None, primary_key=True)
    # no index of its own: the natural key's index starts with it (see migration 0012)
    site_id: str = Field(max_length=32)
    model_version: str = Field(max_length=64)
    received_at: float


#: A finite float of a request body: NaN and infinities are refused by pydantic-core.
Finite = Annotated[float, PydanticField(allow_inf_nan=False)]
Step = Annotated[int, PydanticField(ge=0, le=2**40)]
Name = Annotated[str, PydanticField(min_length=1, max_length=64)]


class ForecastRow(BaseModel):
    """One forecast of a batch. Plain pydantic: SQLModel's ``__init__`` per row cost more
    than the whole batch's validation in pydantic-core."""

    cell: Name
    step: Step  # the step forecast
    made_step: Step  # the newest step seen
    values: list[Finite] = PydanticField(min_length=1, max_length=16)


class ActualRow(BaseModel):
    """The observed target KPIs of a completed step, which forecasts are scored on."""

    cell: Name
    step: Step
    values: list[Finite] = PydanticField(min_length=1, max_length=16)


class ForecastBatch(BaseModel):
    model_version: Name
    forecasts: list[ForecastRow] = PydanticField(min_length=1, max_length=2000)
    actuals: list[ActualRow] = PydanticField(default_factory=list, max_length=2000)


class ForecastPublic(ForecastBase):
    id: int
    site_id: str
    model_version: str
    received_at: float


class Actual(SQLModel, table=True):
    """Actuals sites report; re-sent ones are idempotent on ``(site_id, cell, step)``."""

    __tablename__ = "actuals"
    __table_args__ = (
        UniqueConstraint("site_id", "cell", "step"),
        Index("ix_actuals_site_received", "site_id", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site_id: str = Field(max_length=32)
    cell: str = Field(max_length=64)
    step: int = Field(sa_type=BigInteger)
    values: list[float] = Field(sa_column=Column(JSON, nullable=False))
    received_at: float


class IngestResult(BaseModel):
    received: int  # forecasts and actuals
    stored: int  # the rest were already stored (a re-sent batch)


# --- site health -------------------------------------------------------------------------


class SupernodeState(StrEnum):
    ABSENT = "absent"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"


Count = Annotated[int, PydanticField(ge=0, le=2**62)]
Time = Annotated[float, PydanticField(ge=0, le=2**40, allow_inf_nan=False)]
#: Reports kept per site in ``site_health_history`` (a week of 5-minute reports).
HEALTH_HISTORY_PER_SITE = 2016


class Alerts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warning: Count = 0
    critical: Count = 0


class ErrorSummary(BaseModel):
    """The agent's rolling forecast error of one cell, target and horizon."""

    model_config = ConfigDict(extra="forbid")

    cell: Name
    horizon_steps: int = PydanticField(ge=1, le=10_000)
    target: Name
    count: Count
    mae: Annotated[float, PydanticField(ge=0, allow_inf_nan=False)]
    rmse: Annotated[float, PydanticField(ge=0, allow_inf_nan=False)]
    bias: Finite


class HealthReport(BaseModel):
    """``POST /site/health`` (docs/live-loop.md); unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    sent_at: Time
    model_version: Name | None = None
    store_bytes: Count
    alerts: Alerts
    last_kpi_at: Time | None = None
    supernode: SupernodeState
    backlog: Count
    errors: list[ErrorSummary] = PydanticField(default_factory=list, max_length=512)

    def mean_rmse(self) -> float | None:
        """The mean RMSE over cells and targets at the shortest horizon with samples."""
        counted = [e for e in self.errors if e.count > 0]
        if not counted:
            return None
        shortest = min(e.horizon_steps for e in counted)
        rmses = [e.rmse for e in counted if e.horizon_steps == shortest]
        return sum(rmses) / len(rmses)


class SiteHealthBase(SQLModel):
    site_id: str = Field(max_length=32)
    received_at: float
    sent_at: float
    model_version: str | None = Field(default=None, max_length=64)
    store_bytes: int = Field(sa_type=BigInteger)
    alerts_warning: int = Field(sa_type=BigInteger)
    alerts_critical: int = Field(sa_type=BigInteger)
    last_kpi_at: float | None = None
    supernode: str = Field(max_length=16)
    backlog: int = Field(sa_type=BigInteger)
    #: The mean RMSE at the shortest horizon (``HealthReport.mean_rmse``), for ``site_errors``.
    rmse: float | None = None
    # sa_type, not sa_column: two tables share these fields, a Column belongs to one
    errors: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON, nullable=False)


class SiteHealth(SiteHealthBase, table=True):
    """The latest report of each site."""

    __tablename__ = "site_health"

    site_id: str = Field(primary_key=True, max_length=32)


class SiteHealthHistory(SiteHealthBase, table=True):
    """Every report, the last ``HEALTH_HISTORY_PER_SITE`` of each site."""

    __tablename__ = "site_health_history"
    __table_args__ = (Index("ix_site_health_history_site_received", "site_id", "received_at"),)

    id: int | None = Field(default=None, primary_key=True)


class SiteHealthPublic(SiteHealthBase):
    pass


# --- operator API keys -------------------------------------------------------------------


class ApiKeyBase(SQLModel):
    name: str = Field(min_length=1, max_length=64, unique=True)
    role: Role = Field(max_length=16)


class ApiKey(ApiKeyBase, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(max_length=64, unique=True)  # SHA-256 of the key, hex
    created_at: float
    revoked: bool = False


class ApiKeyCreate(ApiKeyBase):
    pass


class ApiKeyPublic(ApiKeyBase):
    id: int
    created_at: float
    revoked: bool


class ApiKeyIssued(ApiKeyPublic):
    key: str


# --- audit log and request nonces --------------------------------------------------------


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: float
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64)
    target: str = Field(default="", max_length=128)
    outcome: str = Field(max_length=16)  # ok, denied
    detail: str = Field(default="", max_length=500)


class AuditPublic(SQLModel):
    id: int
    at: float
    actor: str
    action: str
    target: str
    outcome: str
    detail: str


class RequestNonce(SQLModel, table=True):
    """Nonces of signed site requests seen inside the replay window."""

    __tablename__ = "request_nonces"

    site_id: str = Field(primary_key=True, max_length=32)
    nonce: str = Field(primary_key=True, max_length=64)
    expires_at: float = Field(index=True)


__all__ = [
    "Actual",
    "ActualRow",
    "ApiKey",
    "ApiKeyCreate",
    "ApiKeyIssued",
    "ApiKeyPublic",
    "AuditEntry",
    "AuditPublic",
    "Decision",
    "EnrollmentChallenge",
    "EnrollmentToken",
    "ErrorSummary",
    "Forecast",
    "ForecastBatch",
    "ForecastPublic",
    "ForecastRow",
    "HealthReport",
    "IngestResult",
    "ModelStatus",
    "ModelVersion",
    "ModelVersionCreate",
    "ModelVersionPublic",
    "RequestNonce",
    "Role",
    "Round",
    "RoundPublic",
    "RoundReport",
    "RoundStatus",
    "Run",
    "RunCreate",
    "RunFailure",
    "RunModelReport",
    "RunPublic",
    "RunStatus",
    "Site",
    "SiteHealth",
    "SiteHealthHistory",
    "SiteHealthPublic",
    "SitePublic",
    "SiteState",
    "SupernodeState",
    "TokenCreate",
    "TokenIssued",
]
