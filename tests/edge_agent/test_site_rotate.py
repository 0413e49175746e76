"""``fedge site rotate`` against a real coordinator process: the coordinator takes the
next key generation, then the key file is replaced (keeping the previous generation);
a rotation the coordinator did not accept leaves the key file as it was."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedge.core import ApiError, SiteClient
from fedge.security import load_identity
from tests.edge_agent import test_site_cli as cli
from tests.edge_agent.test_site_cli import Coordinator, Site, _enroll, _site
from tests.support.ports import free_port

# The real coordinator process and the console-script runner of ``fedge site enroll``.
coordinator = cli.coordinator
fedge = cli.fedge
_clean_env = cli._clean_env


def _generation(coordinator: Coordinator, site: Site) -> int:
    generation: int = coordinator.admin().get_json(f"/api/v1/sites/{site.site_id}")["generation"]
    return generation


def _authenticated(coordinator: Coordinator, site: Site) -> bool:
    """Whether the coordinator takes a request signed with the key file's current key."""
    identity = load_identity(site.config.parent / "site.key", b"site-kek")
    try:
        SiteClient(coordinator.url, identity).get_json("/api/v1/site/model")
    except ApiError as exc:
        return exc.status == 404  # authenticated; no model in production
    return True


def test_rotate_replaces_the_key_file_once_the_coordinator_took_the_new_keys(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    assert _enroll(fedge, coordinator, site, coordinator.token()).code == 0
    key_file = site.config.parent / "site.key"
    before = load_identity(key_file, b"site-kek")
    ran = fedge("site", "rotate", "--config", str(site.config), "--coordinator", coordinator.url)
    assert ran.code == 0, ran.err
    assert "key generation:     1" in ran.out
    after = load_identity(key_file, b"site-kek")
    assert after.site_id == before.site_id and after.generation == 1
    assert after.previous is not None and after.previous.generation == 0
    # the previous generation's KEM key is kept: envelopes sealed to it still open
    assert after.kem_key_for(0) is not None
    assert after.previous.signing_key.private_bytes() == before.signing_key.private_bytes()
    assert _generation(coordinator, site) == 1
    assert _authenticated(coordinator, site)
    # Again, the coordinator's URL from agent.toml's [coordinator] this time.
    with site.config.open("a") as config:
        config.write(f'\n[coordinator]\nurl = "{coordinator.url}"\n')
    again = fedge("site", "rotate", "--config", str(site.config))
    assert again.code == 0, again.err
    assert load_identity(key_file, b"site-kek").generation == 2
    assert _generation(coordinator, site) == 2
    assert _authenticated(coordinator, site)
    listed = coordinator.admin().get_json("/api/v1/sites")
    assert {s["id"]: s["generation"] for s in listed}[site.site_id] == 2


@pytest.mark.parametrize("where", ["unreachable", "not enrolled"])
def test_a_rotation_not_accepted_leaves_the_key_file_unchanged(
    coordinator: Coordinator, fedge: Any, tmp_path: Path, where: str
) -> None:
    site = _site(tmp_path)
    url = f"http://127.0.0.1:{free_port()}" if where == "unreachable" else coordinator.url
    key_file = site.config.parent / "site.key"
    before = key_file.read_bytes()
    ran = fedge("site", "rotate", "--config", str(site.config), "--coordinator", url)
    assert ran.code == 2
    assert "did not accept the rotation" in ran.err and "is unchanged" in ran.err
    assert ("unreachable" if where == "unreachable" else "401") in ran.err
    assert key_file.read_bytes() == before
    assert [p.name for p in key_file.parent.iterdir() if p.name.startswith(".")] == []


def test_rotate_without_a_coordinator_url_is_a_typed_error(fedge: Any, tmp_path: Path) -> None:
    site = _site(tmp_path)
    before = (site.config.parent / "site.key").read_bytes()
    ran = fedge("site", "rotate", "--config", str(site.config))
    assert ran.code == 2 and "--coordinator" in ran.err
    assert (site.config.parent / "site.key").read_bytes() == before


def test_the_operator_sees_generations_and_the_retraining_policy(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    from fedge.coordinator import DEV_ADMIN_KEY

    (tmp_path / "admin.key").write_text(DEV_ADMIN_KEY)
    key = ["--coordinator", coordinator.url, "--api-key-file", str(tmp_path / "admin.key")]
    listed = fedge("site", "list", *key)
    assert listed.code == 0 and "generation" in listed.out, listed.err
    policy = fedge("run", "retraining", "--json", *key)
    assert policy.code == 0, policy.err
    state = json.loads(policy.out)
    assert state["enabled"] is False and state["promote_metric"] == "eval_rmse"
    assert fedge("run", "retraining", *key).code == 0


@contextlib.contextmanager
def _unwritable(directory: Path) -> Iterator[None]:
    """``directory`` where nobody may create a file: mode 0500, or for root (whom modes do
    not stop) the immutable attribute, which binds root too."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if (
        chattr is None
        or subprocess.run([chattr, "+i", str(directory)], check=False).returncode != 0
    ):
        pytest.skip("running as root without chattr +i: no directory is unwritable to root")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_key_file_it_cannot_replace_is_refused_before_anything_is_sent(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path / "site")
    assert _enroll(fedge, coordinator, site, coordinator.token()).code == 0
    with _unwritable(site.config.parent):
        ran = fedge("site", "rotate", "--config", str(site.config), "--coordinator",
                    coordinator.url)  # fmt: skip
    assert ran.code == 2 and "nothing was sent" in ran.err
    assert _generation(coordinator, site) == 0
