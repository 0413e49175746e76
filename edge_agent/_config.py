"""``agent.toml``: read with tomllib into frozen dataclasses, every value checked.

No pydantic: the agent must start fast and small. Every failure is a ``ConfigError``
whose message starts with the dotted key, so an operator sees exactly what to fix.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fedge.edge_agent._errors import AgentError, ConfigError

T = TypeVar("T")

_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SITE_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
PROTOCOLS = ("auto", "5", "3.1.1")
SYNCHRONOUS = ("normal", "full")


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsConfig | None = None
    protocol: str = "auto"
    client_id: str = ""
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 86_400
    receive_maximum: int = 1000
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    topic_prefix: str = "fedge/v1"


@dataclass(frozen=True)
class StoreConfig:
    path: Path = Path("fedge-agent.db")
    synchronous: str = "normal"
    max_age_days: float = 30.0
    max_mb: float = 512.0
    housekeeping_s: float = 60.0


@dataclass(frozen=True)
class IngestConfig:
    max_payload_bytes: int = 4096
    max_future_s: float = 60.0
    reorder_tolerance_steps: int = 2
    max_batch: int = 256


@dataclass(frozen=True)
class ModelConfig:
    dir: Path = Path("fedge-models")
    initial: Path | None = None
    shadow_margin: float = 0.02
    shadow_days: float = 2.0
    min_shadow_windows: int = 50
    max_model_bytes: int = 64 * 1024 * 1024
    min_history: int = 0  # samples a cell needs before forecasts; 0 = the model's lookback
    threads: int = 1
    # Each cell's own calibration of the served model, re-fitted for every candidate
    # (edge_agent._personal); fitted on the personal_days before the shadow days.
    personalise: bool = False
    personal_days: float = 7.0


#: The longest alert persistence and cool-down, in steps: an alert later than this is no
#: alert, and an episode that stays open longer hides the next.
MAX_ALERT_STEPS = 288


@dataclass(frozen=True)
class AnomalyConfig:
    """Alert episodes from relative forecast residuals (docs/agent.md, "Alerts"); the
    defaults were chosen on labelled synthetic sites (bench/agent.py ``alert_quality``)."""

    window: int = 288  # residuals the median and MAD are taken over
    min_history: int = 24  # residuals needed before a cell can alert
    z_warning: float = 6.0  # |z| at which a step deviates
    z_critical: float = 10.0  # |z| that opens a critical episode at once
    min_kpis: int = 1  # KPIs that must deviate together for a step to deviate
    persistence: int = 2  # consecutive deviating steps before a warning episode opens
    cooldown: int = 12  # steps without deviation that close an episode
    level_floor: float = 0.1  # in cell std: the residual is relative to forecast + this


@dataclass(frozen=True)
class SecurityConfig:
    key_file: Path
    coordinator_keys: Path
    kek_file: Path | None = None


#: Node-config keys the agent sets itself (from [security], [store] and [federation]).
NODE_CONFIG_KEYS = (
    "key-file", "kek-file", "kek-env", "coordinator-keys", "state-dir", "store",
)  # fmt: skip


def default_clientapp_slots() -> int:
    """One ClientApp per core: beyond that they only slow each other's start-up."""
    return max(1, os.cpu_count() or 1)


def default_clientapp_slot_dir() -> Path:
    """Shared by every agent of this user on the host (systemd's ``PrivateTmp`` gives
    each unit its own: set ``clientapp_slot_dir`` to share across units)."""
    return Path(tempfile.gettempdir()) / f"fedge-clientapp-slots-{os.getuid()}"


#: The most ClientApp slots a host may declare.
MAX_CLIENTAPP_SLOTS = 256


