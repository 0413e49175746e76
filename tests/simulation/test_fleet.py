"""``fedge fleet``: bad flags and directories refused with typed errors before anything
starts; and the whole live system for real (Mosquitto, coordinator, SuperLink, three
enrolled agents with their SuperNodes, the replayer): up, a killed agent restarted by a
second ``up``, the loop closed by ``run``, and ``down`` leaving no process behind."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedge.simulation._fleet import (
    STATE_FILE,
    FleetError,
    FleetSpec,
    ProcessRecord,
    _new_state,
    alive,
    check_running,
    down,
    fleet_processes,
    load_state,
    status,
    up,
)
from fedge.simulation._replayer import CELL, kpi_message, wall_to_index
from tests.coordinator.policies import write_policies

FEDGE = str(Path(sys.executable).with_name("fedge"))


def _fedge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [FEDGE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.mark.parametrize("sites", [0, -1, 501])
def test_site_counts_out_of_range_are_refused(sites: int) -> None:
    with pytest.raises(FleetError, match="--sites"):
        FleetSpec(sites)


@pytest.mark.parametrize("speed", [0.0, -2.0, math.nan, math.inf, 1e9])
def test_bad_speeds_are_refused(speed: float) -> None:
    with pytest.raises(FleetError, match="--speed"):
        FleetSpec(3, speed=speed)


def test_unreadable_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="--data: cannot read"):
        FleetSpec(3, data=tmp_path / "missing.csv")
    FleetSpec(3, data=tmp_path)  # a folder of PM files: read (and checked) by the replayer
    locked = tmp_path / "locked.csv"
    locked.write_text("site_id,timestamp\n")
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: the other two cases stand
        return
    with pytest.raises(FleetError, match="--data: cannot read"):
        FleetSpec(3, data=locked)


def test_a_data_file_that_is_not_kpis_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "kpis.csv"
    bad.write_text("site_id,timestamp,dl_prb_util\ns1,yesterday,40\n")
    root = tmp_path / "fleet"
    with pytest.raises(FleetError, match=r"--data: .*missing required column"):
        up(root, FleetSpec(2, data=bad))
    assert not root.exists()


def test_policies_without_a_manifest_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="--policies"):
        FleetSpec(3, policies=tmp_path)


def test_a_directory_that_is_not_a_fleet_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("mine\n")
    with pytest.raises(FleetError, match="not empty and holds no fleet"):
        up(tmp_path, FleetSpec(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert keep.read_text() == "mine\n"
    for call in (load_state, status, down):
        with pytest.raises(FleetError, match="not a fleet directory"):
            call(tmp_path)
    with pytest.raises(FleetError, match="not a directory"):
        load_state(keep)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(FleetError, match="not a fleet state file"):
        load_state(tmp_path)
    assert keep.read_text() == "mine\n"


def test_sites_must_be_a_whole_number() -> None:
    with pytest.raises(FleetError, match="--sites: a whole number"):
        FleetSpec(True)
    with pytest.raises(FleetError, match="--sites: a whole number"):
        FleetSpec(2.5)  # type: ignore[arg-type]


def _fleet_dir(root: Path, sites: int = 2) -> Path:
    """A fleet directory as ``up`` leaves it before starting anything."""
    state = _new_state(root, FleetSpec(sites))
    root.mkdir(parents=True)
    state.save()
    return root


def test_resuming_with_other_sites_or_database_is_refused(tmp_path: Path) -> None:
    root = _fleet_dir(tmp_path / "fleet")
    before = (root / STATE_FILE).read_text()
    with pytest.raises(FleetError, match="holds a fleet of 2 sites"):
        up(root, FleetSpec(3))
    with pytest.raises(FleetError, match="holds a fleet of 2 sites"):
        up(root, FleetSpec(2, postgres=True))
    assert (root / STATE_FILE).read_text() == before


def test_a_state_file_of_another_place_or_version_is_refused(tmp_path: Path) -> None:
    root = _fleet_dir(tmp_path / "fleet")
    moved = tmp_path / "moved"
    root.rename(moved)
    with pytest.raises(FleetError, match="belongs to the fleet at"):
        load_state(moved)
    data = json.loads((moved / STATE_FILE).read_text())
    data.update(dir=str(moved), version=99)
    (moved / STATE_FILE).write_text(json.dumps(data))
    with pytest.raises(FleetError, match="state version 99"):
        load_state(moved)


def test_a_part_that_is_not_running_is_named(tmp_path: Path) -> None:
    state = load_state(_fleet_dir(tmp_path / "fleet"))
    gone = ProcessRecord("coordinator", 2**22 + 1, ["fedge"], str(tmp_path / "log"), None, 0, 1)
    state.processes["coordinator"] = gone
    with pytest.raises(FleetError, match="not running: coordinator"):
        check_running(state)


def test_the_replayed_kpis_pass_the_agents_own_schema() -> None:
    from fedge.edge_agent import parse_kpi
    from fedge.simulation import GeneratorConfig, SiteGenerator

    values = SiteGenerator(GeneratorConfig(num_sites=1, days=1)).site(0).values
    now = time.time()
    for row in values[:: len(values) // 20]:
        sample = parse_kpi(kpi_message(row, now), max_bytes=4096, step_seconds=300, now=now,
                           max_future_s=60)  # fmt: skip
        assert sample.cell == CELL


def test_wall_time_maps_onto_the_replayed_steps_of_each_pacing_segment() -> None:
    position = {
        "backfill_end": 100,
        "segments": [{"wall": 1000.0, "index": 100, "speed": 60.0},
                     {"wall": 2000.0, "index": 500, "speed": 300.0}],
    }  # fmt: skip
    assert wall_to_index(position, 500.0) == 100  # before pacing: the back-fill's end
    assert wall_to_index(position, 1010.0) == pytest.approx(102.0)  # 10 s at 60x: 2 steps
    assert wall_to_index(position, 2001.0) == pytest.approx(501.0)  # 1 s at 300x: 1 step


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    bad = _fedge("fleet", "up", "--sites", "0", "--dir", str(tmp_path / "f"), timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: --sites: between 1 and 500, got 0"]
    assert not (tmp_path / "f").exists()
    word = _fedge("fleet", "up", "--speed", "fast", "--dir", str(tmp_path / "f"), timeout=120)
    assert word.returncode == 2 and "--speed" in word.stderr
    missing = _fedge("fleet", "status", "--dir", str(tmp_path), timeout=120)
    assert missing.returncode == 2 and "not a fleet directory" in missing.stderr
    minutes = _fedge("fleet", "run", "--minutes", "0", "--dir", str(tmp_path), timeout=120)
    assert minutes.returncode == 2 and "--minutes" in minutes.stderr


@pytest.mark.slow
def test_three_sites_close_the_loop_and_leave_nothing_behind(tmp_path: Path) -> None:
    """up (3 sites), SIGKILL of an agent (its SuperNode orphaned) and a resuming up, run
    until the loop closed at every site, down: no process of the fleet is left."""
    root = tmp_path / "fleet"
    policies = tmp_path / "policies"
    write_policies(policies)
    try:
        started = _fedge("fleet", "up", "--sites", "3", "--dir", str(root),
                         "--policies", str(policies), "--speed", "60")  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        state = load_state(root)
        assert {"mosquitto", "coordinator", "superlink", "replayer"} <= set(state.processes)
        assert all(s.site_id for s in state.sites)
        assert len({s.site_id for s in state.sites}) == 3
        keys = {s.index: (Path(s.dir) / "site.key").read_bytes() for s in state.sites}

        victim = state.processes["agent-0"]
        os.killpg(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(victim) and time.monotonic() < deadline:
            time.sleep(0.1)
        resumed = _fedge("fleet", "up", "--sites", "3", "--dir", str(root))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming" in resumed.stderr and "enrolling" not in resumed.stderr
        again = load_state(root)
        assert again.processes["agent-0"].pid != victim.pid
        assert again.processes["coordinator"].pid == state.processes["coordinator"].pid
        assert {s.index: (Path(s.dir) / "site.key").read_bytes() for s in again.sites} == keys

        ran = _fedge("fleet", "run", "--minutes", "8", "--until-closed", "--dir", str(root))
        assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
        report = json.loads((root / "report.json").read_text())
        assert (root / "report.html").read_text().startswith("<!doctype html>")
        loop = report["loop"]
        assert loop["rounds_completed"] >= 1
        assert loop["model_served_by_every_site"]
        promoted = {f"v{i}" for i in loop["models_promoted"]}
        for site in report["sites"]:
            assert site["kpis_in"] > 0  # a KPI in
            assert site["forecasts_ingested"] > 0  # a forecast ingested
            assert site["serving"] in promoted  # the promoted model served
            assert site["actions"]["applied"] > 0  # an action acknowledged
        assert report["energy"]["always_on_wh"] > 0
        shown = json.loads(_fedge("fleet", "status", "--json", "--dir", str(root)).stdout)
        assert [s["serving"] for s in shown["sites"]] == [s["serving"] for s in report["sites"]]
        assert all(s["last_forecast"] for s in shown["sites"])
    finally:
        stopped = (
            _fedge("fleet", "down", "--dir", str(root)) if (root / STATE_FILE).exists() else None
        )
    assert stopped is not None and stopped.returncode == 0, stopped and stopped.stderr
    assert fleet_processes(load_state(root)) == []
    leftovers = subprocess.run(
        ["ps", "-eo", "pid,stat,args"], capture_output=True, text=True, check=True
    )
    assert [
        line for line in leftovers.stdout.splitlines()
        if str(root) in line and " Z" not in line
    ] == []  # fmt: skip


def test_the_round_timeout_grows_with_the_sites_each_core_must_start() -> None:
    from fedge.simulation._fleet import CLIENTAPP_BATCH_S, round_timeout, run_request

    assert round_timeout(3, cores=2) == 300.0  # a few sites: the plain timeout
    assert round_timeout(20, cores=2) == 10 * CLIENTAPP_BATCH_S
    assert round_timeout(20, cores=16) == 300.0
    assert run_request(20, 1)["config"]["round-timeout"] == round_timeout(20)
