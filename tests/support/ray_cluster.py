"""A real two-node Ray cluster on this machine (``ray start --head`` and a second
``ray start --address``, one CPU each, every port free and on loopback, its temp dir under
/tmp), killed afterwards by its directory and address with all their descendants.
Shared by the cluster test and ``bench/simulate.py``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0"}


class ClusterError(RuntimeError):
    """``ray start`` failed or is missing: the cluster could not be brought up."""


def ray_available() -> bool:
    """Whether this environment has the ``ray`` command (the sim extra brings it)."""
    return shutil.which("ray", path=str(BIN)) is not None


def cluster_pids(address: str, root: Path) -> list[int]:
    """The cluster's processes (their command lines name its directory or its head) and
    all their descendants (Ray renames its agents' command lines)."""
    # whole tokens only: 127.0.0.1:1234 must not match another cluster's 127.0.0.1:12345
    mark = re.compile(rf"(?:{re.escape(str(root))}|{re.escape(address)})(?![\w-])")
    parent: dict[int, int] = {}
    found: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if mark.search(cmdline):
            found.add(int(proc.name))
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return sorted(found - {os.getpid()})


@contextlib.contextmanager
def two_node_cluster(cpus: int = 1, timeout: float = 180) -> Iterator[tuple[str, Path]]:
    """Yield the head's ``host:port`` and the cluster's temp dir; kill it all on exit.
    ``cpus`` per node: one each makes two ClientApp actors land on both nodes."""
    if cpus < 1:
        raise ClusterError(f"each node needs at least one CPU, got {cpus}")
    if not ray_available():
        raise ClusterError("ray is not installed (the sim extra has it)")
    root = Path(tempfile.mkdtemp(prefix="fedge-ray-", dir="/tmp"))  # short: socket paths
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--disable-usage-stats"]
    head = [
        str(BIN / "ray"), "start", "--head", "--port", str(port), "--temp-dir", str(root),
        "--include-dashboard", "false", "--dashboard-port", str(free_port()),
        "--ray-client-server-port", str(free_port()), *common,
    ]  # fmt: skip
    second = [str(BIN / "ray"), "start", "--address", address, *common]
    try:
        for command in (head, second):
            started = subprocess.run(
                command, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
            )
            if started.returncode != 0:
                raise ClusterError(started.stdout[-2000:] + started.stderr[-2000:])
        yield address, root
    finally:
        for pid in cluster_pids(address, root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
