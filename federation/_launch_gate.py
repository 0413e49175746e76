"""fedge's SuperExec: Flower's task loop, with ClientApp starts gated by host-wide slots.

Flower's SuperExec claims a task and starts a ``flwr-clientapp`` for it at once. The
ClientApp must reach its SuperNode within Flower's claim window (30 s), or the claim
lapses, the task goes back to pending and a second ClientApp is started for it while the
first is still importing. Where several SuperNodes share a host (a hub that serves many
sites, or ``fedge fleet``'s agents on one machine), every SuperNode gets its round's
message at the same moment and all their ClientApps start together: on two cores twenty
of them (each needs about 3 s of CPU to import Flower, 3 s more for torch) miss the
window, their copies crowd out the first ones, and the round times out.

Here a task is claimed only while this process holds one of the host's slots (an
exclusive ``flock`` on one of N files in a directory every SuperNode of the host shares),
and the slot is held until the ClientApp exits. A ClientApp therefore starts with at
most N - 1 others beside it and reaches the SuperNode in seconds; the other nodes' tasks
wait, unclaimed, in their SuperNodes. A process that dies releases its slot (the kernel
drops its locks), so a crash never leaves the host without one.

With ``--warm-modules``, ClientApps start warm: at its first launch the gate starts a
zygote, a process that imports Flower's ClientApp runtime and the named modules (the
site's app, torch) once, then forks one child per ClientApp, which runs Flower's own
``flwr-clientapp`` entry point with the arguments Flower gives it. A ClientApp then starts
in milliseconds instead of the seconds of CPU its imports cost, and its pages are shared
with the zygote's until written. The zygote is closed after ``WARM_IDLE_S`` without a
launch. A module that does not import is named in the log and left to each child; a
zygote that has died unasked is named once and every later ClientApp starts cold, as
Flower starts it.

The agent's SuperNode finds this program first on its ``PATH`` under Flower's own name
(``flower-superexec``, the name ``flower-supernode --isolation subprocess`` starts): a
launcher the agent writes runs this file (not the package, whose imports pull in torch)
with ``--slots N --slot-dir DIR`` before Flower's own arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

#: How often an idle loop asks its SuperNode for a task: one loopback call, so a task
#: waits a fraction of a second rather than Flower's SuperExec default of one.
POLL_S = 0.25
MAX_SLOTS = 256


class SlotError(ValueError):
    """The slot settings are unusable (a count out of range, a directory not writable)."""


@dataclass
class Slot:
    """One held slot: the open, locked file; closing it releases the lock."""

    index: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class HostSlots:
    """N slots shared by every process that opens the same directory."""

    count: int
    directory: Path

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SLOTS:
            raise SlotError(f"ClientApp slots: between 1 and {MAX_SLOTS}, got {self.count}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SlotError(f"ClientApp slot directory {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise SlotError(f"ClientApp slot directory {self.directory}: not writable")

    def try_acquire(self) -> Slot | None:
        """A free slot, locked for this process, or None when all N are held."""
        for index in range(self.count):
            path = self.directory / f"slot-{index}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return Slot(index, fd)
        return None


class Child(Protocol):
    """A started ClientApp: a ``subprocess.Popen`` (cold) or a :class:`WarmChild`."""

    def poll(self) -> int | None: ...


#: Flower's ``flwr-clientapp`` console script, as a zygote's child runs it.
CLIENTAPP_ENTRY = "flwr.supernode.cli:flwr_clientapp"
#: How long a launch waits for the zygote's answer before the ClientApp starts cold.
SPAWN_TIMEOUT_S = 60.0


class Zygote:
    """A process holding the ClientApp's imports; it forks one child per launch.

    It is a new interpreter (this file run by path, as the gate is), not a fork of the
    gate, whose Flower client and threads a fork would copy. The gate and the zygote
    speak JSON lines over a socket pair: the gate sends ``{"argv": [...], "quiet": bool}``,
    the zygote answers ``{"pid": N}`` (or ``{"error": "..."}``) and later
    ``{"exit": N, "code": C}`` once that child has exited. The zygote ends when the
    gate's end of the socket closes (the gate exited, however it ended).
    """

    def __init__(self, modules: Sequence[str], entry: str = CLIENTAPP_ENTRY) -> None:
        ours, theirs = socket.socketpair()
        boot = f"import runpy, sys\nrunpy.run_path({__file__!r})['zygote_main'](sys.argv[1:])\n"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", boot, str(theirs.fileno()), entry, ",".join(modules)],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self.pid = self._proc.pid
        self._sock = ours
        self._buffer = b""
        self.exits: dict[int, int] = {}
        self.alive = True
        self.last_used = time.monotonic()

    def spawn(self, argv: Sequence[str], quiet: bool) -> WarmChild | None:
        """A child running ``argv``; None if the zygote is gone or did not answer."""
        if not self.alive:
            return None
        self.last_used = time.monotonic()
        try:
            self._sock.sendall(json.dumps({"argv": list(argv), "quiet": quiet}).encode() + b"\n")
        except OSError:
            self._lost("its socket closed")
            return None
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        while self.alive and time.monotonic() < deadline:
            for reply in self._read(min(1.0, max(deadline - time.monotonic(), 0.0))):
                if "pid" in reply:
                    return WarmChild(self, int(reply["pid"]))
                if "error" in reply:
                    _say(f"a warm ClientApp did not start ({reply['error']}): starting cold")
                    return None
        if self.alive:
            self._lost(f"no answer in {SPAWN_TIMEOUT_S:.0f} s")
            self.close()
        return None

    def pump(self) -> None:
        """Take in the zygote's exit reports without waiting."""
        if self.alive:
            for _ in self._read(0.0):
                pass

    def _read(self, timeout: float) -> list[dict[str, int | str]]:
        """Replies received within ``timeout``; exit reports are recorded, not returned."""
        replies: list[dict[str, int | str]] = []
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return replies
        try:
            data = self._sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._lost("it exited")
            return replies
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            reply = json.loads(line)
            if "exit" in reply:
                self.exits[int(reply["exit"])] = int(reply["code"])
            else:
                replies.append(reply)
        return replies

    def _lost(self, why: str) -> None:
        if self.alive:
            _say(f"the ClientApp zygote is gone ({why}): ClientApps start cold from now on")
        self.alive = False

    def close(self) -> None:
        """End the zygote (the ClientApps it forked run on, watched by their SuperNode)."""
        self.alive = False
        self._sock.close()
        try:
            self._proc.terminate()
            self._proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()


