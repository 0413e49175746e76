"""What a role's install really puts on a host: the wheel, an empty venv, the index.

The gNB host installs ``fedge[agent]``: it must stay small, hold no training or
simulation stack, add ``fedge`` as our one top-level package, and run ``fedge keys`` and
``fedge agent check|run`` against a real broker from that venv alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedge import __version__
from fedge.security import SiteIdentity
from tests.edge_agent import conftest as agent_parts
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Models,
    Mosquitto,
    now_step,
    seed_history,
    site_values,
    write_config,
)

# The agent test's real broker, test client and tiny ONNX models.
broker = agent_parts.broker
client = agent_parts.client
tiny_models = agent_parts.tiny_models

ROOT = Path(__file__).resolve().parent.parent
AGENT_LIMIT_BYTES = 250 * 10**6
HEAVY_DISTS = ("torch", "ray", "pandas", "fastapi", "stable-baselines3", "flwr")
GENERIC_NAMES = ("models", "security", "simulation", "federation", "coordinator", "edge_agent")
OURS = {"fedge", f"fedge-{__version__}.dist-info"}
# pip's own words when the package index cannot be reached (the test then cannot judge).
OFFLINE = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
)
# What would let an empty venv's Python see this checkout or its venv.
_LEAKY = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE")


def _clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without what points an interpreter at our venv."""
    return {**{k: v for k, v in os.environ.items() if k not in _LEAKY}, **extra}


# Build outputs, caches and the parts of the checkout that are not the package.
_NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", "*.fab", "tests", "bench", "docs",
)  # fmt: skip


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def fedge(self) -> Path:
        return self.root / "bin" / "fedge"

    @property
    def site_packages(self) -> Path:
        return (
            self.root
            / "lib"
            / f"python{sys.version_info[0]}.{sys.version_info[1]}"
            / "site-packages"
        )

    def entries(self) -> set[str]:
        return {p.name for p in self.site_packages.iterdir() if p.name != "__pycache__"}


