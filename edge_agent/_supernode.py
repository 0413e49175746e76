"""Supervise a ``flower-supernode`` that trains the shared ClientApp from this agent's store.

The SuperNode is a separate process (the agent never imports flwr or torch). It runs
fedge's deployed ClientApp (``fedge.federation.client_app:app``) in an isolated
subprocess, and the agent hands it, in its ``--node-config``, everything that ClientApp
works from: the site's key file and KEK file (``[security]``), the coordinator's public
keys from enrollment, the agent's store (the node trains on all its cells) and the node's
own state directory. Which site the node is follows from its key alone, proved at each
run's hello. The server's messages never set any of these.

With ``federation.root_certificates`` the SuperNode talks TLS to the SuperLink; with
``federation.auth_private_key`` it also authenticates with Flower's SuperNode
authentication (the SuperLink runs ``--enable-supernode-auth`` and the operator registers
the node's public key with ``flwr supernode register``); ``federation.trusted_entities``
turns on Flower's FAB verification. If the SuperNode exits, it is restarted after an
exponential backoff that resets once a run has lasted ``stable_after_s``.

The SuperNode runs ClientApp code that the SuperLink ships, so it gets a minimal
environment (:func:`child_environment`), never the agent's own: a secret the agent was
started with (``$FEDGE_KEK``, broker or cloud credentials) stays in the agent.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import fedge
from fedge.edge_agent._broker import backoff_delay
from fedge.edge_agent._config import FederationConfig
from fedge.edge_agent._errors import SupervisorError

log = logging.getLogger("fedge.agent.supernode")

#: What Flower's own exit codes (1.41's ``flwr.supercore.exit.ExitCode``) mean for the
#: operator. ``flower-supernode`` exits with status 1 on every error and writes
#: ``Exit Code: <code>`` with Flower's message to its log (the agent's ``supernode.log``).
EXIT_HINTS: dict[int, str] = {
    302: "federation.auth_private_key is not an EC private key Flower can load",
    303: "SuperNode authentication needs TLS (federation.root_certificates)",
    304: "federation.trusted_entities is not a valid trusted-entities file",
    305: (
        "the SuperLink refused or failed the connection; with --enable-supernode-auth on "
        "the SuperLink, is this node's public key registered (flwr supernode register)?"
    ),
}

_EXIT_CODE = re.compile(rb"Exit Code: (\d+)")

#: What the SuperNode and its Python ClientApp need of the agent's environment: where
#: programs, libraries and the home (Flower's ``~/.flwr``) are, the locale and time zone,
#: the interpreter's own settings, and thread counts. Nothing else is passed on.
CHILD_ENV_NAMES: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "VIRTUAL_ENV",
    "PYTHONPATH", "PYTHONHOME", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONHASHSEED",
    "FLWR_HOME", "FLWR_LOG_LEVEL", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
)  # fmt: skip
CHILD_ENV_PREFIXES: tuple[str, ...] = ("LC_",)


def flower_exit_code(log_path: Path, offset: int = 0) -> int | None:
    """The last ``Exit Code: <code>`` Flower wrote to ``log_path`` after byte ``offset``."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(offset)
            codes = _EXIT_CODE.findall(handle.read())
    except OSError:
        return None
    return int(codes[-1]) if codes else None


def exit_hint(code: int | None) -> str:
    """The operator's reading of a Flower exit code, or ``""`` for one without a hint."""
    if code is None:
        return ""
    hint = EXIT_HINTS.get(code)
    return f" (Flower exit code {code})" if hint is None else f" (Flower exit code {code}: {hint})"


def resolve_binary(name: str) -> Path:
    """An explicit path, else PATH, else next to this interpreter (a venv's bin/)."""
    if "/" in name:
        path = Path(name)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SupervisorError(f"federation.supernode: {name} is not an executable file")
        return path
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise SupervisorError(
            f"federation.supernode: {name!r} not found on PATH or next to {sys.executable}"
        )
    return Path(found)


