"""``fedge pki``: the transports' CA and certificates, proven with real TLS handshakes, and
every bad input refused with a ``PkiError`` that says what is wrong."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

from fedge.security import PkiError, SecurityError, init_ca, issue


def _handshake(
    server: tuple[Path, Path], trust: Path, *, client: tuple[Path, Path] | None = None,
    require_client: bool = False, server_name: str = "localhost",
) -> None:  # fmt: skip
    """One TLS handshake on loopback: ``server``'s certificate checked against ``trust``
    for ``server_name``, and (``require_client``) the client's against the server's CA."""
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv.load_cert_chain(*server)
    if require_client:
        srv.verify_mode = ssl.CERT_REQUIRED
        srv.load_verify_locations(server[0].parent / "ca.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with srv.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cli = ssl.create_default_context(cafile=str(trust))
    if client is not None:
        cli.load_cert_chain(*client)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            cli.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            tls.sendall(b"x")
            tls.recv(1)  # the server's verdict on our certificate arrives here (TLS 1.3)
    except ssl.SSLEOFError:
        pass
    finally:
        thread.join(10)
        listener.close()
    if errors:
        raise errors[0]


def test_a_server_certificate_is_trusted_through_the_ca_for_its_names_only(
    tmp_path: Path,
) -> None:
    ca = init_ca(tmp_path, common_name="fleet CA")
    assert stat.S_IMODE(ca.key.stat().st_mode) == 0o600
    made = issue(tmp_path, "superlink", server_names=["localhost", "127.0.0.1"])
    assert stat.S_IMODE(made.key.stat().st_mode) == 0o600
    _handshake((made.cert, made.key), ca.cert)
    _handshake((made.cert, made.key), ca.cert, server_name="127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake((made.cert, made.key), ca.cert, server_name="other.example.net")
    cert = x509.load_pem_x509_certificate(made.cert.read_bytes())
    assert cert.issuer.rfc4514_string() == "CN=fleet CA"
    assert cert.subject.rfc4514_string() == "CN=superlink"


def test_a_server_of_another_ca_is_refused(tmp_path: Path) -> None:
    ours = init_ca(tmp_path / "ours")
    init_ca(tmp_path / "theirs", common_name="another CA")
    theirs = issue(tmp_path / "theirs", "mosquitto", server_names=["localhost"])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake((theirs.cert, theirs.key), ours.cert)


def test_a_client_certificate_is_accepted_by_its_ca_and_another_cas_is_refused(
    tmp_path: Path,
) -> None:
    ca = init_ca(tmp_path / "ca")
    server = issue(tmp_path / "ca", "mosquitto", server_names=["localhost"])
    agent = issue(tmp_path / "ca", "agent", client=True)
    _handshake((server.cert, server.key), ca.cert, client=(agent.cert, agent.key),
               require_client=True)  # fmt: skip
    init_ca(tmp_path / "other", common_name="another CA")
    stranger = issue(tmp_path / "other", "agent", client=True)
    with pytest.raises(ssl.SSLError):
        _handshake((server.cert, server.key), ca.cert, client=(stranger.cert, stranger.key),
                   require_client=True)  # fmt: skip


def test_a_client_certificate_does_not_serve(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    agent = issue(tmp_path, "agent", client=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake((agent.cert, agent.key), ca.cert)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "../etc/passwd", "client": True}, "letters, digits"),
        ({"name": "", "client": True}, "letters, digits"),
        ({"name": "ca", "client": True}, "the CA's own"),
        ({"name": "node"}, "--server-name ADDRESS or --client"),
        ({"name": "node", "server_names": ["not a name!"]}, "neither an IP address"),
        ({"name": "node", "server_names": ["-bad.example"]}, "neither an IP address"),
        ({"name": "node", "client": True, "days": 0}, "--days: between 1 and"),
        ({"name": "node", "client": True, "days": 100_000}, "--days: between 1 and"),
    ],
)
def test_bad_certificate_requests_are_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    init_ca(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PkiError, match=message):
        issue(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_issuing_needs_a_ca_whose_key_matches(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="holds no CA"):
        issue(tmp_path / "none", "agent", client=True)
    init_ca(tmp_path / "a")
    init_ca(tmp_path / "b")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(PkiError, match="is not the key of"):
        issue(tmp_path / "a", "agent", client=True)
    (tmp_path / "a" / "ca.pem").write_text("not a certificate")
    with pytest.raises(PkiError, match="does not load"):
        issue(tmp_path / "a", "agent", client=True)


def test_nothing_is_replaced_without_force(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    ca_pem = ca.cert.read_bytes()
    with pytest.raises(PkiError, match="already holds a CA"):
        init_ca(tmp_path)
    first = issue(tmp_path, "agent", client=True)
    kept = first.cert.read_bytes()
    with pytest.raises(PkiError, match="exists; pass --force"):
        issue(tmp_path, "agent", client=True)
    assert first.cert.read_bytes() == kept
    assert issue(tmp_path, "agent", client=True, force=True).cert.read_bytes() != kept
    assert init_ca(tmp_path, force=True).cert.read_bytes() != ca_pem
    with pytest.raises(PkiError, match="--name"):
        init_ca(tmp_path / "x", common_name=" ")
    assert issubclass(PkiError, SecurityError)


def test_the_cli_makes_a_fleets_certificates_and_says_what_is_wrong_in_one_line(
    tmp_path: Path,
) -> None:
    def fedge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fedge", "pki", *args],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    ca_dir = str(tmp_path / "ca")
    assert fedge("init", "--dir", ca_dir).returncode == 0
    made = fedge("issue", "coordinator", "--dir", ca_dir, "--server-name", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "ca" / "coordinator.pem").is_file()
    bad = fedge("issue", "node", "--dir", ca_dir)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: say what the certificate is for: --server-name ADDRESS or --client"
    ]
