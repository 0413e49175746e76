"""``fedge site enroll`` on a gNB host against a real coordinator process on a free port:
keys from agent.toml's [security], the coordinator's key checked, agent.toml updated."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedge._cli import main
from fedge.core import CoordinatorClient
from fedge.edge_agent._site_cli import EnrollmentError, set_agent_site
from tests.support.ports import free_port, service, wait_for_port

FEDGE = str(Path(sys.executable).with_name("fedge"))


@dataclass
class Coordinator:
    url: str

    def admin(self) -> CoordinatorClient:
        from fedge.coordinator import DEV_ADMIN_KEY

        return CoordinatorClient(self.url, api_key=DEV_ADMIN_KEY)

    def token(self) -> str:
        token: str = self.admin().post_json("/api/v1/enrollment/tokens", {})["token"]
        return token

    def authority(self) -> bytes:
        answer = CoordinatorClient(self.url).get_json("/api/v1/enrollment/authority")
        return base64.b64decode(answer["public_keys_base64"])

    def fingerprint(self) -> str:
        from fedge.security import SitePublicKeys

        return SitePublicKeys.from_bytes(self.authority()).key_fingerprint().hex()

    def site_status(self, site_id: str) -> str:
        status: str = self.admin().get_json(f"/api/v1/sites/{site_id}")["status"]
        return status


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    root = tmp_path_factory.mktemp("coordinator")
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FEDGE_COORDINATOR_DATABASE_URL": f"sqlite:///{root / 'c.db'}",
        "FEDGE_COORDINATOR_MODEL_STORE": str(root / "models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(root / "coordinator.key"),
        "XDG_STATE_HOME": str(root / "state"),
    }
    port = free_port()
    cmd = [FEDGE, "coordinator", "serve", "--port", str(port)]
    with service(cmd, root / "log", env):
        wait_for_port(port, timeout=90)
        yield Coordinator(f"http://127.0.0.1:{port}")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEDGE_COORDINATOR_URL", "FEDGE_API_KEY", "FEDGE_KEK"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def fedge(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``fedge ARGS`` as the console script does (typed errors: one line, exit 2)."""

    def run(*args: str) -> Ran:
        monkeypatch.setattr(sys, "argv", ["fedge", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main()
            raise SystemExit(0)
        captured = capsys.readouterr()
        code = exit_info.value.code
        return Ran(code if isinstance(code, int) else 2, captured.out, captured.err)

    return run


CONFIG = """\
# the gNB's agent (site set by enrollment)
[agent]
step_seconds = 300
site = "gnb-placeholder"   # replaced

[broker]
url = "mqtt://127.0.0.1:1883"

[security]
key_file = "site.key"
kek_file = "kek"
coordinator_keys = "keys/coordinator.pub"
"""


@dataclass
class Site:
    config: Path
    site_id: str

    @property
    def coordinator_keys(self) -> Path:
        return self.config.parent / "keys" / "coordinator.pub"


def _site(root: Path, text: str = CONFIG) -> Site:
    from fedge.security import SiteIdentity, save_identity

    root.mkdir(parents=True, exist_ok=True)
    kek = root / "kek"
    kek.write_bytes(b"site-kek\n")
    kek.chmod(0o600)
    identity = SiteIdentity.generate()
    save_identity(root / "site.key", identity, b"site-kek", log2_n=10)
    config = root / "agent.toml"
    config.write_text(text)
    return Site(config, identity.site_id.hex())


def _enroll(fedge: Any, coordinator: Coordinator, site: Site, token: str, *extra: str) -> Ran:
    ran: Ran = fedge(
        "site", "enroll", "--coordinator", coordinator.url, "--token", token,
        "--config", str(site.config), *extra,
    )  # fmt: skip
    return ran


def test_enroll_checks_the_fingerprint_and_writes_keys_and_site(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    fingerprint = coordinator.fingerprint()
    ran = _enroll(fedge, coordinator, site, coordinator.token(), "--authority-fingerprint",
                  fingerprint.upper(), "--region", "north")  # fmt: skip
    assert ran.code == 0, ran.err
    assert site.site_id in ran.out and f"{fingerprint} (checked)" in ran.out
    assert site.coordinator_keys.read_bytes() == coordinator.authority()
    assert site.config.read_text() == CONFIG.replace(
        'site = "gnb-placeholder"   # replaced', f'site = "{site.site_id}"'
    )
    assert coordinator.site_status(site.site_id) == "active"


def test_enroll_without_a_fingerprint_says_which_key_it_trusted(
    coordinator: Coordinator, fedge: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, CONFIG.replace('site = "gnb-placeholder"   # replaced\n', ""))
    monkeypatch.setenv("FEDGE_COORDINATOR_URL", coordinator.url)
    ran = fedge("site", "enroll", "--token", coordinator.token(), "--config", str(site.config))
    assert ran.code == 0, ran.err
    assert f"{coordinator.fingerprint()} (trusted on first use" in ran.out
    agent = tomllib.loads(site.config.read_text())["agent"]
    assert agent == {"site": site.site_id, "step_seconds": 300}


def test_a_wrong_fingerprint_sends_nothing_and_spends_nothing(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    token = coordinator.token()
    ran = _enroll(fedge, coordinator, site, token, "--authority-fingerprint", "ab" * 16)
    assert ran.code == 2 and "presents the key fingerprint" in ran.err
    assert not site.coordinator_keys.exists() and site.config.read_text() == CONFIG
    assert _enroll(fedge, coordinator, site, token).code == 0


@pytest.mark.parametrize(("flag", "value"), [("--region", "n" * 65), ("--archetype", "")])
def test_a_bad_archetype_or_region_is_refused_before_enrolling(
    coordinator: Coordinator, fedge: Any, tmp_path: Path, flag: str, value: str
) -> None:
    site = _site(tmp_path)
    ran = _enroll(fedge, coordinator, site, coordinator.token(), flag, value)
    assert ran.code == 2 and f"{flag}: 1 to 64 characters" in ran.err
    assert not site.coordinator_keys.exists() and site.config.read_text() == CONFIG


@pytest.mark.parametrize("fingerprint", ["abc", "zz" * 16, "ab" * 17])
def test_a_malformed_fingerprint_is_a_typed_error(
    coordinator: Coordinator, fedge: Any, tmp_path: Path, fingerprint: str
) -> None:
    site = _site(tmp_path)
    ran = _enroll(fedge, coordinator, site, "t", "--authority-fingerprint", fingerprint)
    assert ran.code == 2 and "--authority-fingerprint: 32 hex digits" in ran.err


def test_a_wrong_token_is_refused_and_the_real_one_still_works(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    token = coordinator.token()
    unknown = "fedge-enroll-v1." + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    ran = _enroll(fedge, coordinator, site, unknown.rstrip("="))
    assert ran.code == 2 and ran.err.startswith("error: 401 "), ran.err
    garbled = _enroll(fedge, coordinator, site, "not-a-token")
    assert garbled.code == 2 and "not a fedge enrollment token" in garbled.err
    assert not site.coordinator_keys.exists() and site.config.read_text() == CONFIG
    assert _enroll(fedge, coordinator, site, token).code == 0


def test_re_enrolling_an_enrolled_site_is_refused_and_keeps_the_token(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path / "a")
    assert _enroll(fedge, coordinator, site, coordinator.token()).code == 0
    enrolled = site.config.read_text()
    token = coordinator.token()
    again = _enroll(fedge, coordinator, site, token)
    assert again.code == 2 and again.err.startswith("error: 400 ") and "enrolled" in again.err
    assert site.config.read_text() == enrolled
    other = _site(tmp_path / "b")
    assert _enroll(fedge, coordinator, other, token).code == 0


def test_an_unreachable_coordinator_changes_nothing(fedge: Any, tmp_path: Path) -> None:
    site = _site(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    ran = fedge("site", "enroll", "--coordinator", url, "--token", "t", "--config",
                str(site.config))  # fmt: skip
    assert ran.code == 2 and "unreachable" in ran.err
    assert not site.coordinator_keys.exists() and site.config.read_text() == CONFIG


def test_bad_configs_and_flags_are_typed_errors(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    token = coordinator.token()
    missing = _enroll(fedge, coordinator, Site(tmp_path / "absent.toml", ""), token)
    assert missing.code == 2 and "cannot read config" in missing.err
    site.config.write_text(CONFIG.split("[security]", maxsplit=1)[0])
    no_security = _enroll(fedge, coordinator, site, token)
    assert no_security.code == 2 and "needs a [security] section" in no_security.err
    site.config.write_text(CONFIG.replace('key_file = "site.key"', 'key_file = "other.key"'))
    no_key = _enroll(fedge, coordinator, site, token)
    assert no_key.code == 2 and "no key file" in no_key.err
    site.config.write_text(CONFIG.replace('kek_file = "kek"\n', ""))
    no_kek = _enroll(fedge, coordinator, site, token)
    assert no_kek.code == 2 and "FEDGE_KEK" in no_kek.err
    site.config.write_text(CONFIG + "colour = 3\n")
    unknown = _enroll(fedge, coordinator, site, token)
    assert unknown.code == 2 and "security.colour" in unknown.err
    site.config.write_text("[agent\n")
    assert "not valid TOML" in _enroll(fedge, coordinator, site, token).err
    no_token = fedge("site", "enroll", "--coordinator", coordinator.url)
    assert no_token.code == 2 and "--token" in no_token.err
    no_url = fedge("site", "enroll", "--token", token, "--config", str(site.config))
    assert no_url.code == 2 and "no coordinator" in no_url.err


def test_set_agent_site_edits_only_the_site_line() -> None:
    text = '# top\n[agent]\nsite = "old"\n\n[store]\nsite = "not this one"\n'
    assert set_agent_site(text, "ab" * 16) == (
        f'# top\n[agent]\nsite = "{"ab" * 16}"\n\n[store]\nsite = "not this one"\n'
    )
    added = set_agent_site("[agent]\nstep_seconds = 60\n", "cd" * 16)
    assert tomllib.loads(added)["agent"] == {"site": "cd" * 16, "step_seconds": 60}
    fresh = set_agent_site('[security]\nkey_file = "k"\n', "ef" * 16)
    parsed = tomllib.loads(fresh)
    assert parsed["agent"]["site"] == "ef" * 16 and parsed["security"] == {"key_file": "k"}


def test_set_agent_site_refuses_what_it_cannot_edit_safely() -> None:
    with pytest.raises(EnrollmentError, match="by hand"):
        set_agent_site('agent = { site = "old" }\n', "ab" * 16)


def test_a_config_it_cannot_update_is_refused_before_enrolling(
    coordinator: Coordinator, fedge: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    inline = CONFIG.replace("[agent]\nstep_seconds = 300\n", "agent = { step_seconds = 300 }\n")
    site.config.write_text(inline.replace('site = "gnb-placeholder"   # replaced\n', ""))
    token = coordinator.token()
    ran = _enroll(fedge, coordinator, site, token)
    assert ran.code == 2 and f'set site = "{site.site_id}" by hand' in ran.err
    assert not site.coordinator_keys.exists()
    site.config.write_text(CONFIG)
    assert _enroll(fedge, coordinator, site, token).code == 0


#: What an agent-only install (``fedge[agent]``) lacks, and what the agent never loads.
NOT_ON_A_GNB = ("fastapi", "sqlmodel", "sqlalchemy", "pydantic", "torch", "flwr", "uvicorn")


def _agent_only(*args: str) -> subprocess.CompletedProcess[str]:
    """``fedge ARGS`` in a process where the coordinator's and training stacks cannot load."""
    blocked = "".join(f"sys.modules[{m!r}] = None; " for m in NOT_ON_A_GNB)
    code = f"import sys; {blocked}sys.argv = ['fedge', *{list(args)!r}]; "
    code += "from fedge._cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_enroll_and_operator_commands_run_without_the_service_stacks(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    done = _agent_only("site", "enroll", "--coordinator", coordinator.url, "--token",
                       coordinator.token(), "--config", str(site.config))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert coordinator.site_status(site.site_id) == "active"
    from fedge.coordinator import DEV_ADMIN_KEY

    (tmp_path / "admin.key").write_text(DEV_ADMIN_KEY)
    key = ["--coordinator", coordinator.url, "--api-key-file", str(tmp_path / "admin.key")]
    for command in (["site", "list"], ["model", "list"], ["run", "list"]):
        listed = _agent_only(*command, "--json", *key)
        assert listed.returncode == 0, listed.stderr
    assert site.site_id in _agent_only("site", "list", *key).stdout
