"""The coordinator's API over HTTPS (FEDGE_COORDINATOR_TLS_CERTFILE/KEYFILE): a real
``fedge coordinator serve`` that the sites' and operators' client reaches with the CA,
and refuses without it; certificate settings that cannot serve are refused at start."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fedge.coordinator import SettingsError, load_settings
from fedge.core import CoordinatorClient, CoordinatorUnreachable
from tests.deploy.pki import PrivateCA
from tests.support.flower import flower_env
from tests.support.ports import free_port, service, wait_for_port

FEDGE = str(Path(sys.executable).with_name("fedge"))


def _when_ready(client: CoordinatorClient, timeout: float = 120) -> Any:
    """The first answer: a worker takes connections before its app has started."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.get_json("/api/v1/enrollment/authority")
        except CoordinatorUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_the_api_serves_https_with_the_certificate_from_the_settings(
    tmp_path: Path, workers: int
) -> None:
    ca = PrivateCA(tmp_path / "tls")
    cert, key = ca.issue("coordinator", server=True)
    port = free_port()
    env_file = tmp_path / "coordinator.env"
    env_file.write_text(
        f"FEDGE_COORDINATOR_STATE_DIR={tmp_path / 'state'}\n"
        f"FEDGE_COORDINATOR_TLS_CERTFILE={cert}\nFEDGE_COORDINATOR_TLS_KEYFILE={key}\n"
    )
    cmd = [FEDGE, "coordinator", "serve", "--env-file", str(env_file), "--port", str(port),
           "--workers", str(workers)]  # fmt: skip
    log = tmp_path / "coordinator.log"
    with service(cmd, log, flower_env()):
        wait_for_port(port, timeout=120)
        url = f"https://127.0.0.1:{port}"
        keys = _when_ready(CoordinatorClient(url, ca_file=ca.cert, timeout=30))
        assert keys["public_keys_base64"]
        with pytest.raises(CoordinatorUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            CoordinatorClient(url).get_json("/api/v1/enrollment/authority")  # system CAs
        with pytest.raises(CoordinatorUnreachable):  # plain HTTP gets no answer
            CoordinatorClient(f"http://127.0.0.1:{port}").get_json("/api/v1/enrollment/authority")
    assert f"coordinator on https://127.0.0.1:{port}" in log.read_text()


def test_the_url_servers_report_to_follows_the_scheme(tmp_path: Path) -> None:
    cert, key = PrivateCA(tmp_path).issue("coordinator", server=True)
    served = load_settings(tls_certfile=cert, tls_keyfile=key, port=8443)
    assert served.url == "https://127.0.0.1:8443" and served.tls == (cert, key)
    assert load_settings().url.startswith("http://") and load_settings().tls is None


def test_certificate_settings_that_cannot_serve_are_refused(tmp_path: Path) -> None:
    ca = PrivateCA(tmp_path)
    cert, key = ca.issue("coordinator", server=True)
    _, other_key = ca.issue("other", server=True)
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")
    cases = [
        ({"tls_certfile": cert}, "tls_certfile and tls_keyfile go together"),
        ({"tls_keyfile": key}, "tls_certfile and tls_keyfile go together"),
        ({"tls_certfile": tmp_path / "no.pem", "tls_keyfile": key}, "tls_certfile: cannot read"),
        ({"tls_certfile": cert, "tls_keyfile": tmp_path}, "tls_keyfile: cannot read"),
        ({"tls_certfile": junk, "tls_keyfile": key}, "not a PEM certificate and its"),
        ({"tls_certfile": cert, "tls_keyfile": other_key}, "not a PEM certificate and its"),
        ({"tls_certfile": key, "tls_keyfile": cert}, "not a PEM certificate and its"),
    ]
    for overrides, message in cases:
        with pytest.raises(SettingsError, match=message):
            load_settings(**overrides)
