"""The agent's OCI image (``make images``: FROM scratch, COPY only, built by buildah
without a daemon) holds everything the agent needs: its rootfs, mounted from a container
of the image, runs ``agent check`` on a real config and a full agent cycle against a
real Mosquitto under ``chroot`` as the image's unprivileged user, with no host file
reachable."""

from __future__ import annotations

import json
import os
import runpy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.bare_host import BareHost, make_site, one_cycle
from tests.edge_agent.conftest import Mosquitto

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UID = 10001


@pytest.fixture(scope="module")
def oci() -> dict[str, Any]:
    """deploy/oci/build.py's functions (a script, not a package)."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (deploy/system-deps.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("mounting an image's rootfs and chroot need root")
    return runpy.run_path(str(ROOT / "deploy" / "oci" / "build.py"))


@pytest.fixture(scope="module")
def rootfs(oci: dict[str, Any]) -> Iterator[Path]:
    """The agent image built, a container of it, its root filesystem mounted."""
    tag = oci["build_agent_image"]()
    container = oci["buildah"]("from", "--pull-never", tag).strip().splitlines()[-1]
    try:
        yield Path(oci["buildah"]("mount", container).strip())
    finally:
        oci["buildah"]("rm", container)


def chrooted(rootfs: Path) -> BareHost:
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    return BareHost(
        rootfs, (chroot, f"--userspec={UID}:{UID}", str(rootfs), "/opt/fedge/fedge"), rootfs
    )


def test_the_image_is_from_scratch_and_runs_as_fedge(oci: dict[str, Any], rootfs: Path) -> None:
    config = json.loads(oci["buildah"]("inspect", "--type", "image", oci["AGENT_IMAGE"]))
    image = config["OCIv1"]["config"]
    assert image["User"] == f"{UID}:{UID}"
    assert image["Entrypoint"] == ["/opt/fedge/fedge"]
    assert len(config["OCIv1"]["rootfs"]["diff_ids"]) == 2  # system files, the bundle
    assert not (rootfs / "bin").exists() and not (rootfs / "usr").exists()  # no shell, no OS
    assert oci["image_size"](oci["AGENT_IMAGE"]) < 300e6


def test_agent_check_passes_in_the_images_rootfs(
    rootfs: Path, broker: Mosquitto, model: Path
) -> None:
    host = chrooted(rootfs)
    site = make_site(host, Path("/var/lib/fedge/check"), broker.url, model, owner=UID)
    ok = host.run("agent", "check", "--config", str(site.config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    store and model" in ok.stdout
    assert f"127.0.0.1:{broker.port} accepted MQTT 5" in ok.stdout


def test_the_agent_runs_a_cycle_in_the_images_rootfs(
    rootfs: Path, broker: Mosquitto, model: Path
) -> None:
    host = chrooted(rootfs)
    site = make_site(host, Path("/var/lib/fedge/run"), broker.url, model, owner=UID)
    one_cycle(host, site, broker, model)
