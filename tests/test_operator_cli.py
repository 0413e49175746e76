"""``fedge site token|list|revoke``, ``fedge model ...`` and ``fedge run ...`` against a
real coordinator served by uvicorn on a free port."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedge._cli import main
from fedge.core import CoordinatorClient
from tests.support.ports import free_port


@dataclass
class Live:
    url: str
    app: Any
    keys: dict[str, Path]  # role -> API key file

    def admin(self) -> CoordinatorClient:
        from fedge.coordinator import DEV_ADMIN_KEY

        return CoordinatorClient(self.url, api_key=DEV_ADMIN_KEY)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    import uvicorn

    from fedge.coordinator import DEV_ADMIN_KEY, CoordinatorSettings
    from fedge.coordinator.api import create_app
    from fedge.security import SiteIdentity, save_identity

    root = tmp_path_factory.mktemp("coordinator")
    save_identity(root / "coordinator.key", SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{root / 'c.db'}",
        model_store=root / "models",
        identity_file=root / "coordinator.key",
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the coordinator did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    keys: dict[str, Path] = {}
    for role in ("viewer", "operator", "admin"):
        issued = CoordinatorClient(url, api_key=DEV_ADMIN_KEY).post_json(
            "/api/v1/keys", {"name": f"{role}-cli", "role": role}
        )
        keys[role] = root / f"{role}.key"
        keys[role].write_text(issued["key"] + "\n")
    try:
        yield Live(url, app, keys)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGE_API_KEY", raising=False)
    monkeypatch.delenv("FEDGE_COORDINATOR_URL", raising=False)
    monkeypatch.delenv("FEDGE_CA_FILE", raising=False)


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


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


def _as(live: Live, role: str) -> list[str]:
    return ["--coordinator", live.url, "--api-key-file", str(live.keys[role])]


def _enroll_one(live: Live) -> str:
    from fedge.security import SiteIdentity, SitePublicKeys, enrollment_request, prove_possession

    client = CoordinatorClient(live.url)
    identity = SiteIdentity.generate()
    raw = client.get_json("/api/v1/enrollment/authority")["public_keys_base64"]
    authority = SitePublicKeys.from_bytes(base64.b64decode(raw))
    token = live.admin().post_json("/api/v1/enrollment/tokens", {})["token"]
    request = enrollment_request(identity, token, authority)
    begun = client.post_json(
        "/api/v1/enrollment/begin", {"request_base64": base64.b64encode(request).decode()}
    )
    proof = prove_possession(identity, base64.b64decode(begun["challenge_base64"]))
    client.post_json(
        "/api/v1/enrollment/complete",
        {"site_id": identity.site_id.hex(), "proof_base64": base64.b64encode(proof).decode()},
    )
    return identity.site_id.hex()


# --- site -------------------------------------------------------------------------------


def test_site_token_prints_a_one_time_token(live: Live, fedge: Any) -> None:
    ran = fedge("site", "token", "--ttl", "600", *_as(live, "operator"))
    assert ran.code == 0, ran.err
    assert ran.out.strip().startswith("fedge-enroll-v1.")
    issued = fedge("site", "token", "--json", *_as(live, "operator")).json()
    assert issued["token"].startswith("fedge-enroll-v1.") and issued["expires_at"] > time.time()


def test_site_token_needs_the_operator_role(live: Live, fedge: Any) -> None:
    ran = fedge("site", "token", *_as(live, "viewer"))
    assert ran.code == 2 and ran.err.startswith("error: 403 "), ran.err


@pytest.mark.parametrize("ttl", ["0", "-5", "2592001", "soon"])
def test_site_token_refuses_a_bad_ttl(live: Live, fedge: Any, ttl: str) -> None:
    ran = fedge("site", "token", "--ttl", ttl, *_as(live, "operator"))
    assert ran.code == 2 and "--ttl" in ran.err


def test_site_list_and_revoke(live: Live, fedge: Any) -> None:
    site_id = _enroll_one(live)
    listed = fedge("site", "list", "--json", *_as(live, "viewer"))
    assert listed.code == 0, listed.err
    assert site_id in [s["id"] for s in listed.json()]
    table = fedge("site", "list", *_as(live, "viewer"))
    assert table.code == 0 and site_id in table.out and "active" in table.out
    refused = fedge("site", "revoke", site_id, *_as(live, "operator"))
    assert refused.code == 2 and refused.err.startswith("error: 403 ")
    revoked = fedge("site", "revoke", site_id, "--json", *_as(live, "admin"))
    assert revoked.code == 0 and revoked.json()["status"] == "revoked"
    active = fedge("site", "list", "--status", "active", "--json", *_as(live, "viewer")).json()
    assert site_id not in [s["id"] for s in active]
    unknown = fedge("site", "revoke", "0" * 32, *_as(live, "admin"))
    assert unknown.code == 2 and unknown.err.startswith("error: 404 ")


def test_site_revoke_refuses_a_malformed_id_before_any_request(fedge: Any) -> None:
    ran = fedge("site", "revoke", "not-a-site", "--coordinator", "http://127.0.0.1:1")
    assert ran.code == 2 and "SITE_ID" in ran.err


def test_site_list_refuses_an_unknown_status(live: Live, fedge: Any) -> None:
    ran = fedge("site", "list", "--status", "sleeping", *_as(live, "viewer"))
    assert ran.code == 2 and ran.err.startswith("error: 422 ")


# --- keys, URLs, reachability ----------------------------------------------------------


def test_the_key_and_url_come_from_the_environment(
    live: Live, fedge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDGE_COORDINATOR_URL", live.url)
    monkeypatch.setenv("FEDGE_API_KEY", live.keys["viewer"].read_text().strip())
    ran = fedge("model", "list", "--json")
    assert ran.code == 0, ran.err
    assert isinstance(ran.json(), list)


def test_a_missing_key_is_one_clear_line(live: Live, fedge: Any, tmp_path: Path) -> None:
    ran = fedge("model", "list", "--coordinator", live.url)
    assert ran.code == 2 and "no API key" in ran.err and "FEDGE_API_KEY" in ran.err
    missing = fedge("model", "list", "--coordinator", live.url, "--api-key-file",
                    str(tmp_path / "absent"))  # fmt: skip
    assert missing.code == 2 and "cannot read the API key file" in missing.err
    (tmp_path / "empty").write_text("\n")
    empty = fedge("model", "list", "--coordinator", live.url, "--api-key-file",
                  str(tmp_path / "empty"))  # fmt: skip
    assert empty.code == 2 and "is empty" in empty.err
    (tmp_path / "odd").write_text("fedge-op.a\x01b\n")
    odd = fedge("model", "list", "--coordinator", live.url, "--api-key-file",
                str(tmp_path / "odd"))  # fmt: skip
    assert odd.code == 2 and "cannot carry" in odd.err


def test_a_wrong_key_is_refused_by_the_coordinator(live: Live, fedge: Any, tmp_path: Path) -> None:
    (tmp_path / "wrong").write_text("fedge-op.not-a-key\n")
    ran = fedge("run", "list", "--coordinator", live.url, "--api-key-file", str(tmp_path / "wrong"))
    assert ran.code == 2 and ran.err.startswith("error: 401 ")


def test_a_missing_or_bad_url_is_one_clear_line(live: Live, fedge: Any) -> None:
    key = ["--api-key-file", str(live.keys["viewer"])]
    ran = fedge("run", "list", *key)
    assert ran.code == 2 and "no coordinator" in ran.err and "FEDGE_COORDINATOR_URL" in ran.err
    bad = fedge("run", "list", "--coordinator", "coordinator:8080", *key)
    assert bad.code == 2 and "not a coordinator URL" in bad.err


def test_an_unreachable_coordinator_is_one_clear_line(live: Live, fedge: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    ran = fedge("site", "list", "--coordinator", url, "--api-key-file", str(live.keys["viewer"]))
    assert ran.code == 2 and "unreachable" in ran.err and url in ran.err
    assert "Traceback" not in ran.err


def test_an_unknown_flag_is_a_usage_error(live: Live, fedge: Any) -> None:
    ran = fedge("model", "list", "--colour", *_as(live, "viewer"))
    assert ran.code == 2 and "--colour" in ran.err


# --- models -----------------------------------------------------------------------------


def _upload(live: Live, tag: str) -> int:
    from tests.coordinator.helpers import onnx_model

    body = {"onnx_base64": base64.b64encode(onnx_model(tag)).decode(), "note": tag}
    model_id: int = live.admin().post_json("/api/v1/models", body)["id"]
    return model_id


def test_model_list_promote_rollback(live: Live, fedge: Any) -> None:
    first, second = _upload(live, "cli-first"), _upload(live, "cli-second")
    listed = fedge("model", "list", "--json", *_as(live, "viewer")).json()
    assert {first, second} <= {m["id"] for m in listed}
    assert fedge("model", "promote", str(first), *_as(live, "admin")).code == 0
    promoted = fedge("model", "promote", str(second), "--json", *_as(live, "admin"))
    assert promoted.code == 0 and promoted.json()["status"] == "production"
    table = fedge("model", "list", "--status", "production", *_as(live, "viewer"))
    assert table.code == 0 and "cli-second" in table.out and "production" in table.out
    back = fedge("model", "rollback", "--json", *_as(live, "admin"))
    assert back.code == 0 and back.json()["id"] == first  # the version that serves again
    production = fedge("model", "list", "--status", "production", "--json", *_as(live, "viewer"))
    assert [m["id"] for m in production.json()] == [first]


def test_rollout_list_and_show(live: Live, fedge: Any) -> None:
    model_id = _upload(live, "cli-rollout")
    assert fedge("model", "promote", str(model_id), *_as(live, "admin")).code == 0
    listed = fedge("rollout", "list", "--json", "--limit", "5", *_as(live, "viewer"))
    assert listed.code == 0, listed.err
    newest = listed.json()[0]
    assert newest["model_id"] == model_id and newest["version"] == f"v{model_id}"
    table = fedge("rollout", "show", str(newest["id"]), *_as(live, "viewer"))
    assert table.code == 0 and f"v{model_id}" in table.out and "sites" in table.out
    shown = fedge("rollout", "show", str(newest["id"]), "--json", *_as(live, "viewer")).json()
    assert shown["id"] == newest["id"] and isinstance(shown["sites"], list)


@pytest.mark.parametrize("args", [["show", "0"], ["show", "x"], ["list", "--limit", "0"]])
def test_rollout_refuses_bad_arguments(live: Live, fedge: Any, args: list[str]) -> None:
    assert fedge("rollout", *args, *_as(live, "viewer")).code == 2


def test_rollout_show_of_an_unknown_id_is_a_404(live: Live, fedge: Any) -> None:
    ran = fedge("rollout", "show", "999999", *_as(live, "viewer"))
    assert ran.code == 2 and ran.err.startswith("error: 404 ")


def test_model_promote_needs_the_admin_role(live: Live, fedge: Any) -> None:
    model_id = _upload(live, "cli-operator")
    ran = fedge("model", "promote", str(model_id), *_as(live, "operator"))
    assert ran.code == 2 and ran.err.startswith("error: 403 ")
    assert "needs the admin role" in ran.err


def test_model_promote_refuses_bad_ids(live: Live, fedge: Any) -> None:
    assert fedge("model", "promote", "0", *_as(live, "admin")).code == 2
    assert fedge("model", "promote", "seven", *_as(live, "admin")).code == 2
    unknown = fedge("model", "promote", "999999", *_as(live, "admin"))
    assert unknown.code == 2 and unknown.err.startswith("error: 404 ")


# --- runs -------------------------------------------------------------------------------


def _new_run(live: Live) -> str:
    from fedge.coordinator._schema import RunCreate

    run, _, _ = live.app.state.coordinator.federation.create("operator:cli", RunCreate())
    run_id: str = run.id
    return run_id


def test_run_list_show_and_cancel(live: Live, fedge: Any) -> None:
    run_id = _new_run(live)
    listed = fedge("run", "list", "--json", *_as(live, "viewer"))
    assert listed.code == 0 and run_id in [r["id"] for r in listed.json()]
    shown = fedge("run", "show", run_id, *_as(live, "viewer"))
    assert shown.code == 0 and run_id in shown.out and "rounds" in shown.out
    assert fedge("run", "show", run_id, "--json", *_as(live, "viewer")).json()["id"] == run_id
    refused = fedge("run", "cancel", run_id, *_as(live, "viewer"))
    assert refused.code == 2 and refused.err.startswith("error: 403 ")
    cancelled = fedge("run", "cancel", run_id, "--json", *_as(live, "operator"))
    assert cancelled.code == 0, cancelled.err
    assert cancelled.json()["status"] == "cancelled"
    again = fedge("run", "cancel", run_id, *_as(live, "operator"))
    assert again.code == 2 and again.err.startswith("error: 409 ") and "cancelled" in again.err


def test_run_show_and_cancel_refuse_a_malformed_id(live: Live, fedge: Any) -> None:
    for command in ("show", "cancel"):
        ran = fedge("run", command, "run-7", *_as(live, "operator"))
        assert ran.code == 2 and "32 lowercase hex digits" in ran.err
    unknown = fedge("run", "show", "0" * 32, *_as(live, "viewer"))
    assert unknown.code == 2 and unknown.err.startswith("error: 404 ")


def test_run_start_without_a_superlink_names_the_setting(live: Live, fedge: Any) -> None:
    ran = fedge("run", "start", "--rounds", "2", "--config", "local-epochs=2",
                *_as(live, "operator"))  # fmt: skip
    assert ran.code == 2 and ran.err.startswith("error: 503 "), ran.err


@pytest.mark.parametrize("args", [["--config", "no-equals"], ["--config", "=1"], ["--rounds", "0"]])
def test_run_start_refuses_bad_flags(live: Live, fedge: Any, args: list[str]) -> None:
    ran = fedge("run", "start", *args, *_as(live, "operator"))
    assert ran.code == 2 and "error: 503" not in ran.err


# --- https with a private CA ---------------------------------------------------------------


@pytest.fixture(scope="module")
def live_tls(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The same coordinator app behind TLS, its certificate signed by a private CA."""
    import uvicorn

    from tests.edge_agent.test_tls import make_ca

    root = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca(root, "coordinator")
    port = free_port()
    config = uvicorn.Config(
        live.app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the TLS server did not start"
        time.sleep(0.05)
    try:
        yield f"https://127.0.0.1:{port}", ca
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_ca_file_trusts_a_private_ca(
    live: Live, live_tls: tuple[str, Path], fedge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = live_tls
    key = ["--api-key-file", str(live.keys["viewer"])]
    ran = fedge("model", "list", "--coordinator", url, *key, "--ca-file", str(ca), "--json")
    assert ran.code == 0, ran.err
    assert isinstance(ran.json(), list)
    monkeypatch.setenv("FEDGE_CA_FILE", str(ca))  # the same from the environment
    assert fedge("run", "list", "--coordinator", url, *key, "--json").code == 0


def test_without_the_ca_an_https_coordinator_is_refused(
    live: Live, live_tls: tuple[str, Path], fedge: Any
) -> None:
    url, _ = live_tls
    ran = fedge("model", "list", "--coordinator", url, "--api-key-file", str(live.keys["viewer"]))
    assert ran.code == 2
    assert "unreachable" in ran.err and "CERTIFICATE_VERIFY_FAILED" in ran.err


def test_a_missing_ca_file_is_one_clear_line(live: Live, fedge: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    ran = fedge("site", "list", *_as(live, "viewer"), "--ca-file", str(missing))
    assert ran.code == 2
    assert f"the CA file {missing} is not a readable file" in ran.err