def child_environment(parent: Mapping[str, str], bindir: Path) -> dict[str, str]:
    """The SuperNode's environment: the allowed part of ``parent``, ``bindir`` first on
    ``PATH`` (flower-supernode starts flower-superexec by name), telemetry off."""
    env = {
        name: value
        for name, value in parent.items()
        if name in CHILD_ENV_NAMES or name.startswith(CHILD_ENV_PREFIXES)
    }
    env["PATH"] = os.pathsep.join(p for p in (str(bindir), parent.get("PATH", "")) if p)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def node_config(config: FederationConfig) -> str:
    """The SuperNode's ``--node-config``: TOML values, paths quoted."""
    items: list[tuple[str, Path | None]] = [
        ("key-file", config.key_file),
        ("kek-file", config.kek_file),
        ("coordinator-keys", config.coordinator_keys),
        ("store", config.store),
        ("state-dir", config.state_dir),
    ]
    parts = [f'{key}="{value.resolve()}"' for key, value in items if value is not None]
    if config.extra_node_config:
        parts.append(config.extra_node_config)
    return " ".join(parts)


#: fedge's SuperExec, which gates ClientApp starts on the host's slots. Run by file: the
#: federation package's own imports (torch) would cost every SuperNode seconds and memory.
LAUNCH_GATE = Path(fedge.__file__).resolve().parent / "federation" / "_launch_gate.py"


#: What a warm-start zygote imports: the site's ClientApp (and with it torch and Flower).
WARM_MODULES = "fedge.federation.client_app"


