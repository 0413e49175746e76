"""How the coordinator reaches the SuperLink's Control API: TLS with a checked CA bundle,
the system's trust store, or plaintext only when allowed and only on loopback."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedge.coordinator import SettingsError, load_settings
from fedge.coordinator._runs import flwr_config
from tests.edge_agent.test_tls import make_ca


def _connection(text: str) -> dict[str, object]:
    doc = tomllib.loads(text)
    assert doc["superlink"]["default"] == "fedge"
    connection: dict[str, object] = doc["superlink"]["fedge"]
    return connection


def test_tls_with_the_ca_from_the_settings(tmp_path: Path) -> None:
    ca, _, _ = make_ca(tmp_path, "link")
    settings = load_settings(superlink="link.example:8000", superlink_root_certificates=ca)
    assert settings.superlink_root_certificates == ca.resolve()
    assert _connection(flwr_config(settings)) == {
        "address": "link.example:8000",
        "root-certificates": str(ca.resolve()),
    }


def test_tls_with_the_system_trust_store_by_default() -> None:
    settings = load_settings(superlink="link.example:8000")
    assert _connection(flwr_config(settings)) == {"address": "link.example:8000", "insecure": False}


@pytest.mark.parametrize(
    "address", ["127.0.0.1:8000", "127.8.9.10:8000", "[::1]:8000", "localhost:8000"]
)
def test_plaintext_when_allowed_on_loopback(address: str) -> None:
    settings = load_settings(superlink=address, superlink_insecure=True)
    assert _connection(flwr_config(settings)) == {"address": address, "insecure": True}


@pytest.mark.parametrize("address", ["10.0.0.5:8000", "link.example:8000", "[2001:db8::1]:8000"])
def test_plaintext_to_another_host_is_refused(address: str) -> None:
    with pytest.raises(SettingsError, match="superlink_insecure: plaintext only to a loopback"):
        load_settings(superlink=address, superlink_insecure=True)


def test_plaintext_and_a_ca_exclude_each_other(tmp_path: Path) -> None:
    ca, _, _ = make_ca(tmp_path, "link")
    with pytest.raises(SettingsError, match="exclude each other"):
        load_settings(
            superlink="127.0.0.1:8000", superlink_insecure=True, superlink_root_certificates=ca
        )


def test_a_ca_bundle_that_cannot_be_used_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    _, _, key = make_ca(tmp_path, "link")
    cases = {
        tmp_path / "missing.pem": "cannot read .*missing.pem",
        tmp_path: "cannot read",  # a directory
        junk: "junk.pem holds no PEM certificate",
        key: "link-server.key holds no PEM certificate",  # a private key, not a CA
    }
    for path, message in cases.items():
        with pytest.raises(SettingsError, match=f"superlink_root_certificates: .*{message}"):
            load_settings(superlink="link.example:8000", superlink_root_certificates=path)


def test_the_env_file_names(tmp_path: Path) -> None:
    ca, _, _ = make_ca(tmp_path, "link")
    env = tmp_path / "coordinator.env"
    env.write_text(
        "FEDGE_COORDINATOR_SUPERLINK=link.example:8000\n"
        f"FEDGE_COORDINATOR_SUPERLINK_ROOT_CERTIFICATES={ca}\n"
    )
    assert load_settings(_env_file=env).superlink_root_certificates == ca.resolve()
