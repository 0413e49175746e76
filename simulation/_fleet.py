"""``fedge fleet``: the whole live system as real processes on one machine.

Mosquitto, the coordinator (SQLite, or a PostgreSQL cluster of the fleet's own), a Flower
SuperLink, N enrolled agents (each with its own key file, store and supervised
SuperNode) and the KPI replayer, each its own process group, every pid, port and log
recorded in the fleet directory's state file. ``up`` on a directory that holds a fleet
resumes it: keys, enrollment and databases are kept, what is not running is restarted.
``down`` stops every process group it started and sweeps what they left (a SuperNode
runs in its own session, started by its agent), so nothing outlives the fleet.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedge.core import MANIFEST
from fedge.simulation._errors import SimulationError

__all__ = [
    "BACKFILL_DAYS",
    "STATE_FILE",
    "Fleet",
    "FleetError",
    "FleetSpec",
    "FleetState",
    "ProcessRecord",
    "down",
    "load_state",
    "run_request",
    "status",
    "tls_files",
    "up",
]

STATE_FILE = "fleet.json"
STATE_VERSION = 1
BACKFILL_DAYS = 8  # history published fast before pacing: enough to train with 1+1 held days
STEP_SECONDS = 300
MAX_SITES = 500
MAX_SPEED = 3600.0  # one hour of telemetry per second of wall time
MOSQUITTO = Path("/usr/sbin/mosquitto")
BIN = Path(sys.executable).parent
# Wall-time decision intervals the fleet gives the coordinator (its defaults are a
# deployment's 15 min / 5 min): short, so that a few minutes of a fleet see decisions.
STRATEGIC_INTERVAL_S = 60.0
TACTICAL_INTERVAL_S = 20.0
CLUSTER_SIZE = 3
TLS_DIR = "tls"  # the fleet's CA and every part's certificate, under the fleet directory
# The certificates a TLS fleet issues from its own CA: servers for the addresses the
# parts dial, clients whose common names are the broker user names.
TLS_SERVERS = ("superlink", "coordinator", "mosquitto")
TLS_CLIENTS = ("agent", "replayer")
TLS_SERVER_NAMES = ("127.0.0.1", "localhost")
SETUP_WORKERS = 4  # sites whose keys and enrollment are made at once
_SAVE_LOCK = threading.Lock()


class FleetError(SimulationError):
    """A fleet that cannot be started, resumed, run or stopped: the message names the part."""


@dataclass(frozen=True)
class FleetSpec:
    """What ``fedge fleet up`` was asked for; checked before anything starts."""

    sites: int
    data: Path | None = None
    speed: float = 60.0
    postgres: bool = False
    policies: Path | None = None
    seed: int = 0
    tls: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.sites, bool) or not isinstance(self.sites, int):
            raise FleetError(f"--sites: a whole number, got {self.sites!r}")
        if not 1 <= self.sites <= MAX_SITES:
            raise FleetError(f"--sites: between 1 and {MAX_SITES}, got {self.sites}")
        if not isinstance(self.speed, int | float) or not math.isfinite(self.speed):
            raise FleetError(f"--speed: a finite number, got {self.speed!r}")
        if not 0 < self.speed <= MAX_SPEED:
            raise FleetError(f"--speed: above 0 and at most {MAX_SPEED:g}, got {self.speed:g}")
        if self.data is not None:
            _readable(self.data, "--data")
        if self.policies is not None and not (self.policies / MANIFEST).is_file():
            raise FleetError(
                f"--policies: {self.policies} holds no {MANIFEST} "
                "(a directory `fedge decisions train` wrote)"
            )


def _readable(path: Path, flag: str) -> None:
    if path.is_dir():  # a folder of PM files: the replayer's reader checks its contents
        return
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except IsADirectoryError as exc:
        raise FleetError(f"{flag}: {path} is a directory, not a KPI file") from exc
    except OSError as exc:
        raise FleetError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from exc


@dataclass
class ProcessRecord:
    """One process the fleet started: its pid is also its process group and session."""

    name: str
    pid: int
    cmd: list[str]
    log: str
    port: int | None = None
    started_at: float = 0.0
    ticks: int | None = None


@dataclass
class SiteRecord:
    index: int
    dir: str
    site_id: str | None = None  # set once enrolled
    archetype: str = ""
    metrics_port: int = 0
    runtime_port: int = 0


@dataclass
class FleetState:
    """The fleet directory's ``fleet.json``: what was asked, where everything is."""

    dir: str
    spec: dict[str, Any]
    ports: dict[str, int]
    sites: list[SiteRecord]
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    version: int = STATE_VERSION
    created_at: float = 0.0
    replay: dict[str, Any] = field(default_factory=dict)  # the replayer's clock (see below)

    @property
    def root(self) -> Path:
        return Path(self.dir)

    @property
    def tls(self) -> bool:
        return bool(self.spec.get("tls"))

    @property
    def coordinator_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.ports['coordinator']}"

    @property
    def ca_file(self) -> Path | None:
        """The fleet CA's certificate every TLS client trusts; None for a plaintext fleet."""
        return self.root / TLS_DIR / "ca.pem" if self.tls else None

    def admin_key(self) -> str:
        return (self.root / "coordinator" / "admin.key").read_text().strip()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetState:
        return cls(
            dir=str(data["dir"]),
            spec=dict(data["spec"]),
            ports={k: int(v) for k, v in data["ports"].items()},
            sites=[SiteRecord(**s) for s in data["sites"]],
            processes={k: ProcessRecord(**p) for k, p in data.get("processes", {}).items()},
            version=int(data["version"]),
            created_at=float(data.get("created_at", 0.0)),
            replay=dict(data.get("replay", {})),
        )

    def save(self) -> None:
        with _SAVE_LOCK:  # sites are set up in parallel
            path = self.root / STATE_FILE
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
            os.replace(tmp, path)