@dataclass
class WarmChild:
    """A ClientApp forked by the zygote: its exit comes as the zygote's report."""

    zygote: Zygote
    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.zygote.pump()
            if self.pid in self.zygote.exits:
                self.returncode = self.zygote.exits.pop(self.pid)
            elif not self.zygote.alive and not Path(f"/proc/{self.pid}").exists():
                self.returncode = -1  # gone with its zygote, and its exit code with them
        return self.returncode


def _say(line: str) -> None:
    print(f"fedge superexec: {line}", file=sys.stderr, flush=True)


def zygote_main(argv: list[str]) -> None:
    """The zygote process: ``FD ENTRY MODULES`` (its socket, ``module:function``, and
    the comma-separated modules to import before the first fork)."""
    sock = socket.socket(fileno=int(argv[0]))
    modules = [m for m in argv[2].split(",") if m]
    with contextlib.suppress(OSError, ValueError):  # the gate went away mid-message
        _serve(sock, modules, argv[1])


def _serve(sock: socket.socket, modules: list[str], entry: str) -> None:
    """The zygote's loop: import once, then fork a child per request and report its exit."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the SuperNode's Ctrl-C ends the gate
    module_name, _, attribute = entry.partition(":")
    main = getattr(importlib.import_module(module_name), attribute)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure: each child imports it
            _say(f"warm start: {name} does not import ({exc}); each ClientApp imports it")
    # A child's exit wakes the loop at once (SIGCHLD through a wakeup pipe).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    buffer = b""
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [], 1.0 if children else 5.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if sock.fileno() in ready:
            data = sock.recv(65536)
            if not data:
                return  # the gate is gone
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                try:
                    pid = _fork_child(sock, main, list(request["argv"]), bool(request["quiet"]))
                except OSError as exc:
                    sock.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
                    continue
                children.add(pid)
                sock.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                code = os.waitstatus_to_exitcode(status)
                sock.sendall(json.dumps({"exit": pid, "code": code}).encode() + b"\n")


def _fork_child(sock: socket.socket, main: object, argv: list[str], quiet: bool) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: Flower's ClientApp, as its console script would run it
        sock.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if quiet:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - until its exit
        sys.argv = argv
        try:
            main()  # type: ignore[operator]
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # reported as Python would, then exit
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@dataclass
class Running:
    """The ClientApps this process started, each with the slot it holds."""

    children: list[tuple[Child, Slot]] = field(default_factory=list)

    def reap(self) -> None:
        """Release the slot of every ClientApp that has exited."""
        alive = []
        for proc, slot in self.children:
            if proc.poll() is None:
                alive.append((proc, slot))
            else:
                slot.release()
        self.children = alive


def _arguments(argv: list[str]) -> argparse.Namespace:
    """The agent's ``--slots``/``--slot-dir``, then what ``flower-supernode`` passes its
    SuperExec (Flower 1.41)."""
    parser = argparse.ArgumentParser(prog="flower-superexec", description=__doc__)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--slot-dir", type=Path, required=True)
    parser.add_argument("--warm-modules", default="", help="comma-separated; empty: cold starts")
    parser.add_argument("--runtime-api-address", required=True)
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--insecure", action="store_true")
    transport.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--allow-runtime-dependency-installation", action="store_true")
    return parser.parse_args(argv)


#: A zygote this long without a launch, none of its ClientApps running, is closed: its
#: memory is the node's only while the federation uses it. The next launch starts another.
WARM_IDLE_S = 600.0


@dataclass
class WarmStarts:
    """The gate's zygote, started at the first launch and closed after ``WARM_IDLE_S``
    idle; one that dies unasked is named and not started again (ClientApps start cold)."""

    modules: list[str]
    entry: str = CLIENTAPP_ENTRY
    zygote: Zygote | None = None
    failed: bool = False

    def spawn(self, argv: Sequence[str], quiet: bool) -> WarmChild | None:
        if not self.modules or self.failed:
            return None
        if self.zygote is None:
            self.zygote = Zygote(self.modules, self.entry)
        child = self.zygote.spawn(argv, quiet)
        if child is None and not self.zygote.alive:
            self.failed = True
        return child

    def expire(self, running: Running, now: float) -> None:
        zygote = self.zygote
        if zygote is None or not zygote.alive or now - zygote.last_used < WARM_IDLE_S:
            return
        if any(isinstance(c, WarmChild) and c.zygote is zygote for c, _ in running.children):
            return
        zygote.close()
        self.zygote = None

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None


def run(args: argparse.Namespace, slots: HostSlots) -> None:
    """Claim and start tasks, one per held slot, until the parent SuperNode exits."""
    warm = WarmStarts([m.strip() for m in args.warm_modules.split(",") if m.strip()])
    try:
        _loop(args, slots, warm)
    finally:
        warm.close()


def _loop(args: argparse.Namespace, slots: HostSlots, warm: WarmStarts) -> None:
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TASK_TYPE_TO_COMMAND
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.executor import LaunchResult
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.executor.types import ExecutionSpec
    from flwr.supercore.superexec.plugin import AutoExecPlugin
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    running = Running()
    held: list[Slot] = []  # the slot of the claim being launched, if any

    class GatedExecutor(SubprocessExecutor):
        """Flower's subprocess launch, keeping each ClientApp's process and slot."""

        def launch(self, spec: ExecutionSpec) -> LaunchResult:
            command = [
                TASK_TYPE_TO_COMMAND[spec.task_type],
                TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type],
                spec.runtime_api_address,
                "--token",
                spec.token,
            ]
            if spec.insecure:
                command.append("--insecure")
            elif spec.root_certificates_path is not None:
                command += ["--root-certificates", spec.root_certificates_path]
            if spec.parent_pid is not None:
                command += ["--parent-pid", str(spec.parent_pid)]
            if spec.runtime_dependency_install:
                command.append("--allow-runtime-dependency-installation")
            child: Child | None = warm.spawn(command, spec.suppress_output)
            if child is None:
                quiet = subprocess.DEVNULL if spec.suppress_output else None
                try:
                    child = subprocess.Popen(command, stdout=quiet, stderr=quiet)
                except OSError as exc:
                    return LaunchResult.failed(f"cannot start {command[0]}: {exc}")
            running.children.append((child, held.pop()))
            return LaunchResult.accepted()

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    executor = GatedExecutor()
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates=validate_and_resolve_root_certificates(
            args.root_certificates, args.insecure
        ),
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    plugin = AutoExecPlugin(
        runtime_api_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates_path=args.root_certificates,
        runtime_dependency_install=args.allow_runtime_dependency_installation,
        executor=executor,
    )
    types = set(plugin.supported_task_types)
    try:
        while True:
            running.reap()
            warm.expire(running, time.monotonic())
            slot = slots.try_acquire()
            if slot is not None:
                held.append(slot)
                try:
                    answer = client.AcquireTask(
                        AcquireTaskRequest(supported_task_types=types, agentapp_fab_hashes=[])
                    )
                    if answer.HasField("task") and answer.token:
                        plugin.launch_task(token=answer.token, task=answer.task)
                finally:
                    while held:  # not launched (no task, or the launch failed): free it
                        held.pop().release()
            time.sleep(POLL_S)
    finally:
        client.close()


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    try:
        slots = HostSlots(args.slots, args.slot_dir)
    except SlotError as exc:
        print(f"fedge superexec: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        run(args, slots)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
