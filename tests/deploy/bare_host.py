"""A host with nothing but the agent bundle: how the deploy tests start it with a bare
environment, give it a real site (config, keys, store, model) and run one agent cycle,
on a bare directory or chrooted in an image's rootfs."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedge.core import ModelBundle
from fedge.security import ContentType, OneShotSealer, SiteIdentity, load_identity
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Mosquitto,
    now_step,
    seed_history,
    site_values,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "bundle" / "build.py"


def build_bundle() -> Path:
    """The cached PyInstaller one-dir (built if its sources changed); skips without it."""
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip("PyInstaller is not installed (the dev extra has it)")
    done = subprocess.run(
        [sys.executable, str(BUILD)], cwd=ROOT, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def bare_env(home: Path) -> dict[str, str]:
    """What a bare host gives the bundle: no venv, no PYTHONPATH, no fedge settings."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home)}


@dataclass(frozen=True)
class BareHost:
    """Where a bundle runs: ``command`` starts it; a path the bundle sees as ``/x`` is
    ``view / "x"`` from the test (the same path on a bare host, under the rootfs when
    chrooted)."""

    root: Path
    command: tuple[str, ...]
    view: Path = Path("/")

    def outside(self, inside: Path) -> Path:
        return self.view / inside.relative_to("/")

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args], cwd=self.root, env=bare_env(self.root),
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


@dataclass(frozen=True)
class SiteFiles:
    """A site's real config and keys: its key made by the bundle, the coordinator's.
    ``config`` and ``key_file`` are the paths the bundle sees."""

    config: Path
    kek: bytes
    key_file: Path
    coordinator: SiteIdentity
    last_step: int


def make_site(
    host: BareHost, inside: Path, broker_url: str, model: Path, owner: int | None = None
) -> SiteFiles:
    """In ``inside`` (as the bundle sees it): agent.toml, an encrypted site key (``fedge
    keys init`` of the bundle), the coordinator's public keys, a seeded store, the
    model; owned by ``owner`` when the bundle runs as another user."""
    root = host.outside(inside)
    root.mkdir(parents=True)
    if owner is not None:
        os.chown(root, owner, owner)
    kek = secrets.token_hex(16).encode()
    (root / "site.kek").write_bytes(kek)
    (root / "site.kek").chmod(0o600)
    coordinator = SiteIdentity.generate()
    (root / "coordinator.pub").write_bytes(coordinator.public_keys().to_bytes())
    shutil.copy(model, root / "initial.onnx")
    values, _ = site_values(days=4)
    last = now_step() - 40
    seed_history(root / "agent.db", ["a"], values[:-30], last)
    written = write_config(
        root,
        broker_url,
        store={"path": str(inside / "agent.db")},
        model={"dir": str(inside / "models"), "initial": str(inside / "initial.onnx")},
        metrics={"enabled": True, "port": 0},
        security={
            "key_file": str(inside / "site.key"),
            "kek_file": str(inside / "site.kek"),
            "coordinator_keys": str(inside / "coordinator.pub"),
        },
    )
    if owner is not None:
        for f in root.iterdir():
            os.chown(f, owner, owner)
    made = host.run("keys", "init", "--key-file", str(inside / "site.key"),
                    "--kek-file", str(inside / "site.kek"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    return SiteFiles(inside / written.name, kek, inside / "site.key", coordinator, last)


def one_cycle(host: BareHost, site: SiteFiles, broker: Mosquitto, model: Path) -> None:
    """``agent run`` of the bundle: online, one KPI in and its forecast out, a sealed
    model opened, judged and served; SIGTERM stops it cleanly."""
    client = Client(broker.port)
    proc = subprocess.Popen(
        [*host.command, "agent", "run", "--config", str(site.config)], cwd=host.root,
        env=bare_env(host.root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        while (status := client.get("status", timeout=60))["pid"] != proc.pid:
            pass  # a status retained from an earlier agent on this broker
        assert status["state"] == "online", status
        values, _ = site_values(days=4)
        client.kpi("a", (site.last_step + 1) * STEP, values[-30])
        forecast = client.get("forecast", timeout=60)
        assert forecast["cell"] == "a" and forecast["model_version"].startswith("initial-")
        identity = load_identity(host.outside(site.key_file), site.kek)
        bundle = ModelBundle("v2", model.read_bytes()).encode()
        sealed = OneShotSealer(site.coordinator).seal(
            identity.public_keys(), bundle, ContentType.GLOBAL_MODEL
        )
        client.publish("model", sealed)
        verdict = client.get("verdict", timeout=120)
        assert verdict["version"] == "v2" and verdict["accepted"] is True, verdict
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        client.close()
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