@dataclass(frozen=True)
class FederationConfig:
    superlink: str
    supernode: str = "flower-supernode"
    restart_min_s: float = 1.0
    restart_max_s: float = 60.0
    stable_after_s: float = 60.0
    extra_node_config: str = ""
    runtime_port: int = 9094  # the SuperNode's ClientApp-facing API (its --port)
    # TLS to the SuperLink (its CA); without it the SuperNode connects with --insecure.
    root_certificates: Path | None = None
    # Flower's SuperNode authentication: the node's EC private key (OpenSSH format), whose
    # public key the operator registers with the SuperLink (``flwr supernode register``).
    auth_private_key: Path | None = None
    # Flower's FAB verification: the trusted publishers' Ed25519 keys (YAML).
    trusted_entities: Path | None = None
    state_dir: Path = Path("fedge-federation")  # the ClientApp's channel and residual state
    # How many ClientApps may start and run at once on this host, across every SuperNode
    # that shares clientapp_slot_dir (see fedge.federation._launch_gate).
    clientapp_slots: int = field(default_factory=default_clientapp_slots)
    clientapp_slot_dir: Path = field(default_factory=default_clientapp_slot_dir)
    # ClientApps forked from a process that imported the site's app (torch) once, rather
    # than each importing it anew (see fedge.federation._launch_gate).
    clientapp_warm_start: bool = True
    # Filled from [security] and [store]: what the SuperNode's ClientApp reads its keys
    # and data from (never from the server's messages).
    key_file: Path | None = None
    kek_file: Path | None = None
    coordinator_keys: Path | None = None
    store: Path | None = None


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9464


#: The longest batching window: the live loop wants a forecast at the coordinator within
#: about two seconds of its KPI (docs/live-loop.md); ten is already far past that.
MAX_UPLOAD_INTERVAL_S = 10.0
#: Most rows one upload carries (the coordinator refuses bigger batches).
MAX_BATCH_ROWS = 2000


@dataclass(frozen=True)
class CoordinatorConfig:
    """The coordinator link: where the uplink sends forecasts, health and verdicts."""

    url: str
    ca_file: Path | None = None
    #: The batching window: new forecasts are sent this long after they were stored,
    #: with every row stored meanwhile (at most one upload per window while they come).
    upload_interval_s: float = 0.2
    health_interval_s: float = 30.0
    batch_max: int = 1000
    model_poll_s: float = 30.0
    timeout_s: float = 10.0
    action_wait_s: float = 25.0


@dataclass(frozen=True)
class AgentConfig:
    site: str
    step_seconds: int = 300
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    security: SecurityConfig | None = None
    federation: FederationConfig | None = None
    metrics: MetricsConfig | None = field(default_factory=MetricsConfig)
    coordinator: CoordinatorConfig | None = None

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"fedge-agent-{self.site}"

    def topic(self, kind: str) -> str:
        return f"{self.broker.topic_prefix}/{self.site}/{kind}"


class _Section:
    """Typed access to one TOML table; remembers which keys were read to reject the rest."""

    def __init__(self, data: dict[str, Any], name: str, base: Path) -> None:
        self.data, self.name, self.base = data, name, base
        self.used: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def get(self, key: str, kind: type[T], default: T) -> T:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(
                f"{self.key(key)}: expected {kind.__name__}, got {type(value).__name__}"
            )
        return value

    def require(self, key: str, kind: type[T]) -> T:
        if key not in self.data:
            raise ConfigError(f"{self.key(key)}: required")
        return self.get(key, kind, kind())

    def path(self, key: str, default: Path | None = None) -> Path | None:
        text = self.get(key, str, "")
        if not text:
            return default
        p = Path(text).expanduser()
        return p if p.is_absolute() else self.base / p

    def positive(self, key: str, kind: type[T], default: T, *, zero: bool = False) -> T:
        value = self.get(key, kind, default)
        if not (value >= 0 if zero else value > 0):  # type: ignore[operator]
            raise ConfigError(f"{self.key(key)}: must be {'>= 0' if zero else '> 0'}, got {value}")
        return value

    def table(self, key: str) -> _Section | None:
        self.used.add(key)
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise ConfigError(f"{self.key(key)}: expected a table")
        return _Section(value, self.key(key), self.base)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown setting")


def _section(root: _Section, name: str) -> _Section:
    return root.table(name) or _Section({}, name, root.base)


