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

The agent's SuperNode finds this program first on its ``PATH`` under Flower's own name
(``flower-superexec``, the name ``flower-supernode --isolation subprocess`` starts): a
launcher the agent writes runs this file (not the package, whose imports pull in torch)
with ``--slots N --slot-dir DIR`` before Flower's own arguments.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

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


@dataclass
class Running:
    """The ClientApps this process started, each with the slot it holds."""

    children: list[tuple[subprocess.Popen[bytes], Slot]] = field(default_factory=list)

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
    parser.add_argument("--runtime-api-address", required=True)
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--insecure", action="store_true")
    transport.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--allow-runtime-dependency-installation", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, slots: HostSlots) -> None:
    """Claim and start tasks, one per held slot, until the parent SuperNode exits."""
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
            quiet = subprocess.DEVNULL if spec.suppress_output else None
            try:
                proc = subprocess.Popen(command, stdout=quiet, stderr=quiet)
            except OSError as exc:
                return LaunchResult.failed(f"cannot start {command[0]}: {exc}")
            running.children.append((proc, held.pop()))
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