def interpreter_of(binary: Path) -> str:
    """The Python that runs ``binary`` (its ``#!`` line: the one with flwr), else ours."""
    try:
        with open(binary, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return sys.executable
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if len(words) == 1 and Path(words[0]).is_absolute() and Path(words[0]).exists():
            return words[0]
    return sys.executable


def write_superexec(config: FederationConfig, python: str) -> Path:
    """Write this node's ``flower-superexec`` launcher (fedge's gate, with the host's
    slots) and return its directory, which goes first on the SuperNode's ``PATH``."""
    bindir = config.state_dir / "bin"
    bindir.mkdir(parents=True, exist_ok=True, mode=0o700)
    launcher = bindir / "flower-superexec"
    args = ["--slots", str(config.clientapp_slots), "--slot-dir", str(config.clientapp_slot_dir)]
    if config.clientapp_warm_start:
        args += ["--warm-modules", WARM_MODULES]
    launcher.write_text(
        f"#!{python}\n"
        "# fedge's SuperExec for this agent's SuperNode, written by the agent at each start.\n"
        "import runpy, sys\n"
        f"sys.argv[1:1] = {args!r}\n"
        f"runpy.run_path({str(LAUNCH_GATE)!r}, run_name='__main__')\n"
    )
    launcher.chmod(0o700)
    return bindir


def supernode_command(config: FederationConfig, binary: Path) -> list[str]:
    if config.root_certificates is not None:
        transport = ["--root-certificates", str(config.root_certificates)]
    else:
        transport = ["--insecure"]
    if config.auth_private_key is not None:
        transport += ["--auth-supernode-private-key", str(config.auth_private_key)]
    if config.trusted_entities is not None:
        transport += ["--trusted-entities", str(config.trusted_entities)]
    return [
        str(binary),
        *transport,
        "--superlink",
        config.superlink,
        "--isolation",
        "subprocess",
        "--node-config",
        node_config(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(config.runtime_port),
    ]


#: The SuperNode's nice value, inherited by the ClientApp processes it starts to train:
#: training takes every core it gets, and on a gNB host the agent's forecasts and the
#: coordinator's actions must not wait behind it. Its session's autogroup gets it too.
#: The lowest priority: an idle host still gives training every core, and under load a
#: nice 19 group weighs 15 against a default group's 1,024 (at nice 10, 110: twenty
#: training sites on one machine outweighed the coordinator two to one).
SUPERNODE_NICE = 19
#: The kernel takes one autogroup change per 100 ms from an unprivileged process (EAGAIN
#: otherwise): agents starting together retry, a little apart, for up to about 3 s.
_AUTOGROUP_TRIES = 30
_AUTOGROUP_PAUSE_S = 0.1
_AUTOGROUP = re.compile(r"/autogroup-\d+ nice (-?\d+)")


def _lower_priority(pid: int) -> None:
    try:
        os.setpriority(
            os.PRIO_PROCESS, pid, max(os.getpriority(os.PRIO_PROCESS, pid), SUPERNODE_NICE)
        )
    except OSError as exc:  # gone already, or not permitted: it runs at the agent's
        log.warning("cannot lower the SuperNode's priority: %s", exc)
    lower_autogroup(pid, SUPERNODE_NICE)


def lower_autogroup(
    pid: int, nice: int, *, proc: Path = Path("/proc"), rng: random.Random | None = None
) -> int | None:
    """Give ``pid``'s autogroup at least the nice value ``nice``; the group's nice value
    after it, or None where the kernel has no autogroups (or the process is gone).

    With the scheduler's autogroups (Linux ``CONFIG_SCHED_AUTOGROUP``, on by default on
    most distributions' kernels) every session shares the CPU as one unit, whatever its
    processes' own nice values: the SuperNode's session (its own, so that :meth:`stop`
    ends the whole group) would weigh as much as the agent's or the coordinator's. Its
    ClientApps stay in it (Flower does not detach them), so this covers the training."""
    if not 0 <= nice <= 19:
        raise SupervisorError(f"an autogroup nice value from 0 to 19, not {nice}")
    path = proc / str(pid) / "autogroup"
    rng = rng or random.Random()
    for _ in range(_AUTOGROUP_TRIES):
        try:
            found = _AUTOGROUP.fullmatch(path.read_text().strip())
            if found is None:
                log.warning("cannot read the SuperNode's autogroup: %s", path)
                return None
            current = int(found.group(1))
            if current >= nice:
                return current
            path.write_text(f"{nice}\n")
        except (FileNotFoundError, ProcessLookupError):  # no autogroups, or it is gone
            return None
        except BlockingIOError:  # another agent just changed one: the kernel's pace
            time.sleep(_AUTOGROUP_PAUSE_S * (1.0 + rng.random()))
        except OSError as exc:  # not permitted: it weighs as the agent's session does
            log.warning("cannot lower the SuperNode's autogroup priority: %s", exc)
            return None
    log.warning("cannot lower the SuperNode's autogroup priority: the kernel kept refusing")
    return None


class SupernodeSupervisor:
    def __init__(
        self,
        config: FederationConfig,
        store_path: Path,
        log_path: Path,
        *,
        on_state: Callable[[bool], None] = lambda _: None,
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.command = supernode_command(config, resolve_binary(config.supernode))
        self.store_path = store_path
        self.log_path = log_path
        self._on_state = on_state
        self._on_restart = on_restart
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._log_offset = 0  # where the running SuperNode's output begins in log_path
        self.restarts = 0
        self.started = threading.Event()

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._proc is None else self._proc.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        binary = Path(self.command[0])
        env = child_environment(os.environ, binary.parent)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        gate = write_superexec(self.config, interpreter_of(binary))
        env["PATH"] = os.pathsep.join((str(gate), env["PATH"]))
        with open(self.log_path, "ab") as out:
            self._log_offset = out.seek(0, os.SEEK_END)
            try:
                proc = subprocess.Popen(
                    self.command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise SupervisorError(f"cannot start {self.command[0]}: {exc}") from exc
        _lower_priority(proc.pid)
        return proc

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedge-supernode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                proc = self._spawn()
            except SupervisorError as exc:
                log.error("%s", exc)
                proc = None
            if proc is not None:
                with self._lock:
                    self._proc = proc
                if self._stop.is_set():  # stop() ran while we were spawning
                    os.killpg(proc.pid, signal.SIGTERM)
                self._on_state(True)
                self.started.set()
                code = proc.wait()
                self._on_state(False)
                if self._stop.is_set():
                    break
                hint = exit_hint(flower_exit_code(self.log_path, self._log_offset))
                log.warning("flower-supernode exited with %s%s; restarting", code, hint)
            if time.monotonic() - began >= self.config.stable_after_s:
                attempt = 0
            delay = backoff_delay(
                attempt, self.config.restart_min_s, self.config.restart_max_s, self._rng
            )
            attempt += 1
            if self._stop.wait(delay):
                break
            self.restarts += 1
            self._on_restart()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the SuperNode's process group, SIGKILL it if it lingers."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