def _broker(s: _Section) -> BrokerConfig:
    url = s.get("url", str, "mqtt://127.0.0.1:1883")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            f"broker.url: must look like mqtt://host:port or mqtts://host:port, got {url!r}"
        )
    if parts.path not in ("", "/") or parts.username or parts.query:
        raise ConfigError(
            "broker.url: only scheme, host and port (credentials go in username/password_file)"
        )
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ConfigError(f"broker.url: bad port: {exc}") from exc
    tls_section = s.table("tls")
    tls: TlsConfig | None = None
    if parts.scheme == "mqtts":
        t = tls_section or _Section({}, "broker.tls", s.base)
        tls = TlsConfig(t.path("ca_file"), t.path("cert_file"), t.path("key_file"))
        t.done()
        if (tls.cert_file is None) != (tls.key_file is None):
            raise ConfigError("broker.tls: cert_file and key_file go together")
        for name in ("ca_file", "cert_file", "key_file"):
            p = getattr(tls, name)
            if p is not None and not p.is_file():
                raise ConfigError(f"broker.tls.{name}: no such file {p}")
    elif tls_section is not None:
        raise ConfigError("broker.tls: TLS settings need an mqtts:// url")
    protocol = s.get("protocol", str, "auto")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"broker.protocol: one of {PROTOCOLS}, got {protocol!r}")
    username = s.get("username", str, "") or None
    password_file = s.path("password_file")
    if password_file is not None and username is None:
        raise ConfigError("broker.password_file: needs broker.username")
    if password_file is not None:
        private_file("broker.password_file", password_file)
    prefix = s.get("topic_prefix", str, "fedge/v1")
    if not _PREFIX_RE.match(prefix):
        raise ConfigError(
            f"broker.topic_prefix: plain topic levels without wildcards, got {prefix!r}"
        )
    client_id = s.get("client_id", str, "")
    if len(client_id) > 64:
        raise ConfigError("broker.client_id: at most 64 characters")
    rmin = s.positive("reconnect_min_s", float, 0.5)
    rmax = s.positive("reconnect_max_s", float, 30.0)
    if rmax < rmin:
        raise ConfigError("broker.reconnect_max_s: must be >= reconnect_min_s")
    receive_max = s.positive("receive_maximum", int, 1000)
    if receive_max > 65535:
        raise ConfigError("broker.receive_maximum: at most 65535")
    cfg = BrokerConfig(
        host=parts.hostname,
        port=port,
        tls=tls,
        protocol=protocol,
        client_id=client_id,
        username=username,
        password_file=password_file,
        keepalive_s=s.positive("keepalive_s", int, 30),
        session_expiry_s=s.positive("session_expiry_s", int, 86_400, zero=True),
        receive_maximum=receive_max,
        reconnect_min_s=rmin,
        reconnect_max_s=rmax,
        topic_prefix=prefix,
    )
    s.done()
    return cfg


def _store(s: _Section) -> StoreConfig:
    path = s.path("path")
    if path is None:
        raise ConfigError("store.path: required")
    sync = s.get("synchronous", str, "normal")
    if sync not in SYNCHRONOUS:
        raise ConfigError(f"store.synchronous: one of {SYNCHRONOUS}, got {sync!r}")
    cfg = StoreConfig(
        path=path,
        synchronous=sync,
        max_age_days=s.positive("max_age_days", float, 30.0),
        max_mb=s.positive("max_mb", float, 512.0),
        housekeeping_s=s.positive("housekeeping_s", float, 60.0),
    )
    s.done()
    return cfg


def _ingest(s: _Section) -> IngestConfig:
    cfg = IngestConfig(
        max_payload_bytes=s.positive("max_payload_bytes", int, 4096),
        max_future_s=s.positive("max_future_s", float, 60.0, zero=True),
        reorder_tolerance_steps=s.positive("reorder_tolerance_steps", int, 2, zero=True),
        max_batch=s.positive("max_batch", int, 256),
    )
    if cfg.max_payload_bytes > 1_048_576:
        raise ConfigError("ingest.max_payload_bytes: at most 1 MiB")
    s.done()
    return cfg


#: Longest history a cell's calibration is fitted on (more is slow to judge and stale).
MAX_PERSONAL_DAYS = 28.0