def load_state(directory: Path) -> FleetState:
    """The fleet in ``directory``; a directory that holds none is refused by name."""
    path = directory / STATE_FILE
    if not directory.is_dir():
        raise FleetError(f"--dir: {directory} is not a directory")
    if not path.is_file():
        raise FleetError(f"--dir: {directory} is not a fleet directory (no {STATE_FILE})")
    try:
        data = json.loads(path.read_text())
        state = FleetState.from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FleetError(f"--dir: {path} is not a fleet state file: {exc}") from exc
    if state.version != STATE_VERSION:
        raise FleetError(f"--dir: {path} has state version {state.version}, not {STATE_VERSION}")
    if Path(state.dir).resolve() != directory.resolve():
        raise FleetError(f"--dir: {path} belongs to the fleet at {state.dir} (moved?)")
    return state


# --- processes ----------------------------------------------------------------------------


#: Where the fleet's listening ports come from: below the kernel's ephemeral range.
_LISTEN_LOW = 10_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port free now and not in ``taken`` (which it joins), chosen below the
    ephemeral range. The fleet keeps its ports across restarts, and a port of that range
    can meanwhile be the local end of any outgoing connection: with 20 agents a SuperNode
    once found its runtime port taken so and never started."""
    taken = set() if taken is None else taken
    high = _ephemeral_low() - 1
    rng = random.SystemRandom()
    for _ in range(500) if high - _LISTEN_LOW > 1_000 else ():
        port = rng.randint(_LISTEN_LOW, high)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room below: any port
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    taken.add(port)
    return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): with the pid, it names
    one process, since pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def alive(record: ProcessRecord) -> bool:
    """Whether the process the record names still runs (the same one: pids are reused)."""
    ticks = _start_ticks(record.pid)
    return ticks is not None and ticks == record.ticks and not _zombie(record.pid)


def fleet_env(**extra: str) -> dict[str, str]:
    """The environment of every fleet process: telemetry off, the venv's tools on PATH."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def spawn(
    state: FleetState,
    name: str,
    cmd: list[str],
    log: Path,
    env: dict[str, str],
    *,
    port: int | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start ``cmd`` in a session of its own, output appended to ``log``, and record it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n--- fedge fleet: starting {name} at {time.ctime()} ---\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise FleetError(f"{name}: cannot start {cmd[0]}: {exc.strerror or exc}") from exc
    record = ProcessRecord(name, proc.pid, cmd, str(log), port, time.time(),
                           _start_ticks(proc.pid))  # fmt: skip
    state.processes[name] = record
    state.save()
    return record


def _sessions() -> Iterator[tuple[int, int, list[str]]]:
    """(pid, session id, cmdline) of every process this user can see."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            st = os.stat(f"/proc/{pid}")
        except OSError:
            continue
        if st.st_uid != os.getuid() and os.geteuid() != 0:
            continue  # as root, the PostgreSQL server runs as postgres
        fields = stat.rsplit(")", 1)[1].split()
        cmd = _cmdline(pid) or []
        yield pid, int(fields[3]), cmd


def fleet_processes(state: FleetState) -> list[int]:
    """Every live process of the fleet: the sessions it started, and every process whose
    command line names the fleet directory (a SuperNode, in its agent's child session)
    with the rest of that process's session."""
    root = str(state.root.resolve())
    sids = {r.pid for r in state.processes.values()}
    mine = _ancestors() | {os.getsid(0)}
    found = [(pid, sid, cmd) for pid, sid, cmd in _sessions() if pid not in mine]
    for _, sid, cmd in found:
        if any(root in arg for arg in cmd):
            sids.add(sid)
    return [pid for pid, sid, _ in found if sid in sids and sid not in mine and not _zombie(pid)]


def _sweep(directory: str) -> None:
    """Kill what still runs with ``directory`` on its command line (and its session)."""
    mine = _ancestors() | {os.getsid(0)}
    found = [(pid, sid, cmd) for pid, sid, cmd in _sessions() if pid not in mine]
    sids = {sid for _, sid, cmd in found if any(directory + "/" in arg for arg in cmd)}
    for pid, sid, _ in found:
        if sid in sids and sid not in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _ancestors() -> set[int]:
    """This process and its ancestors: never part of what ``down`` stops."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def stop_group(record: ProcessRecord, timeout: float = 20.0) -> None:
    """SIGTERM the record's process group, SIGKILL what is left after ``timeout``."""
    stop_groups([record], timeout)


def stop_groups(records: list[ProcessRecord], timeout: float = 20.0) -> None:
    """SIGTERM these process groups together, SIGKILL what is left after ``timeout``."""
    running = [r for r in records if alive(r)]
    for record in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(r) for r in running):
        for record in running:
            _reap(record.pid)
        time.sleep(0.1)
    for record in running:
        if alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process (a fleet started and
    stopped by one process, as the benchmark does)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --- HTTP ---------------------------------------------------------------------------------


