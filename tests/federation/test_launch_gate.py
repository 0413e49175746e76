"""fedge's SuperExec gate: host-wide ClientApp slots, and the launcher the agent writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedge.edge_agent._config import FederationConfig, parse_config
from fedge.edge_agent._errors import ConfigError
from fedge.edge_agent._supernode import LAUNCH_GATE, interpreter_of, write_superexec
from fedge.federation._launch_gate import (
    MAX_SLOTS,
    WARM_IDLE_S,
    HostSlots,
    Running,
    SlotError,
    WarmChild,
    WarmStarts,
    Zygote,
)

PROBE = "tests.support.warm_probe:main"

HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from fedge.federation._launch_gate import HostSlots
slot = HostSlots({count}, __import__("pathlib").Path({directory!r})).try_acquire()
print("held" if slot else "none", flush=True)
time.sleep(30)
"""


def _holder(directory: Path, count: int) -> subprocess.Popen[str]:
    code = HOLD.format(root=str(Path.cwd()), count=count, directory=str(directory))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_slots_are_shared_between_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    slots = HostSlots(2, tmp_path / "slots")
    first = _holder(tmp_path / "slots", 2)
    try:
        mine = slots.try_acquire()
        assert mine is not None and mine.index == 1
        assert slots.try_acquire() is None  # both held: by the other process and by us
        first.kill()
        first.wait()
        again = slots.try_acquire()
        assert again is not None and again.index == 0  # the kernel dropped its lock
        mine.release()
        again.release()
        assert slots.try_acquire() is not None
    finally:
        first.kill()
        first.wait()


def test_running_releases_the_slot_of_an_exited_clientapp(tmp_path: Path) -> None:
    slots = HostSlots(1, tmp_path)
    slot = slots.try_acquire()
    assert slot is not None
    running = Running()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    running.children.append((proc, slot))
    proc.wait()
    assert slots.try_acquire() is None  # exited, not yet reaped: still held
    running.reap()
    assert running.children == [] and slots.try_acquire() is not None


@pytest.mark.parametrize("count", [0, -1, MAX_SLOTS + 1])
def test_a_slot_count_out_of_range_is_refused(tmp_path: Path, count: int) -> None:
    with pytest.raises(SlotError, match="between 1 and"):
        HostSlots(count, tmp_path)


def test_a_slot_directory_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SlotError, match="slot directory"):
        HostSlots(2, blocker / "slots")


def test_the_launcher_runs_the_gate_without_the_federation_package(tmp_path: Path) -> None:
    """The SuperNode starts it by Flower's name; bad slot settings end it with one line,
    and it never imports the federation package (torch) to get there."""
    cfg = FederationConfig(
        superlink="127.0.0.1:9092",
        state_dir=tmp_path / "state",
        clientapp_slots=3,
        clientapp_slot_dir=tmp_path / "file" / "slots",
    )
    (tmp_path / "file").write_text("")  # the slot directory cannot be made under a file
    bindir = write_superexec(cfg, sys.executable)
    launcher = bindir / "flower-superexec"
    assert launcher.stat().st_mode & 0o777 == 0o700 and LAUNCH_GATE.is_file()
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['flower-superexec', '--slots', '3', '--slot-dir', {str(cfg.clientapp_slot_dir)!r},"
        " '--insecure', '--runtime-api-address', '127.0.0.1:1']\n"
        f"try:\n    runpy.run_path({str(LAUNCH_GATE)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'torch' in sys.modules, 'fedge.federation' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert out.stdout.split() == ["exit", "2", "False", "False"], out.stderr
    assert "slot directory" in out.stderr
    ran = subprocess.run(
        [str(launcher), "--insecure", "--runtime-api-address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 2 and "fedge superexec: ClientApp slot directory" in ran.stderr


def test_the_launcher_uses_the_supernodes_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "flower-supernode"
    script.write_text(f"#!{sys.executable}\nprint()\n")
    assert interpreter_of(script) == sys.executable
    script.write_text("#!/usr/bin/env python3\n")  # not one absolute interpreter: ours
    assert interpreter_of(script) == sys.executable
    assert interpreter_of(tmp_path / "missing") == sys.executable


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "clientapp_slots: must be > 0"),
        (1000, "clientapp_slots: at most"),
        ("two", "clientapp_slots"),
    ],
)
def test_bad_slot_settings_in_agent_toml_are_refused(
    tmp_path: Path, value: object, message: str
) -> None:
    data = {
        "agent": {"site": "s1"},
        "store": {"path": str(tmp_path / "agent.db")},
        "federation": {"superlink": "127.0.0.1:9092", "clientapp_slots": value},
    }
    with pytest.raises(ConfigError, match=message):
        parse_config(data, tmp_path)