def _model(s: _Section) -> ModelConfig:
    directory = s.path("dir")
    if directory is None:
        raise ConfigError("model.dir: required")
    initial = s.path("initial")
    if initial is not None and not initial.is_file():
        raise ConfigError(f"model.initial: no such file {initial}")
    margin = s.positive("shadow_margin", float, 0.02, zero=True)
    if margin > 1.0:
        raise ConfigError("model.shadow_margin: a fraction between 0 and 1")
    cfg = ModelConfig(
        dir=directory,
        initial=initial,
        shadow_margin=margin,
        shadow_days=s.positive("shadow_days", float, 2.0),
        min_shadow_windows=s.positive("min_shadow_windows", int, 50),
        max_model_bytes=s.positive("max_model_bytes", int, 64 * 1024 * 1024),
        min_history=s.positive("min_history", int, 0, zero=True),
        threads=s.positive("threads", int, 1),
        personalise=s.get("personalise", bool, False),
        personal_days=s.positive("personal_days", float, 7.0),
    )
    if cfg.personal_days > MAX_PERSONAL_DAYS:
        raise ConfigError(f"model.personal_days: at most {MAX_PERSONAL_DAYS:g}")
    s.done()
    return cfg


def _anomaly(s: _Section) -> AnomalyConfig:
    cfg = AnomalyConfig(
        window=s.positive("window", int, 288),
        min_history=s.positive("min_history", int, 24),
        z_warning=s.positive("z_warning", float, 6.0),
        z_critical=s.positive("z_critical", float, 10.0),
        min_kpis=s.positive("min_kpis", int, 1),
        persistence=s.positive("persistence", int, 2),
        cooldown=s.positive("cooldown", int, 12),
        level_floor=s.positive("level_floor", float, 0.1),
    )
    for key in ("z_warning", "z_critical", "level_floor"):
        if not math.isfinite(getattr(cfg, key)):
            raise ConfigError(f"anomaly.{key}: must be finite, got {getattr(cfg, key)}")
    for key in ("persistence", "cooldown"):
        if getattr(cfg, key) > MAX_ALERT_STEPS:
            raise ConfigError(
                f"anomaly.{key}: at most {MAX_ALERT_STEPS} steps, got {getattr(cfg, key)}"
            )
    if cfg.min_kpis > 3:
        raise ConfigError("anomaly.min_kpis: at most 3 (the forecast KPIs)")
    if cfg.z_critical < cfg.z_warning:
        raise ConfigError("anomaly.z_critical: must be >= z_warning")
    if cfg.min_history > cfg.window:
        raise ConfigError("anomaly.min_history: must be <= window")
    s.done()
    return cfg


def _security(s: _Section) -> SecurityConfig:
    key_file = s.path("key_file")
    coordinator = s.path("coordinator_keys")
    if key_file is None:
        raise ConfigError("security.key_file: required")
    if coordinator is None:
        raise ConfigError("security.coordinator_keys: required")
    kek_file = s.path("kek_file")
    if kek_file is not None:
        private_file("security.kek_file", kek_file)
    cfg = SecurityConfig(key_file, coordinator, kek_file)
    s.done()
    return cfg


def _federation(s: _Section) -> FederationConfig:
    superlink = s.require("superlink", str)
    host, sep, port = superlink.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"federation.superlink: host:port, got {superlink!r}")
    rmin = s.positive("restart_min_s", float, 1.0)
    rmax = s.positive("restart_max_s", float, 60.0)
    if rmax < rmin:
        raise ConfigError("federation.restart_max_s: must be >= restart_min_s")
    extra = s.get("extra_node_config", str, "")
    for key in NODE_CONFIG_KEYS:
        if re.search(rf"(^|\s){re.escape(key)}=", extra):
            raise ConfigError(f"federation.extra_node_config: {key} is set by the agent itself")
    roots = _existing(s, "root_certificates")
    if roots is not None:
        _check_root_certificates(roots)
    auth = _existing(s, "auth_private_key")
    if auth is not None:
        if roots is None:
            raise ConfigError(
                "federation.auth_private_key: SuperNode authentication needs TLS "
                "(set federation.root_certificates)"
            )
        _check_auth_key(auth)
    if "site_index" in s.data:  # an older agent.toml: the node trains on all cells now
        s.used.add("site_index")
        logging.getLogger("fedge.agent.config").warning(
            "federation.site_index is ignored and can be deleted: the SuperNode trains on "
            "every cell of the store, and its site is the enrolled key"
        )
    cfg = FederationConfig(
        superlink=superlink,
        supernode=s.get("supernode", str, "flower-supernode"),
        restart_min_s=rmin,
        restart_max_s=rmax,
        stable_after_s=s.positive("stable_after_s", float, 60.0),
        extra_node_config=extra,
        runtime_port=s.positive("runtime_port", int, 9094),
        root_certificates=roots,
        auth_private_key=auth,
        trusted_entities=_existing(s, "trusted_entities"),
        state_dir=s.path("state_dir", s.base / "fedge-federation") or s.base,
        clientapp_slots=s.positive("clientapp_slots", int, default_clientapp_slots()),
        clientapp_slot_dir=s.path("clientapp_slot_dir") or default_clientapp_slot_dir(),
        clientapp_warm_start=s.get("clientapp_warm_start", bool, True),
    )
    if cfg.clientapp_slots > MAX_CLIENTAPP_SLOTS:
        raise ConfigError(f"federation.clientapp_slots: at most {MAX_CLIENTAPP_SLOTS}")
    if cfg.runtime_port > 65535:
        raise ConfigError("federation.runtime_port: at most 65535")
    s.done()
    return cfg


