"""Coordinator replicas on one PostgreSQL database: real ``fedge coordinator serve``
processes, each on its own free port, the leader found by its ``fedge_coordinator_leader``
gauge, killed with SIGKILL; the decision slots they recorded read back from the database.
Shared by the high-availability test and ``bench/failover.py``."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from tests.support.ports import free_port, service, wait_for_port

FEDGE = str(Path(sys.executable).with_name("fedge"))
T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it answers something other than None (or False)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(0.05)


@dataclass
class Replica:
    name: str
    port: int
    log: Path
    pid: int = 0
    killed: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def leader(self) -> bool | None:
        """This replica's gauge; None while it does not answer."""
        try:
            text = httpx.get(f"{self.base}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith("fedge_coordinator_leader "):
                return float(line.split()[1]) == 1.0
        return None

    def kill(self) -> None:
        """SIGKILL the replica's whole session (its ``flwr`` children too): a crash."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.killed = True


@dataclass
class Replicas:
    members: list[Replica] = field(default_factory=list)

    def leader(self) -> Replica | None:
        """The one live replica whose gauge says it leads, if exactly one does."""
        leading = [r for r in self.members if not r.killed and r.leader()]
        return leading[0] if len(leading) == 1 else None

    def others(self, replica: Replica) -> list[Replica]:
        return [r for r in self.members if r is not replica and not r.killed]


def replica_env(
    root: Path, database_url: str, identity_file: Path, **settings: str
) -> dict[str, str]:
    """The settings every replica shares: the database, the model store (a shared volume
    in production) and the coordinator's identity; ``settings`` more (name: value)."""
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FEDGE_COORDINATOR_DATABASE_URL": database_url,
        "FEDGE_COORDINATOR_MODEL_STORE": str(root / "models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(identity_file),
    }
    env.update({f"FEDGE_COORDINATOR_{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def replicas(root: Path, count: int, env: dict[str, str]) -> Iterator[Replicas]:
    """``count`` replicas started at once, each answering when the block begins; stopped
    (what is left of them) after it."""
    group = Replicas()
    with ExitStack() as stack:
        for i in range(count):
            name, port = f"replica-{i}", free_port()
            state = root / name
            own = {**env, "FEDGE_COORDINATOR_STATE_DIR": str(state)}
            cmd = [FEDGE, "coordinator", "serve", "--port", str(port), "--log-format", "json"]
            state.mkdir(parents=True, exist_ok=True)
            proc = stack.enter_context(service(cmd, root / f"{name}.log", own))
            group.members.append(Replica(name, port, root / f"{name}.log", proc.pid))
        for member in group.members:
            wait_for_port(member.port, timeout=120)
        yield group


def decision_slots(database_url: str) -> dict[str, list[int]]:
    """The recorded decision slots by kind, in order (duplicates kept, were there any)."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT kind, slot FROM decision_ticks ORDER BY kind, slot").fetchall()
    out: dict[str, list[int]] = {}
    for kind, slot in rows:
        out.setdefault(str(kind), []).append(int(slot))
    return out


def actions_per_kind(database_url: str) -> dict[str, int]:
    """Signed actions stored, by kind: one per site and slot when no slot was decided twice."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT kind, count(*) FROM actions GROUP BY kind").fetchall()
    return {str(kind): int(n) for kind, n in rows}


def newest_claim(database_url: str) -> float:
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(claimed_at) FROM decision_ticks").fetchone()
    return float(row[0]) if row is not None and row[0] is not None else 0.0


def lost_slots(slots: list[int]) -> int:
    """Slots missing between the first and the last recorded."""
    return 0 if not slots else (slots[-1] - slots[0] + 1) - len(set(slots))


def repeated_slots(slots: list[int]) -> int:
    return len(slots) - len(set(slots))
