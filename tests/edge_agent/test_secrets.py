"""Secrets stay with the process that needs them: the SuperNode (which runs code the
SuperLink ships) gets a minimal environment, and every secret file is the agent's alone."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from fedge.edge_agent import ConfigError, SupernodeSupervisor, parse_config
from fedge.edge_agent._supernode import child_environment


def secret(path: Path, mode: int = 0o600, text: str = "a secret value\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def config(tmp: Path, **tables: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "agent": {"site": "s1"},
        "store": {"path": "a.db"},
        "model": {"dir": "m"},
    }
    for name, table in tables.items():
        data.setdefault(name, {}).update(table)
    return data


def fake_supernode(tmp: Path) -> Path:
    """A real process in place of flower-supernode: its environment is what it was given."""
    exe = tmp / "bin" / "flower-supernode"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nsleep 300\n")  # no exec: /proc shows this very process
    exe.chmod(0o755)
    return exe


def environ_of(pid: int, exe: Path) -> dict[str, str]:
    """The environment ``exe`` runs with, read once ``pid`` has exec'd it (during the exec
    the kernel shows an empty environment)."""
    proc = Path(f"/proc/{pid}")
    for _ in range(200):
        if str(exe).encode() in (proc / "cmdline").read_bytes():
            break
        time.sleep(0.05)
    raw = (proc / "environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_the_supernode_child_gets_no_secret_from_the_agents_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDGE_KEK", "the agent's key-encryption key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud credentials")
    monkeypatch.setenv("MQTT_PASSWORD", "hunter2")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    exe = fake_supernode(tmp_path)
    cfg = parse_config(
        config(
            tmp_path,
            security={
                "key_file": "site.key",
                "coordinator_keys": "c.pub",
                "kek_file": str(secret(tmp_path / "kek")),
            },
            federation={"superlink": "127.0.0.1:9092", "supernode": str(exe)},
        ),
        tmp_path,
    )
    assert cfg.federation is not None
    sup = SupernodeSupervisor(cfg.federation, tmp_path / "a.db", tmp_path / "supernode.log")
    sup.start()
    try:
        assert sup.started.wait(30)
        pid = sup.pid
        assert pid is not None
        env = environ_of(pid, exe)
    finally:
        sup.stop()
    for name in ("FEDGE_KEK", "AWS_SECRET_ACCESS_KEY", "MQTT_PASSWORD"):
        assert name not in env, name
    assert "the agent's key-encryption key" not in "".join(env.values())
    # fedge's SuperExec launcher first (the ClientApp slots), then the SuperNode's own bin/
    assert env["PATH"].split(os.pathsep)[:2] == [
        str(cfg.federation.state_dir / "bin"),
        str(exe.parent),
    ]
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["LC_TIME"] == "C" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == os.environ["HOME"]
    # the KEK reaches the ClientApp as a file named in the node config, not as a value
    node_config = sup.command[sup.command.index("--node-config") + 1]
    assert f'kek-file="{(tmp_path / "kek").resolve()}"' in node_config


def test_child_environment_keeps_only_what_is_listed() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/agent",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "FLWR_HOME": "/var/lib/flwr",
        "FEDGE_KEK": "k",
        "SECRET_TOKEN": "t",
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONSTARTUP": "/tmp/run-me.py",
    }
    env = child_environment(parent, Path("/opt/fedge/bin"))
    assert env == {
        "PATH": "/opt/fedge/bin:/usr/bin",
        "HOME": "/home/agent",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "FLWR_HOME": "/var/lib/flwr",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    assert child_environment({}, Path("/b"))["PATH"] == "/b"


def test_federation_needs_a_kek_file(tmp_path: Path) -> None:
    data = config(
        tmp_path,
        security={"key_file": "site.key", "coordinator_keys": "c.pub"},
        federation={"superlink": "127.0.0.1:9092"},
    )
    with pytest.raises(ConfigError, match=r"federation: needs security\.kek_file"):
        parse_config(data, tmp_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
@pytest.mark.parametrize("which", ["kek", "password"])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int, which: str) -> None:
    path = secret(tmp_path / which, mode)
    if which == "kek":
        data = config(
            tmp_path,
            security={"key_file": "site.key", "coordinator_keys": "c.pub", "kek_file": str(path)},
        )
        key = "security.kek_file"
    else:
        data = config(tmp_path, broker={"username": "agent", "password_file": str(path)})
        key = "broker.password_file"
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    assert str(info.value) == (f"{key}: {path} is readable by others (mode {mode:o}); chmod 600")
    path.chmod(0o600)
    parse_config(data, tmp_path)  # the same file, private, is fine
    path.chmod(0o400)
    parse_config(data, tmp_path)


def test_secret_files_that_are_missing_or_not_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    for target, message in (("missing", "no such file"), ("dir", "not a regular file")):
        kek = config(
            tmp_path,
            security={"key_file": "k", "coordinator_keys": "c", "kek_file": target},
        )
        with pytest.raises(ConfigError, match=f"security.kek_file: .*{message}"):
            parse_config(kek, tmp_path)
        password = config(tmp_path, broker={"username": "u", "password_file": target})
        with pytest.raises(ConfigError, match=f"broker.password_file: .*{message}"):
            parse_config(password, tmp_path)


def test_a_symlink_to_a_readable_secret_is_judged_by_its_target(tmp_path: Path) -> None:
    target = secret(tmp_path / "real-kek", 0o644)
    link = tmp_path / "kek"
    link.symlink_to(target)
    data = config(
        tmp_path, security={"key_file": "k", "coordinator_keys": "c", "kek_file": str(link)}
    )
    with pytest.raises(ConfigError, match="readable by others"):
        parse_config(data, tmp_path)