def http_json(
    url: str, *, api_key: str | None = None, timeout: float = 5.0, ca_file: Path | None = None
) -> Any:
    """GET ``url`` as JSON (an ``https`` one trusting ``ca_file``); errors are FleetError
    naming the URL."""
    headers = {"Accept": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    req = urllib.request.Request(url, headers=headers)
    context = None
    if url.startswith("https:"):
        import ssl

        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as ans:
            return json.loads(ans.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace") if exc.fp is not None else ""
        raise FleetError(f"GET {url}: {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FleetError(f"GET {url}: {exc}") from exc


def wait_for(what: str, check: Callable[[], bool], timeout: float, record: ProcessRecord) -> None:
    """Wait until ``check()``; fail naming ``what`` and its log if it never holds or its
    process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except FleetError:
            pass
        if not alive(record):
            raise FleetError(f"{what} exited during start-up; see {record.log}{_tail(record.log)}")
        time.sleep(0.25)
    raise FleetError(f"{what} not ready after {timeout:.0f} s; see {record.log}{_tail(record.log)}")


def _tail(log: str, lines: int = 8) -> str:
    try:
        text = Path(log).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n  " + "\n  ".join(text) if text else ""


def _run_cli(args: list[str], what: str, env: dict[str, str], timeout: float = 120.0) -> str:
    """One ``fedge`` command; its output, or a FleetError with its last lines."""
    cmd = [str(BIN / "fedge"), *args]
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise FleetError(f"{what} failed (exit {done.returncode}): " + " | ".join(out))
    return done.stdout


# --- the parts ----------------------------------------------------------------------------


def _write_private(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(data)


def _mosquitto(state: FleetState) -> None:
    if not MOSQUITTO.exists():
        raise FleetError(f"mosquitto: {MOSQUITTO} is not installed (deploy/system-deps.sh)")
    d = state.root / "mosquitto"
    d.mkdir(parents=True, exist_ok=True)
    port = state.ports["mosquitto"]
    conf = d / "mosquitto.conf"
    conf.write_text(mosquitto_conf(state, d))
    record = spawn(state, "mosquitto", [str(MOSQUITTO), "-c", str(conf)], d / "mosquitto.log",
                   fleet_env(), port=port)  # fmt: skip
    wait_for("mosquitto", lambda: _listening(port), 20, record)


def mosquitto_conf(state: FleetState, d: Path) -> str:
    """The broker's configuration: one listener on loopback; on a TLS fleet that listener
    wants a client certificate of the fleet's CA and takes its common name as the user."""
    port = state.ports["mosquitto"]
    user = f"user {_username()}\n"
    if state.tls:
        files = tls_files(state)
        access = (
            f"allow_anonymous false\ncafile {files['ca']}\n"
            f"certfile {files['mosquitto'][0]}\nkeyfile {files['mosquitto'][1]}\n"
            "tls_version tlsv1.2\nrequire_certificate true\nuse_identity_as_username true\n"
        )
    else:
        access = "allow_anonymous true\n"
    return (
        f"per_listener_settings false\nlistener {port} 127.0.0.1\n{user}{access}"
        f"persistence true\npersistence_location {d}/\nautosave_interval 10\n"
        "max_queued_messages 1000000\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_dest stdout\n"
    )


def tls_files(state: FleetState) -> dict[str, Any]:
    """``ca``: the CA's certificate; per part its (certificate, key) paths."""
    d = state.root / TLS_DIR
    out: dict[str, Any] = {"ca": d / "ca.pem"}
    for name in (*TLS_SERVERS, *TLS_CLIENTS):
        out[name] = (d / f"{name}.pem", d / f"{name}.key")
    return out


def make_tls(state: FleetState) -> None:
    """The fleet's own CA (``fedge pki``'s) and a certificate for every part, made once:
    servers for 127.0.0.1 and localhost, clients named after their broker user."""
    from fedge.security import init_ca, issue

    d = state.root / TLS_DIR
    d.mkdir(parents=True, exist_ok=True)
    init_ca(d, common_name="fedge fleet CA", force=True)  # a half-made one is replaced
    for name in TLS_SERVERS:
        issue(d, name, server_names=TLS_SERVER_NAMES, force=True)
    for name in TLS_CLIENTS:
        issue(d, name, client=True, force=True)


def _tls_made(state: FleetState) -> bool:
    files = tls_files(state)
    return files["ca"].exists() and all(
        p.exists() for name in (*TLS_SERVERS, *TLS_CLIENTS) for p in files[name]
    )


def _username() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise FleetError("postgres: no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(initdb).parent


def _pg_prefix(directory: Path) -> list[str]:
    """As root the cluster runs as the postgres user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        owner = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise FleetError("postgres: running as root and there is no postgres user") from exc
    for path in (directory, *directory.parents):
        if path == Path("/"):
            break
        mode = path.stat().st_mode
        if not mode & 0o001:
            os.chmod(path, mode | 0o001)  # let postgres traverse to its data directory
    os.chown(directory, owner.pw_uid, owner.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


def _postgres(state: FleetState) -> None:
    d = state.root / "postgres"
    d.mkdir(parents=True, exist_ok=True)
    bindir = _pg_bin()
    prefix = _pg_prefix(d)
    data = d / "data"
    if not (data / "PG_VERSION").exists():
        done = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "fedge",
             "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise FleetError(f"postgres: initdb failed: {done.stderr.strip()[-400:]}")
    if not _pg_running(data):  # left by a cluster that was killed
        (data / "postmaster.pid").unlink(missing_ok=True)
    port = state.ports["postgres"]
    cmd = [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(d),
           "-c", "listen_addresses=127.0.0.1"]  # fmt: skip
    record = spawn(state, "postgres", cmd, d / "postgres.log", fleet_env(), port=port)
    wait_for("postgres", lambda: _listening(port), 60, record)
    created = d / "database-created"
    if not created.exists():
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={port} user=fedge dbname=postgres", autocommit=True
                ) as conn:
                    conn.execute("CREATE DATABASE fedge")
                break
            except psycopg.Error as exc:
                if "already exists" in str(exc):
                    break
                if time.monotonic() > deadline:
                    raise FleetError(f"postgres: cannot create the database: {exc}") from exc
                time.sleep(0.5)
        created.write_text("fedge\n")


def _pg_running(data: Path) -> bool:
    pidfile = data / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return _cmdline(pid) is not None


def _superlink(state: FleetState) -> None:
    d = state.root / "superlink"
    d.mkdir(parents=True, exist_ok=True)
    port = state.ports["superlink"]
    # Flower's in-memory state: its SQLite file state answered "database is locked" to
    # 20 nodes pushing updates at once and lost their messages. What a restart loses (a
    # run in flight) the coordinator records as interrupted; nodes register again.
    cmd = [str(BIN / "flower-superlink"), *_superlink_tls(state), "--port", str(port),
           "--disable-runtime-dependency-installation"]  # fmt: skip
    # SSL_CERT_FILE: its ServerApps reach the coordinator's HTTPS trusting the fleet CA.
    env = fleet_env(SSL_CERT_FILE=str(state.ca_file)) if state.ca_file else fleet_env()
    record = spawn(state, "superlink", cmd, d / "superlink.log", env, port=port, cwd=d)
    wait_for("superlink", lambda: _listening(port), 60, record)


def _superlink_tls(state: FleetState) -> list[str]:
    if not state.tls:
        return ["--insecure"]
    files = tls_files(state)
    cert, key = files["superlink"]
    return ["--ssl-ca-certfile", str(files["ca"]), "--ssl-certfile", str(cert),
            "--ssl-keyfile", str(key)]  # fmt: skip


def coordinator_settings_known() -> set[str]:
    """The coordinator's setting names (an unknown FEDGE_COORDINATOR_* is refused)."""
    from fedge.coordinator._settings import CoordinatorSettings

    return set(CoordinatorSettings.model_fields)


def _coordinator_env(state: FleetState) -> dict[str, str]:
    d = state.root / "coordinator"
    spec = state.spec
    if spec.get("postgres"):
        url = f"postgresql+psycopg://fedge@127.0.0.1:{state.ports['postgres']}/fedge"
    else:
        url = f"sqlite:///{d / 'coordinator.db'}"
    wanted: dict[str, str] = {
        "state_dir": str(d),
        "database_url": url,
        "admin_api_key": state.admin_key(),
        "superlink": f"127.0.0.1:{state.ports['superlink']}",
        "policy_dir": str(state.root / "policies"),
        "host": "127.0.0.1",
        "port": str(state.ports["coordinator"]),
        # Live loop settings, where this coordinator has them.
        "topology_file": str(d / "topology.toml"),
        "strategic_interval_seconds": f"{STRATEGIC_INTERVAL_S:g}",
        "tactical_interval_seconds": f"{TACTICAL_INTERVAL_S:g}",
        "max_forecast_age_seconds": "600",
        # Staged rollout: a third of the sites first, quick checks.
        "rollout_canary_share": "0.33",
        "rollout_canary_timeout_seconds": "120",
        "rollout_check_seconds": "2",
        # Retraining: drift-triggered runs as the fleet itself starts them; the policy
        # promotes a run's model that beats the serving one.
        "retrain_enabled": "true",
        "drift_check_seconds": "30",
        "drift_min_sites": str(min(3, len(state.sites))),
        "retrain_min_interval_seconds": "300",
        "retrain_run_config": json.dumps(run_request(len(state.sites), 1)),
        "auto_promote": "true",
    }
    if state.tls:
        files = tls_files(state)
        wanted.update(
            tls_certfile=str(files["coordinator"][0]),
            tls_keyfile=str(files["coordinator"][1]),
            superlink_root_certificates=str(files["ca"]),
            public_url=state.coordinator_url,
        )
    else:
        wanted["superlink_insecure"] = "true"  # a plaintext SuperLink, on loopback
    known = coordinator_settings_known()
    return {f"FEDGE_COORDINATOR_{k.upper()}": v for k, v in wanted.items() if k in known}


#: The longest one batch of ClientApps (as many as the machine has cores, see the agent's
#: ``clientapp_slots``) may take to start and answer on a loaded machine: each imports
#: Flower and torch (about 8 s of CPU) before its work.
CLIENTAPP_BATCH_S = 60.0


def round_timeout(sites: int, cores: int | None = None) -> float:
    """Every site's ClientApp of a round's step runs on this one machine, a core's worth
    at a time: the step waits for ``ceil(sites / cores)`` batches, never less than 300 s."""
    cores = max(1, cores or os.cpu_count() or 1)
    return max(300.0, CLIENTAPP_BATCH_S * math.ceil(sites / cores))


def run_request(sites: int, rounds: int) -> dict[str, Any]:
    """The run the fleet starts (and its retraining policy): every site trains, one
    held-out day each for validation and test (the back-fill holds eight days)."""
    return {
        "num_rounds": rounds,
        "config": {
            "val-days": 1,
            "test-days": 1,
            "min-nodes": sites,
            "local-epochs": 1.0,
            "round-timeout": round_timeout(sites),
        },
    }


def _topology(state: FleetState) -> None:
    """Clusters of three enrolled sites, in enrollment order (a trailing one or two form
    a cluster of their own)."""
    ids = [s.site_id for s in state.sites if s.site_id]
    lines = []
    for i in range(0, len(ids), CLUSTER_SIZE):
        members = ", ".join(f'"{x}"' for x in ids[i : i + CLUSTER_SIZE])
        lines.append(f'[[cluster]]\nname = "cluster-{i // CLUSTER_SIZE}"\nsites = [{members}]\n')
    (state.root / "coordinator" / "topology.toml").write_text("\n".join(lines))


def _coordinator(state: FleetState) -> None:
    d = state.root / "coordinator"
    port = state.ports["coordinator"]
    cmd = [str(BIN / "fedge"), "coordinator", "serve"]
    record = spawn(state, "coordinator", cmd, d / "coordinator.log",
                   fleet_env(**_coordinator_env(state)), port=port)  # fmt: skip

    def healthy() -> bool:
        url = f"{state.coordinator_url}/healthz"
        return bool(http_json(url, timeout=2.0, ca_file=state.ca_file))

    wait_for("coordinator", healthy, 180, record)


def _policies(state: FleetState) -> None:
    target = state.root / "policies"
    if (target / MANIFEST).is_file():
        return
    given = state.spec.get("policies")
    if given:
        shutil.copytree(given, target, dirs_exist_ok=True)
        return
    _run_cli(
        ["decisions", "train", "--preset", "smoke", "--out", str(target)],
        "decision policies (fedge decisions train --preset smoke)",
        fleet_env(),
        timeout=900,
    )


def agent_toml(state: FleetState, site: SiteRecord) -> str:
    """A site's agent.toml: every path inside the site's own directory."""
    from fedge.edge_agent._config import AgentConfig

    broker = f"127.0.0.1:{state.ports['mosquitto']}"
    broker_tls = roots = coordinator_ca = ""
    if state.tls:
        files = tls_files(state)
        cert, key = files["agent"]
        broker_tls = (f'[broker.tls]\nca_file = "{files["ca"]}"\ncert_file = "{cert}"\n'
                      f'key_file = "{key}"\n')  # fmt: skip
        roots = f'root_certificates = "{files["ca"]}"\n'
        coordinator_ca = f'ca_file = "{files["ca"]}"\n'
    sections = [
        "[agent]\nstep_seconds = 300\n",
        f'[broker]\nurl = "{"mqtts" if state.tls else "mqtt"}://{broker}"\n'
        f"reconnect_max_s = 5\n{broker_tls}",
        '[store]\npath = "agent.db"\n',
        # The replayed clock runs ahead of the wall clock at --speed > 1.
        "[ingest]\nmax_future_s = 31536000\n",
        '[model]\ndir = "models"\n',
        '[security]\nkey_file = "site.key"\ncoordinator_keys = "coordinator.pub"\n'
        'kek_file = "site.kek"\n',
        f'[federation]\nsuperlink = "127.0.0.1:{state.ports["superlink"]}"\n'
        f'supernode = "{BIN / "flower-supernode"}"\nruntime_port = {site.runtime_port}\n'
        f'state_dir = "federation"\nrestart_min_s = 1\nrestart_max_s = 10\n{roots}',
        f'[metrics]\nhost = "127.0.0.1"\nport = {site.metrics_port}\n',
    ]
    if "coordinator" in AgentConfig.__dataclass_fields__:
        sections.append(
            f'[coordinator]\nurl = "{state.coordinator_url}"\n{coordinator_ca}'
            "health_interval_s = 5\nmodel_poll_s = 5\n"
        )
    return "\n".join(sections)


def _site_files(state: FleetState, site: SiteRecord) -> None:
    """The site's KEK, key file (``fedge keys init``) and agent.toml, made once."""
    d = Path(site.dir)
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "site.kek").exists():
        _write_private(d / "site.kek", secrets.token_hex(32) + "\n")
    if not (d / "site.key").exists():
        _run_cli(["keys", "init", "--key-file", str(d / "site.key"),
                  "--kek-file", str(d / "site.kek")], f"site {site.index}: fedge keys init",
                 fleet_env())  # fmt: skip
    config = d / "agent.toml"
    text = agent_toml(state, site)
    if site.site_id:
        text = text.replace("[agent]\n", f'[agent]\nsite = "{site.site_id}"\n', 1)
    config.write_text(text)


def _enroll(state: FleetState, site: SiteRecord) -> None:
    """A one-time token from the operator side, then ``fedge site enroll`` on the site."""
    d = Path(site.dir)
    env = fleet_env(FEDGE_COORDINATOR_URL=state.coordinator_url)
    if state.ca_file:
        env["FEDGE_CA_FILE"] = str(state.ca_file)
    key_file = state.root / "coordinator" / "admin.key"
    token = _run_cli(["site", "token", "--ttl", "600", "--api-key-file", str(key_file)],
                     f"site {site.index}: fedge site token", env).strip()  # fmt: skip
    _run_cli(
        ["site", "enroll", "--token", token, "--config", str(d / "agent.toml"),
         "--archetype", site.archetype or "unknown", "--region", "fleet"],
        f"site {site.index}: fedge site enroll", env,
    )  # fmt: skip
    import tomllib

    site.site_id = str(tomllib.loads((d / "agent.toml").read_text())["agent"]["site"])
    state.save()


def _agent(state: FleetState, site: SiteRecord) -> ProcessRecord:
    d = Path(site.dir)
    cmd = [str(BIN / "fedge"), "agent", "run", "--config", str(d / "agent.toml")]
    return spawn(state, f"agent-{site.index}", cmd, d / "agent.log", fleet_env(),
                 port=site.metrics_port, cwd=d)  # fmt: skip


def agent_health(site: SiteRecord) -> dict[str, Any]:
    body = http_json(f"http://127.0.0.1:{site.metrics_port}/healthz", timeout=2.0)
    return body if isinstance(body, dict) else {}


def _replayer(state: FleetState) -> None:
    d = state.root / "replayer"
    cmd = [sys.executable, "-m", "fedge.simulation._replayer", str(state.root.resolve())]
    spawn(state, "replayer", cmd, d / "replayer.log", fleet_env())


def _archetypes(state: FleetState) -> list[str]:
    from fedge.simulation._replayer import open_source

    source = open_source(state)
    return [source.archetype(i) for i in range(len(state.sites))]


# --- up / status / down -------------------------------------------------------------------


@dataclass
class Fleet:
    """A started fleet: its state and how to reach its parts."""

    state: FleetState

    def site_ids(self) -> list[str]:
        return [s.site_id for s in self.state.sites if s.site_id]


def _new_state(directory: Path, spec: FleetSpec) -> FleetState:
    root = directory.resolve()
    names = ["mosquitto", "coordinator", "superlink"] + (["postgres"] if spec.postgres else [])
    taken: set[int] = set()
    ports = {name: free_port(taken) for name in names}
    sites = [
        SiteRecord(
            i, str(root / "sites" / f"site-{i:03d}"), None, "", free_port(taken), free_port(taken)
        )
        for i in range(spec.sites)
    ]
    spec_json = {
        "sites": spec.sites,
        "data": str(spec.data.resolve()) if spec.data else None,
        "speed": spec.speed,
        "postgres": spec.postgres,
        "policies": str(spec.policies.resolve()) if spec.policies else None,
        "seed": spec.seed,
        "tls": spec.tls,
    }
    state = FleetState(str(root), spec_json, ports, sites, created_at=time.time())
    return state


def _check_resume(state: FleetState, spec: FleetSpec) -> None:
    old = state.spec
    if old["sites"] != spec.sites or bool(old["postgres"]) != spec.postgres:
        raise FleetError(
            f"--dir: {state.dir} holds a fleet of {old['sites']} sites"
            f"{' on PostgreSQL' if old['postgres'] else ''}; `fedge fleet down` and use "
            "another directory for a different one"
        )
    if bool(old.get("tls")) != spec.tls:
        was = "with TLS (--tls)" if old.get("tls") else "without TLS"
        raise FleetError(
            f"--tls: {state.dir} holds a fleet {was}; `fedge fleet down` and use another "
            "directory to change it"
        )


def up(directory: Path, spec: FleetSpec, *, echo: Callable[[str], None] = lambda _: None) -> Fleet:
    """Start (or resume) the fleet in ``directory`` and wait until it is healthy."""
    if directory.exists() and not directory.is_dir():
        raise FleetError(f"--dir: {directory} is not a directory")
    if (directory / STATE_FILE).exists():
        state = load_state(directory)
        _check_resume(state, spec)
        state.spec["speed"] = spec.speed  # pacing may change on resume
        echo(f"resuming the fleet in {state.dir}")
    else:
        if directory.exists() and any(directory.iterdir()):
            raise FleetError(f"--dir: {directory} is not empty and holds no fleet")
        state = _new_state(directory, spec)
        archetypes = _archetypes(state)  # a bad --data file is refused before anything
        for site in state.sites:
            site.archetype = archetypes[site.index]
        directory.mkdir(parents=True, exist_ok=True)
        state.save()
    admin = state.root / "coordinator" / "admin.key"
    if not admin.exists():
        _write_private(admin, "fedge-fleet-" + secrets.token_urlsafe(24) + "\n")
    try:
        _start_all(state, echo)
    except BaseException:
        echo("start-up failed; the parts that did start keep running (fedge fleet down)")
        raise
    return Fleet(state)


def _running(state: FleetState, name: str) -> bool:
    record = state.processes.get(name)
    return record is not None and alive(record)


def _start_all(state: FleetState, echo: Callable[[str], None]) -> None:
    if state.tls and not _tls_made(state):
        echo("making the fleet's CA and certificates")
        make_tls(state)
    if not _running(state, "mosquitto"):
        echo("starting mosquitto")
        _mosquitto(state)
    if state.spec.get("postgres") and not _running(state, "postgres"):
        echo("starting postgres")
        _postgres(state)
    echo("decision policies")
    _policies(state)
    if not _running(state, "superlink"):
        echo("starting the superlink")
        _superlink(state)
    _each(lambda site: _site_files(state, site), state.sites)
    (state.root / "coordinator").mkdir(parents=True, exist_ok=True)
    _topology(state)
    if not _running(state, "coordinator"):
        echo("starting the coordinator")
        _coordinator(state)
    fresh = [s for s in state.sites if not s.site_id]
    if fresh:
        echo(f"enrolling {len(fresh)} site(s)")
    _each(lambda site: _enroll(state, site), fresh)
    if fresh:  # the topology names the enrolled sites: the coordinator reads it at start
        _topology(state)
        stop_group(state.processes["coordinator"])
        _coordinator(state)
    for site in state.sites:
        if not _running(state, f"agent-{site.index}"):
            _sweep(site.dir)  # a SuperNode its killed agent left behind
            echo(f"starting agent {site.index} ({site.site_id})")
            _agent(state, site)
    _wait_agents(state)
    if _running(state, "replayer") and _replay_speed(state) not in (None, state.spec["speed"]):
        echo(f"restarting the replayer at {state.spec['speed']:g}x")
        stop_group(state.processes["replayer"])
    if not _running(state, "replayer"):
        echo("starting the replayer")
        _replayer(state)
    _wait_healthy(state)


def _replay_speed(state: FleetState) -> float | None:
    """The speed of the replayer's current pacing segment, if it has one."""
    try:
        segments = json.loads((state.root / "replayer" / "position.json").read_text())["segments"]
        return float(segments[-1]["speed"]) if segments else None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _each(work: Callable[[SiteRecord], None], sites: list[SiteRecord]) -> None:
    """``work`` on every site, a few at a time; the first failure is raised."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=SETUP_WORKERS) as pool:
        for future in [pool.submit(work, site) for site in sites]:
            future.result()


def _wait_agents(state: FleetState, timeout: float = 120.0) -> None:
    for site in state.sites:
        record = state.processes[f"agent-{site.index}"]

        def ready(site: SiteRecord = site) -> bool:
            health = agent_health(site)
            return health.get("status") == "ok" and bool(health.get("broker_connected"))

        wait_for(f"agent {site.index} (site {site.site_id})", ready, timeout, record)


def _supernode_up(site: SiteRecord) -> bool:
    """The agent's SuperNode runs (its pid in the agent's health) and the agent counts
    it up (``fedge_agent_supernode_up``)."""
    health = agent_health(site)
    if not health.get("supernode_pid"):
        return False
    metrics = _metrics(site)
    return metrics.get("fedge_agent_supernode_up", 0.0) >= 1.0


def _metrics(site: SiteRecord) -> dict[str, float]:
    """The agent's Prometheus metrics, label sets joined into the name."""
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as ans:
            text = ans.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise FleetError(f"GET {url}: {exc}") from exc
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def agent_metrics(site: SiteRecord) -> dict[str, float]:
    return _metrics(site)


def _flwr_home(state: FleetState) -> Path:
    """A FLWR_HOME of the fleet's own whose ``fleet`` connection is its SuperLink."""
    home = state.root / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    trust = f'root-certificates = "{state.ca_file}"' if state.ca_file else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "fleet"\n[superlink.fleet]\n'
        f'address = "127.0.0.1:{state.ports["superlink"]}"\n{trust}\n'
    )
    return home


def online_nodes(state: FleetState) -> set[str]:
    """The node ids the SuperLink lists as online (``flwr supernode ls``)."""
    env = fleet_env(FLWR_HOME=str(_flwr_home(state)))
    try:
        done = subprocess.run(
            [str(BIN / "flwr"), "supernode", "ls", "fleet", "--format", "json"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        nodes = json.loads(done.stdout).get("nodes", [])
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError) as exc:
        raise FleetError(f"superlink: cannot list its nodes: {exc}") from exc
    return {str(n["node-id"]) for n in nodes if n.get("status") == "online"}


def node_id(site: SiteRecord) -> str | None:
    """The node id the site's SuperNode was given last (from its log)."""
    try:
        text = (Path(site.dir) / "supernode.log").read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"SuperNode ID: (\d+)", text)
    return found[-1] if found else None


def _wait_healthy(state: FleetState, timeout: float = 120.0) -> None:
    health = f"{state.coordinator_url}/healthz"
    wait_for(
        "coordinator",
        lambda: bool(http_json(health, timeout=2.0, ca_file=state.ca_file)),
        30,
        state.processes["coordinator"],
    )
    for site in state.sites:
        record = state.processes[f"agent-{site.index}"]
        wait_for(
            f"the SuperNode of agent {site.index} (site {site.site_id})",
            lambda site=site: _supernode_up(site) and node_id(site) is not None,  # type: ignore[misc]
            timeout,
            record,
        )
    deadline = time.monotonic() + timeout
    while True:
        online = online_nodes(state)
        missing = [s for s in state.sites if node_id(s) not in online]
        if not missing:
            break
        if time.monotonic() > deadline:
            names = ", ".join(f"agent {s.index} (node {node_id(s)})" for s in missing)
            raise FleetError(f"SuperNodes not online at the superlink: {names}")
        time.sleep(1.0)
    if not _running(state, "replayer"):
        record = state.processes["replayer"]
        raise FleetError(f"replayer exited; see {record.log}{_tail(record.log)}")


def check_running(state: FleetState) -> None:
    """Every part runs; else a FleetError naming the ones that do not."""
    down_parts = [name for name, r in state.processes.items() if not alive(r)]
    if down_parts:
        raise FleetError(
            f"not running: {', '.join(sorted(down_parts))} (`fedge fleet up --dir {state.dir}` "
            "restarts them)"
        )


def status(directory: Path) -> dict[str, Any]:
    """Per part whether it runs; per site what it serves, its last forecast, last action
    and alerts, from the coordinator's API and the agents' own endpoints."""
    state = load_state(directory)
    parts = {
        name: {"pid": r.pid, "port": r.port, "running": alive(r), "log": r.log}
        for name, r in sorted(state.processes.items())
    }
    base = state.coordinator_url
    # a fleet whose coordinator never started has no admin key yet: nothing to ask it
    coordinator_up = parts.get("coordinator", {}).get("running", False)
    key = state.admin_key() if coordinator_up else ""
    ca = state.ca_file
    actions = _optional(f"{base}/api/v1/actions?limit=500", key, ca) if coordinator_up else None
    health = _optional(f"{base}/api/v1/health/sites", key, ca) if coordinator_up else None
    sites = []
    for site in state.sites:
        row: dict[str, Any] = {"index": site.index, "site_id": site.site_id}
        try:
            h = agent_health(site)
            m = _metrics(site)
            row["serving"] = h.get("model_version")
            row["broker_connected"] = h.get("broker_connected")
            row["supernode"] = "running" if h.get("supernode_pid") else "absent"
            row["alerts"] = {
                sev: int(m.get(f'fedge_agent_alerts_total{{severity="{sev}"}}', 0.0))
                for sev in ("warning", "critical")
            }
        except FleetError:
            row["serving"] = None
            row["agent"] = "unreachable"
        if coordinator_up and site.site_id:
            last = _optional(f"{base}/api/v1/forecasts?site_id={site.site_id}&limit=1", key, ca)
            row["last_forecast"] = last[0] if isinstance(last, list) and last else None
        row["last_action"] = _last_action(actions, site.site_id)
        row["coordinator_health"] = _site_health(health, site.site_id)
        sites.append(row)
    return {"dir": state.dir, "coordinator": base, "parts": parts, "sites": sites}


def _optional(url: str, key: str, ca_file: Path | None = None) -> Any:
    """An API answer, or None where the coordinator has no such route (yet) or fails."""
    try:
        return http_json(url, api_key=key, ca_file=ca_file)
    except FleetError:
        return None


def _items(answer: Any, key: str) -> list[dict[str, Any]]:
    if isinstance(answer, list):
        return [a for a in answer if isinstance(a, dict)]
    if isinstance(answer, dict) and isinstance(answer.get(key), list):
        return [a for a in answer[key] if isinstance(a, dict)]
    return []


def _last_action(actions: Any, site_id: str | None) -> dict[str, Any] | None:
    mine = [a for a in _items(actions, "actions") if a.get("site_id") == site_id]
    if not mine:
        return None
    return max(mine, key=lambda a: float(a.get("action_id", a.get("id", 0)) or 0))


def _site_health(health: Any, site_id: str | None) -> dict[str, Any] | None:
    for row in _items(health, "sites"):
        if row.get("site_id") == site_id:
            return row
    return None


def down(directory: Path, *, echo: Callable[[str], None] = lambda _: None) -> list[int]:
    """Stop every process the fleet started (replayer and agents first, the broker last)
    and sweep what is left; returns the pids still alive afterwards (none, normally)."""
    state = load_state(directory)
    agents = [f"agent-{s.index}" for s in state.sites]  # together: each stops its SuperNode
    for names in (["replayer"], agents, ["coordinator"], ["superlink"], ["postgres"],
                  ["mosquitto"]):  # fmt: skip
        records = [state.processes[n] for n in names if n in state.processes]
        records = [r for r in records if alive(r)]
        for record in records:
            echo(f"stopping {record.name} (pid {record.pid})")
        stop_groups(records)
    for pid in fleet_processes(state):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    left = fleet_processes(state)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in fleet_processes(state) if not _zombie(p)]
    state.processes = {}
    state.save()
    return left