def _existing(s: _Section, key: str) -> Path | None:
    path = s.path(key)
    if path is not None and not path.is_file():
        raise ConfigError(f"{s.key(key)}: no such file {path}")
    if path is not None and ('"' in str(path) or "\\" in str(path)):
        raise ConfigError(f"{s.key(key)}: a path without quotes or backslashes, got {path}")
    return path


def _check_root_certificates(path: Path) -> None:
    """The CA the SuperNode verifies the SuperLink's certificate with: PEM certificates."""
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(
            f"federation.root_certificates: {path} holds no PEM certificate: {exc}"
        ) from exc


def private_file(key: str, path: Path) -> None:
    """A secret the agent reads (a password, a KEK, a private key) is a regular file with
    no group or other permissions, the rule the site's key file is held to (like ssh's)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{key}: no such file {path}") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{key}: {path} is readable by others (mode {mode:o}); chmod 600")


def _check_auth_key(path: Path) -> None:
    """The SuperNode's authentication key: private to the agent, and one Flower can load."""
    private_file("federation.auth_private_key", path)
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        key = load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"federation.auth_private_key: not an unencrypted OpenSSH private key: {exc}"
        ) from exc
    except Exception as exc:  # cryptography's UnsupportedAlgorithm
        raise ConfigError(f"federation.auth_private_key: unusable key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("federation.auth_private_key: Flower needs an EC (e.g. P-384) key")


def _node_files(
    federation: FederationConfig, security: SecurityConfig | None, store: StoreConfig
) -> FederationConfig:
    """The SuperNode's node config comes from the agent's own sections: its keys and store."""
    if security is None:
        raise ConfigError(
            "federation: needs a [security] section (the site's key_file and the "
            "coordinator_keys from enrollment): a SuperNode's ClientApp seals with them"
        )
    if security.kek_file is None:
        raise ConfigError(
            "federation: needs security.kek_file: the SuperNode's ClientApp reads the KEK "
            "from it, and the agent's environment ($FEDGE_KEK) is not passed to the SuperNode"
        )
    for name, path in (
        ("security.key_file", security.key_file),
        ("security.kek_file", security.kek_file),
        ("security.coordinator_keys", security.coordinator_keys),
        ("store.path", store.path),
        ("federation.state_dir", federation.state_dir),
    ):
        if path is not None and ('"' in str(path) or "\\" in str(path)):
            raise ConfigError(f"{name}: a path without quotes or backslashes, got {path}")
    return replace(
        federation,
        key_file=security.key_file,
        kek_file=security.kek_file,
        coordinator_keys=security.coordinator_keys,
        store=store.path,
    )


def _coordinator(s: _Section, security: SecurityConfig | None, site: str) -> CoordinatorConfig:
    url = s.require("url", str).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"coordinator.url: must look like http://host:port or https://host:port, got {url!r}"
        )
    if parts.path not in ("", "/") or parts.username or parts.query or parts.fragment:
        raise ConfigError("coordinator.url: only scheme, host and port")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"coordinator.url: bad port: {exc}") from exc
    ca_file = s.path("ca_file")
    if ca_file is not None:
        if parts.scheme != "https":
            raise ConfigError("coordinator.ca_file: a CA needs an https:// url")
        if not ca_file.is_file():
            raise ConfigError(f"coordinator.ca_file: no such file {ca_file}")
    batch_max = s.positive("batch_max", int, 1000)
    if batch_max > MAX_BATCH_ROWS:
        raise ConfigError(f"coordinator.batch_max: at most {MAX_BATCH_ROWS}, got {batch_max}")
    action_wait = s.positive("action_wait_s", float, 25.0)
    upload_interval = s.positive("upload_interval_s", float, 0.2)
    if not upload_interval <= MAX_UPLOAD_INTERVAL_S:  # also refuses nan
        raise ConfigError(
            f"coordinator.upload_interval_s: at most {MAX_UPLOAD_INTERVAL_S:g} (a forecast "
            f"waits that long before it is sent), got {upload_interval}"
        )
    if action_wait > 30.0:
        raise ConfigError(f"coordinator.action_wait_s: at most 30, got {action_wait}")
    cfg = CoordinatorConfig(
        url=url.rstrip("/"),
        ca_file=ca_file,
        upload_interval_s=upload_interval,
        health_interval_s=s.positive("health_interval_s", float, 30.0),
        batch_max=batch_max,
        model_poll_s=s.positive("model_poll_s", float, 30.0),
        timeout_s=s.positive("timeout_s", float, 10.0),
        action_wait_s=action_wait,
    )
    s.done()
    if security is None:
        raise ConfigError(
            "coordinator: needs a [security] section (the site's key_file signs every "
            "request, and the coordinator_keys from enrollment check its models)"
        )
    if not _SITE_ID_RE.match(site):
        raise ConfigError(
            f"coordinator: agent.site must be the enrolled site id (32 hex digits, set by "
            f"`fedge site enroll`), got {site!r}"
        )
    return cfg