def test_slot_settings_reach_the_launcher(tmp_path: Path) -> None:
    data = {"superlink": "127.0.0.1:9092", "clientapp_slots": 3, "clientapp_slot_dir": "slots"}
    with pytest.raises(ConfigError, match="needs a \\[security\\] section"):
        parse_config(
            {"agent": {"site": "s1"}, "store": {"path": "a.db"}, "federation": data}, tmp_path
        )
    cfg = FederationConfig(
        superlink="127.0.0.1:9092", state_dir=tmp_path / "state", clientapp_slots=3,
        clientapp_slot_dir=tmp_path / "slots",
    )  # fmt: skip
    text = (write_superexec(cfg, "/usr/bin/python3") / "flower-superexec").read_text()
    assert text.startswith("#!/usr/bin/python3\n")
    assert f"['--slots', '3', '--slot-dir', '{tmp_path / 'slots'}', '--warm-modules'" in text
    assert FederationConfig(superlink="h:1").clientapp_slots >= 1


def _exit_of(child: WarmChild, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (code := child.poll()) is None:
        assert time.monotonic() < deadline, "the warm child never exited"
        time.sleep(0.05)
    return code


@pytest.fixture
def probe_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "probe.log"
    monkeypatch.setenv("WARM_PROBE_LOG", str(log))
    return log


def test_warm_children_run_the_entry_with_their_arguments_on_imports_made_once(
    probe_log: Path,
) -> None:
    zygote = Zygote(["json"], entry=PROBE)
    try:
        first = zygote.spawn(["probe", "3", "0", "--token", "a"], quiet=False)
        second = zygote.spawn(["probe", "0", "0", "--token", "b"], quiet=False)
        assert first is not None and second is not None and first.pid != second.pid
        assert _exit_of(first) == 3 and _exit_of(second) == 0
        assert first.poll() == 3  # asked again, the same answer
    finally:
        zygote.close()
    lines = probe_log.read_text().splitlines()
    assert lines[0] == f"imported {zygote.pid}"  # by the zygote, before any child
    assert sorted(lines[1:]) == sorted(
        [
            f"ran {first.pid} {zygote.pid} probe 3 0 --token a",
            f"ran {second.pid} {zygote.pid} probe 0 0 --token b",
        ]
    )


def test_a_module_that_does_not_import_is_named_and_children_still_start(
    probe_log: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    zygote = Zygote(["fedge.no_such_module"], entry=PROBE)
    try:
        child = zygote.spawn(["probe", "0"], quiet=False)
        assert child is not None and _exit_of(child) == 0
    finally:
        zygote.close()
    err = capfd.readouterr().err
    assert "warm start: fedge.no_such_module does not import" in err


def test_a_quiet_child_writes_nothing(probe_log: Path, capfd: pytest.CaptureFixture[str]) -> None:
    zygote = Zygote([], entry=PROBE)
    try:
        loud, quiet = zygote.spawn(["probe", "0"], False), zygote.spawn(["probe", "0"], True)
        assert loud is not None and quiet is not None
        assert _exit_of(loud) == 0 and _exit_of(quiet) == 0
    finally:
        zygote.close()
    assert capfd.readouterr().out.count("probe says hello") == 1


def test_after_the_zygote_dies_clientapps_start_cold_and_running_ones_are_still_seen(
    probe_log: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    zygote = Zygote([], entry=PROBE)
    try:
        running = zygote.spawn(["probe", "0", "1.5"], quiet=False)
        assert running is not None
        os.kill(zygote.pid, signal.SIGKILL)
        zygote._proc.wait()
        assert zygote.spawn(["probe", "0"], quiet=False) is None
        assert "the ClientApp zygote is gone" in capfd.readouterr().err
        assert running.poll() is None  # still training, its zygote gone
        assert _exit_of(running) == -1  # then gone too, its exit code lost with the zygote
    finally:
        zygote.close()


def test_the_zygote_ends_when_its_gate_does(probe_log: Path) -> None:
    zygote = Zygote([], entry=PROBE)
    zygote._sock.close()  # as when the gate exits, however it exits
    deadline = time.monotonic() + 30
    while zygote._proc.poll() is None:
        assert time.monotonic() < deadline, "the zygote outlived its gate"
        time.sleep(0.05)


def test_the_launcher_asks_for_warm_starts_unless_they_are_turned_off(tmp_path: Path) -> None:
    cfg = FederationConfig(superlink="127.0.0.1:9092", state_dir=tmp_path / "state")
    assert (
        "'--warm-modules', 'fedge.federation.client_app'"
        in (write_superexec(cfg, sys.executable) / "flower-superexec").read_text()
    )
    cold = FederationConfig(
        superlink="127.0.0.1:9092", state_dir=tmp_path / "cold", clientapp_warm_start=False
    )
    assert (
        "--warm-modules"
        not in (write_superexec(cold, sys.executable) / "flower-superexec").read_text()
    )


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_a_warm_start_setting_that_is_not_a_boolean_is_refused(
    tmp_path: Path, value: object
) -> None:
    data = {
        "agent": {"site": "s1"},
        "store": {"path": str(tmp_path / "agent.db")},
        "federation": {"superlink": "127.0.0.1:9092", "clientapp_warm_start": value},
    }
    with pytest.raises(ConfigError, match="clientapp_warm_start"):
        parse_config(data, tmp_path)


def test_the_gates_zygote_starts_at_the_first_launch_and_closes_once_idle(
    probe_log: Path, tmp_path: Path
) -> None:
    warm = WarmStarts(["json"], entry=PROBE)
    slots = HostSlots(2, tmp_path / "slots")
    running = Running()
    try:
        assert warm.zygote is None  # nothing held before the federation asks
        child = warm.spawn(["probe", "0", "0.5"], quiet=True)
        assert child is not None and warm.zygote is not None
        first = warm.zygote
        slot = slots.try_acquire()
        assert slot is not None
        running.children.append((child, slot))
        warm.expire(running, first.last_used + WARM_IDLE_S + 1)
        assert warm.zygote is first  # idle long enough, but one of its ClientApps runs
        assert _exit_of(child) == 0
        running.reap()
        warm.expire(running, first.last_used + 1)
        assert warm.zygote is first  # not idle long enough
        warm.expire(running, first.last_used + WARM_IDLE_S + 1)
        assert warm.zygote is None and not first.alive
        again = warm.spawn(["probe", "0"], quiet=True)  # the next launch: another zygote
        assert again is not None and warm.zygote is not None and warm.zygote.pid != first.pid
        assert _exit_of(again) == 0
    finally:
        warm.close()


def test_a_zygote_that_dies_unasked_is_not_started_again(
    probe_log: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    warm = WarmStarts([], entry=PROBE)
    assert warm.spawn(["probe", "0"], quiet=True) is None  # no modules: every start cold
    warm = WarmStarts(["json"], entry=PROBE)
    try:
        child = warm.spawn(["probe", "0"], quiet=True)
        assert child is not None and warm.zygote is not None and _exit_of(child) == 0
        os.kill(warm.zygote.pid, signal.SIGKILL)
        warm.zygote._proc.wait()
        assert warm.spawn(["probe", "0"], quiet=True) is None and warm.failed
        assert warm.spawn(["probe", "0"], quiet=True) is None  # and stays cold
        assert capfd.readouterr().err.count("the ClientApp zygote is gone") == 1
    finally:
        warm.close()
