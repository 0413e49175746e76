"""The self-contained agent bundle (``make agent-bundle``) runs on a host with nothing
else: copied into an empty directory and started with only ``PATH=/usr/bin:/bin`` and
``HOME``, it makes its site key, passes ``agent check`` on a real config, ingests KPIs
from a real Mosquitto, forecasts, and opens and judges a sealed model (ML-KEM/ML-DSA
through the bundled cryptography).

The build is cached under build/bundle/ on the sources' hash (deploy/bundle/build.py),
so only the first run after a change pays for PyInstaller."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.bare_host import BareHost, build_bundle, make_site, one_cycle
from tests.edge_agent.conftest import Mosquitto

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> BareHost:
    root = tmp_path_factory.mktemp("bare-host")
    shutil.copytree(build_bundle(), root / "fedge", symlinks=True)
    return BareHost(root, (str(root / "fedge" / "fedge"),))


def test_the_bundle_carries_no_training_stack(host: BareHost) -> None:
    internal = {
        p.name.split("-")[0].split(".")[0]
        for p in (Path(host.command[0]).parent / "_internal").iterdir()
    }
    assert {"onnxruntime", "numpy", "cryptography"} <= internal
    assert not internal & {"torch", "flwr", "ray", "pandas", "fastapi", "sqlalchemy"}
    helped = host.run("agent", "--help")
    assert helped.returncode == 0 and "check" in helped.stdout, helped.stderr
    version = host.run("--version")
    assert version.stdout.strip().startswith("fedge "), version.stderr


def test_check_passes_on_a_real_config_and_keys(
    host: BareHost, broker: Mosquitto, model: Path
) -> None:
    site = make_site(host, host.root / "check", broker.url, model)
    ok = host.run("agent", "check", "--config", str(site.config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    store and model" in ok.stdout and "initial-" in ok.stdout
    assert f"127.0.0.1:{broker.port} accepted MQTT 5" in ok.stdout
    assert "Traceback" not in ok.stderr
    broken = site.config.with_name("broken.toml")
    host.outside(broken).write_text(
        host.outside(site.config).read_text().replace(str(site.key_file), "missing.key")
    )
    bad = host.run("agent", "check", "--config", str(broken))
    assert bad.returncode == 2 and "security" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_bundle_ingests_forecasts_and_judges_a_sealed_model(
    host: BareHost, broker: Mosquitto, model: Path
) -> None:
    one_cycle(host, make_site(host, host.root / "run", broker.url, model), broker, model)