def _metrics(s: _Section) -> MetricsConfig | None:
    if not s.get("enabled", bool, True):
        s.get("host", str, "")
        s.get("port", int, 0)
        s.done()
        return None
    port = s.positive("port", int, 9464, zero=True)
    if port > 65535:
        raise ConfigError("metrics.port: at most 65535")
    cfg = MetricsConfig(host=s.get("host", str, "127.0.0.1"), port=port)
    s.done()
    return cfg


def parse_config(data: dict[str, Any], base: Path) -> AgentConfig:
    """Validate a parsed TOML document; relative paths resolve against ``base``."""
    root = _Section(data, "", base)
    agent = _section(root, "agent")
    site = agent.require("site", str)
    if not _SITE_RE.match(site):
        raise ConfigError(f"agent.site: letters, digits, '.', '_', '-' (max 64), got {site!r}")
    step = agent.positive("step_seconds", int, 300)
    if 86_400 % step:
        raise ConfigError(f"agent.step_seconds: must divide a day, got {step}")
    agent.done()
    security_table = root.table("security")
    federation_table = root.table("federation")
    coordinator_table = root.table("coordinator")
    store = _store(_section(root, "store"))
    security = _security(security_table) if security_table is not None else None
    federation = None
    if federation_table is not None:
        federation = _node_files(_federation(federation_table), security, store)
    cfg = AgentConfig(
        site=site,
        step_seconds=step,
        broker=_broker(_section(root, "broker")),
        store=store,
        ingest=_ingest(_section(root, "ingest")),
        model=_model(_section(root, "model")),
        anomaly=_anomaly(_section(root, "anomaly")),
        security=security,
        federation=federation,
        metrics=_metrics(_section(root, "metrics")),
        coordinator=(
            None if coordinator_table is None else _coordinator(coordinator_table, security, site)
        ),
    )
    root.done()
    return cfg


def load_config(path: Path) -> AgentConfig:
    """Read and validate ``agent.toml``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config is not UTF-8") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, path.parent.resolve())


def read_password(config: AgentConfig) -> str | None:
    """The broker password from ``broker.password_file`` (None without one)."""
    path = config.broker.password_file
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentError(f"broker.password_file: cannot read {path}: {exc}") from exc