def _venv(path: Path) -> Venv:
    subprocess.run(
        [sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, env=_clean_env()
    )
    return Venv(path)


def _pip_install(venv: Venv, *args: str) -> None:
    """``pip install`` quietly; skip (not fail) when the index is out of reach."""
    done = subprocess.run(
        [str(venv.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-input", *args],
        capture_output=True, text=True, timeout=900, check=False, env=_clean_env(),
    )  # fmt: skip
    if done.returncode == 0:
        return
    if any(marker in done.stderr for marker in OFFLINE):
        pytest.skip(f"the package index is unreachable: {done.stderr.strip()[-300:]}")
    raise AssertionError(f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's package sources, copied: building writes build/ and egg-info."""
    target = tmp_path_factory.mktemp("source") / "fedge"
    shutil.copytree(ROOT, target, symlinks=True, ignore=_NOT_SOURCE)
    return target


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("fedge-*.whl")
    return built


@pytest.fixture(scope="module")
def agent_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    venv = _venv(tmp_path_factory.mktemp("agent") / "venv")
    _pip_install(venv, f"{wheel}[agent]")
    return venv


def _top_levels(venv: Venv) -> dict[str, set[str]]:
    """Each installed distribution's top-level site-packages entries, from its RECORD."""
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for d in m.distributions():\n"
        "    names = {f.parts[0] for f in d.files or () if f.parts and f.parts[0] not in ('..', '__pycache__')}\n"
        "    out[d.metadata['Name']] = sorted(names)\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(  # outside the checkout: its egg-info is no installed dist
        [str(venv.python), "-c", code], capture_output=True, text=True, cwd=venv.root,
        check=True, env=_clean_env(),
    )  # fmt: skip
    return {name: set(tops) for name, tops in json.loads(done.stdout).items()}


def _tree_files(root: Path) -> set[str]:
    """Every file of the ``fedge`` package as the checkout holds it (links followed)."""
    out = set()
    for folder, dirs, files in os.walk(root / "fedge", followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out |= {(Path(folder) / f).relative_to(root).as_posix() for f in files}
    return out


def test_the_wheel_holds_every_file_of_the_package_and_nothing_at_top_level(
    wheel: Path, source: Path
) -> None:
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {n.split("/")[0] for n in names} == OURS
    packaged = {n for n in names if n.startswith("fedge/")}
    assert packaged == _tree_files(source), packaged ^ _tree_files(source)


def _fab_files(tmp: Path) -> Path:
    """The FAB ``flwr build``/``flwr run .`` makes of the checkout, unpacked into ``tmp``."""
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(ROOT))) as zf:
        zf.extractall(tmp)
    return tmp


def test_the_fab_carries_the_run_configuration_and_no_code(tmp_path: Path) -> None:
    fab = _fab_files(tmp_path)
    files = {p.relative_to(fab).as_posix() for p in fab.rglob("*") if p.is_file()}
    assert files == {"pyproject.toml", "README.md", ".info/CONTENT"}
    assert "fedge.federation.server_app:app" in (fab / "pyproject.toml").read_text()


@pytest.mark.slow
def test_an_installed_app_resolves_fedge_from_site_packages_not_the_fab(
    agent_venv: Venv, tmp_path: Path
) -> None:
    """Flower puts the unpacked FAB first on sys.path before importing the components."""
    fab = _fab_files(tmp_path / "app")
    code = (
        f"import sys, importlib.util; sys.path.insert(0, {str(fab)!r});"
        "print(importlib.util.find_spec('fedge.federation').origin)"
    )
    done = subprocess.run(
        [str(agent_venv.python), "-c", code],
        capture_output=True, text=True, cwd=tmp_path, check=False, env=_clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(agent_venv.site_packages)


@pytest.mark.slow
def test_the_agent_install_is_small_and_holds_no_training_or_simulation_stack(
    agent_venv: Venv,
) -> None:
    size = sum(p.lstat().st_size for p in agent_venv.site_packages.rglob("*") if not p.is_symlink())
    assert size <= AGENT_LIMIT_BYTES, f"{size / 1e6:.0f} MB of site-packages"
    dists = _top_levels(agent_venv)
    lowered = {name.lower().replace("_", "-") for name in dists}
    assert not lowered & set(HEAVY_DISTS), lowered & set(HEAVY_DISTS)
    assert {"paho-mqtt", "onnxruntime", "prometheus-client", "cryptography"} <= lowered
    assert dists["fedge"] == OURS
    others = set().union(*(tops for name, tops in dists.items() if name != "fedge"))
    assert not others & OURS
    entries = agent_venv.entries()
    assert not entries & set(GENERIC_NAMES)
    # nothing in site-packages that no distribution's RECORD accounts for
    assert entries <= others | OURS, entries - (others | OURS)


@pytest.mark.slow
def test_a_plain_install_adds_fedge_as_the_only_top_level_package(
    source: Path, tmp_path: Path
) -> None:
    venv = _venv(tmp_path / "venv")
    before = venv.entries()
    _pip_install(venv, "--no-deps", str(source))  # builds with setuptools from the index
    assert venv.entries() - before == OURS


@pytest.mark.slow
def test_keys_and_the_agent_run_from_the_agent_install_against_a_real_broker(
    agent_venv: Venv, tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    env = _clean_env(FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0")
    env.pop("FEDGE_KEK", None)

    def fedge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(agent_venv.fedge), *args], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=120, check=False,
        )  # fmt: skip

    kek, key = tmp_path / "kek", tmp_path / "site.key"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o600)
    made = fedge("keys", "init", "--key-file", str(key), "--kek-file", str(kek))
    assert made.returncode == 0, made.stderr
    shown = fedge("keys", "show", "--key-file", str(key), "--kek-file", str(kek))
    assert shown.returncode == 0 and shown.stdout == made.stdout
    (tmp_path / "coordinator.pub").write_bytes(SiteIdentity.generate().public_keys().to_bytes())
    cfg = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good)},
        security={
            "key_file": str(key),
            "kek_file": str(kek),
            "coordinator_keys": str(tmp_path / "coordinator.pub"),
        },
    )
    check = fedge("agent", "check", "--config", str(cfg))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok    site keys and coordinator keys" in check.stdout
    assert f"127.0.0.1:{broker.port} accepted MQTT 5" in check.stdout
    # a command of another role names the extra to install, in one line
    other = fedge("simulate", "--preset", "smoke")
    assert other.returncode == 2 and "pip install 'fedge[sim]'" in other.stderr
    assert "Traceback" not in other.stderr

    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["cell-a"], values[:-20], last)
    proc = subprocess.Popen(
        [str(agent_venv.fedge), "agent", "run", "--config", str(cfg)],
        stderr=subprocess.PIPE, env=env, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        while (status := client.get("status", timeout=60))["pid"] != proc.pid:
            pass
        assert status["state"] == "online"
        client.kpi("cell-a", (last + 1) * STEP, values[-20])
        forecast = client.get("forecast", timeout=60)
        assert forecast["step_ts"] == (last + 1) * STEP
        assert forecast["model_version"].startswith("initial-")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert client.get("status")["state"] == "offline"
