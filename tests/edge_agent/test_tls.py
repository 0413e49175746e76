"""MQTT over TLS against a Mosquitto TLS listener with a CA made for the test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from tests.edge_agent.conftest import MOSQUITTO, Mosquitto, agent_env, write_config


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(path: Path, obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def make_ca(tmp: Path, tag: str) -> tuple[Path, Path, Path]:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedge test CA {tag}")])
    ca = _cert(f"fedge test CA {tag}", ca_key, ca_name, ca_key, ca=True)
    server = _cert("127.0.0.1", key, ca_name, ca_key, ca=False)
    return (
        _pem(tmp / f"{tag}-ca.pem", ca),
        _pem(tmp / f"{tag}-server.pem", server),
        _pem(tmp / f"{tag}-server.key", key),
    )


def test_agent_connects_over_tls_and_refuses_an_unknown_ca(tmp_path: Path) -> None:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed")
    ca, cert, key = make_ca(tmp_path, "good")
    other_ca, _, _ = make_ca(tmp_path, "other")
    broker = Mosquitto(tmp_path / "mq")
    with broker.conf.open("a") as conf:
        conf.write(f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate false\n")
    broker.start()
    url = f"mqtts://127.0.0.1:{broker.port}"
    try:
        cfg = write_config(tmp_path, url, broker={"tls": {"ca_file": str(ca)}})
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedge", "agent", "run", "--config", str(cfg)],
            stderr=subprocess.PIPE, env=agent_env(), text=True,
        )  # fmt: skip
        online = threading.Event()

        def on_status(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
            body = json.loads(m.payload)
            if body["state"] == "online" and body["pid"] == proc.pid:
                online.set()

        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-watcher")
        watcher.tls_set(ca_certs=str(ca))
        watcher.on_message = on_status
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("fedge/v1/gnb-test/status", qos=1)
        watcher.loop_start()
        try:
            assert online.wait(60), "agent never announced itself over TLS"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            watcher.loop_stop()
            watcher.disconnect()
        assert proc.returncode == 0, err[-2000:]
        (tmp_path / "wrong").mkdir()
        wrong = write_config(tmp_path / "wrong", url, broker={"tls": {"ca_file": str(other_ca)}})
        res = subprocess.run(
            [sys.executable, "-m", "fedge", "agent", "check", "--config", str(wrong)],
            capture_output=True, text=True, env=agent_env(), timeout=60, check=False,
        )  # fmt: skip
        assert res.returncode == 2
        assert "FAIL  broker" in res.stdout and "CERTIFICATE_VERIFY_FAILED" in res.stdout
    finally:
        broker.stop()
