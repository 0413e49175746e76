"""The SuperNode's session yields to the agent's and the coordinator's as a whole: with
the kernel's autogroups a process's own nice value only counts inside its session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.edge_agent import SupervisorError
from fedge.edge_agent._supernode import SUPERNODE_NICE, lower_autogroup

AUTOGROUPS = Path("/proc/self/autogroup").exists()


def _nice_of_group(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


@pytest.mark.skipif(not AUTOGROUPS, reason="this kernel schedules without autogroups")
def test_a_new_session_and_the_children_it_starts_get_the_supernode_nice_value() -> None:
    code = "import subprocess, sys; c = subprocess.Popen(['sleep', '30']); print(c.pid, flush=True); c.wait()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True, text=True
    )
    child = None
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert _nice_of_group(proc.pid) == 0
        assert lower_autogroup(proc.pid, SUPERNODE_NICE) == SUPERNODE_NICE
        assert _nice_of_group(proc.pid) == SUPERNODE_NICE
        assert _nice_of_group(child) == SUPERNODE_NICE  # one group: the training is in it
        assert lower_autogroup(proc.pid, 5) == SUPERNODE_NICE  # never raised back
        assert _nice_of_group(proc.pid) == SUPERNODE_NICE
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_a_process_that_is_gone_is_left_alone(tmp_path: Path) -> None:
    assert lower_autogroup(4_000_000, SUPERNODE_NICE, proc=tmp_path) is None


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_nice_value_outside_0_to_19_is_refused(nice: int) -> None:
    with pytest.raises(SupervisorError, match="autogroup nice value from 0 to 19"):
        lower_autogroup(1, nice)
