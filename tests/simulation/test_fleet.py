"""``fedge fleet``: bad flags and directories refused with typed errors before anything
starts; and the whole live system for real (Mosquitto, coordinator, SuperLink, three
enrolled agents with their SuperNodes, the replayer): up, a killed agent restarted by a
second ``up``, the loop closed by ``run``, and ``down`` leaving no process behind."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedge.security import init_ca, issue
from fedge.simulation._fleet import (
    STATE_FILE,
    FleetError,
    FleetSpec,
    FleetState,
    ProcessRecord,
    _coordinator_env,
    _flwr_home,
    _new_state,
    _superlink_tls,
    _write_private,
    agent_toml,
    alive,
    check_running,
    down,
    fleet_processes,
    http_json,
    load_state,
    make_tls,
    mosquitto_conf,
    status,
    tls_files,
    up,
)
from fedge.simulation._replayer import CELL, kpi_message, wall_to_index
from tests.coordinator.policies import write_policies

FEDGE = str(Path(sys.executable).with_name("fedge"))


def _fedge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [FEDGE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.mark.parametrize("sites", [0, -1, 501])
def test_site_counts_out_of_range_are_refused(sites: int) -> None:
    with pytest.raises(FleetError, match="--sites"):
        FleetSpec(sites)


@pytest.mark.parametrize("speed", [0.0, -2.0, math.nan, math.inf, 1e9])
def test_bad_speeds_are_refused(speed: float) -> None:
    with pytest.raises(FleetError, match="--speed"):
        FleetSpec(3, speed=speed)


def test_unreadable_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="--data: cannot read"):
        FleetSpec(3, data=tmp_path / "missing.csv")
    FleetSpec(3, data=tmp_path)  # a folder of PM files: read (and checked) by the replayer
    locked = tmp_path / "locked.csv"
    locked.write_text("site_id,timestamp\n")
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: the other two cases stand
        return
    with pytest.raises(FleetError, match="--data: cannot read"):
        FleetSpec(3, data=locked)


def test_a_data_file_that_is_not_kpis_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "kpis.csv"
    bad.write_text("site_id,timestamp,dl_prb_util\ns1,yesterday,40\n")
    root = tmp_path / "fleet"
    with pytest.raises(FleetError, match=r"--data: .*missing required column"):
        up(root, FleetSpec(2, data=bad))
    assert not root.exists()


def test_policies_without_a_manifest_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="--policies"):
        FleetSpec(3, policies=tmp_path)


def test_a_directory_that_is_not_a_fleet_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("mine\n")
    with pytest.raises(FleetError, match="not empty and holds no fleet"):
        up(tmp_path, FleetSpec(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert keep.read_text() == "mine\n"
    for call in (load_state, status, down):
        with pytest.raises(FleetError, match="not a fleet directory"):
            call(tmp_path)
    with pytest.raises(FleetError, match="not a directory"):
        load_state(keep)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(FleetError, match="not a fleet state file"):
        load_state(tmp_path)
    assert keep.read_text() == "mine\n"


def test_sites_must_be_a_whole_number() -> None:
    with pytest.raises(FleetError, match="--sites: a whole number"):
        FleetSpec(True)
    with pytest.raises(FleetError, match="--sites: a whole number"):
        FleetSpec(2.5)  # type: ignore[arg-type]


def _fleet_dir(root: Path, sites: int = 2) -> Path:
    """A fleet directory as ``up`` leaves it before starting anything."""
    state = _new_state(root, FleetSpec(sites))
    root.mkdir(parents=True)
    state.save()
    return root


def test_resuming_with_other_sites_or_database_is_refused(tmp_path: Path) -> None:
    root = _fleet_dir(tmp_path / "fleet")
    before = (root / STATE_FILE).read_text()
    with pytest.raises(FleetError, match="holds a fleet of 2 sites"):
        up(root, FleetSpec(3))
    with pytest.raises(FleetError, match="holds a fleet of 2 sites"):
        up(root, FleetSpec(2, postgres=True))
    assert (root / STATE_FILE).read_text() == before


def test_resuming_with_or_without_tls_is_refused(tmp_path: Path) -> None:
    plain = _fleet_dir(tmp_path / "plain")
    with pytest.raises(FleetError, match=r"--tls: .* holds a fleet without TLS"):
        up(plain, FleetSpec(2, tls=True))
    secure = tmp_path / "secure"
    state = _new_state(secure, FleetSpec(2, tls=True))
    secure.mkdir()
    state.save()
    assert load_state(secure).tls
    with pytest.raises(FleetError, match=r"--tls: .* holds a fleet with TLS \(--tls\)"):
        up(secure, FleetSpec(2))
    assert not (secure / "tls").exists()  # refused before anything was made


@pytest.fixture(scope="module")
def tls_fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetState:
    """A TLS fleet's state with its CA and certificates made, nothing started."""
    root = tmp_path_factory.mktemp("tls") / "fleet"
    state = _new_state(root, FleetSpec(2, tls=True))
    root.mkdir()
    state.save()
    make_tls(state)
    _write_private(root / "coordinator" / "admin.key", "fedge-fleet-test\n")
    return state


def test_a_tls_fleets_agent_toml_dials_every_hop_with_the_fleet_ca(tls_fleet: FleetState) -> None:
    from fedge.edge_agent import load_config

    state, site = tls_fleet, tls_fleet.sites[0]
    Path(site.dir).mkdir(parents=True, exist_ok=True)
    path = Path(site.dir) / "agent.toml"
    for name in ("site.key", "site.kek", "coordinator.pub"):  # enrollment's, not read here
        _write_private(Path(site.dir) / name, "x\n")
    enrolled = '[agent]\nsite = "' + "ab" * 16 + '"\n'
    path.write_text(agent_toml(state, site).replace("[agent]\n", enrolled, 1))
    config = load_config(path)
    files = tls_files(state)
    ca = files["ca"]
    assert (config.broker.host, config.broker.port) == ("127.0.0.1", state.ports["mosquitto"])
    assert config.broker.tls is not None
    tls = config.broker.tls
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (ca, *files["agent"])
    assert config.federation is not None and config.federation.root_certificates == ca
    assert config.coordinator is not None
    assert config.coordinator.url == f"https://127.0.0.1:{state.ports['coordinator']}"
    assert config.coordinator.ca_file == ca
    home = (_flwr_home(state) / "config.toml").read_text()
    assert f'root-certificates = "{ca}"' in home and "insecure" not in home


def test_a_tls_fleets_coordinator_and_broker_take_the_fleet_certificates(
    tls_fleet: FleetState, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedge.coordinator._settings import CoordinatorSettings

    state = tls_fleet
    env = _coordinator_env(state)
    files = tls_files(state)
    assert "FEDGE_COORDINATOR_SUPERLINK_INSECURE" not in env
    assert env["FEDGE_COORDINATOR_SUPERLINK_ROOT_CERTIFICATES"] == str(files["ca"])
    assert env["FEDGE_COORDINATOR_PUBLIC_URL"] == state.coordinator_url
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = CoordinatorSettings()  # the coordinator's own checks: the files load together
    assert (settings.tls_certfile, settings.tls_keyfile) == files["coordinator"]
    conf = mosquitto_conf(state, state.root / "mosquitto")
    assert [line for line in conf.splitlines() if line.startswith("listener")] == [
        f"listener {state.ports['mosquitto']} 127.0.0.1"
    ]
    for line in ("require_certificate true", "use_identity_as_username true",
                 "allow_anonymous false", f"cafile {files['ca']}"):  # fmt: skip
        assert line in conf.splitlines()
    assert _superlink_tls(state)[:2] == ["--ssl-ca-certfile", str(files["ca"])]
    from cryptography import x509

    for name in ("agent", "replayer"):  # their common names are their broker user names
        cert = x509.load_pem_x509_certificate(files[name][0].read_bytes())
        assert cert.subject.rfc4514_string() == f"CN={name}"


def test_a_plaintext_fleet_keeps_its_loopback_settings(tmp_path: Path) -> None:
    state = load_state(_fleet_dir(tmp_path / "fleet"))
    _write_private(state.root / "coordinator" / "admin.key", "fedge-fleet-test\n")
    assert not state.tls and state.ca_file is None
    assert state.coordinator_url.startswith("http://")
    conf = mosquitto_conf(state, state.root / "mosquitto").splitlines()
    assert "allow_anonymous true" in conf and not any(line.startswith("cafile") for line in conf)
    toml = agent_toml(state, state.sites[0])
    assert 'url = "mqtt://127.0.0.1:' in toml
    assert "[broker.tls]" not in toml and "root_certificates" not in toml
    assert "ca_file" not in toml
    env = _coordinator_env(state)
    assert env["FEDGE_COORDINATOR_SUPERLINK_INSECURE"] == "true"
    assert "FEDGE_COORDINATOR_TLS_CERTFILE" not in env
    assert _superlink_tls(state) == ["--insecure"]
    assert "insecure = true" in (_flwr_home(state) / "config.toml").read_text()


def test_a_state_file_of_another_place_or_version_is_refused(tmp_path: Path) -> None:
    root = _fleet_dir(tmp_path / "fleet")
    moved = tmp_path / "moved"
    root.rename(moved)
    with pytest.raises(FleetError, match="belongs to the fleet at"):
        load_state(moved)
    data = json.loads((moved / STATE_FILE).read_text())
    data.update(dir=str(moved), version=99)
    (moved / STATE_FILE).write_text(json.dumps(data))
    with pytest.raises(FleetError, match="state version 99"):
        load_state(moved)


def test_a_part_that_is_not_running_is_named(tmp_path: Path) -> None:
    state = load_state(_fleet_dir(tmp_path / "fleet"))
    gone = ProcessRecord("coordinator", 2**22 + 1, ["fedge"], str(tmp_path / "log"), None, 0, 1)
    state.processes["coordinator"] = gone
    with pytest.raises(FleetError, match="not running: coordinator"):
        check_running(state)


def test_the_replayed_kpis_pass_the_agents_own_schema() -> None:
    from fedge.edge_agent import parse_kpi
    from fedge.simulation import GeneratorConfig, SiteGenerator

    values = SiteGenerator(GeneratorConfig(num_sites=1, days=1)).site(0).values
    now = time.time()
    for row in values[:: len(values) // 20]:
        sample = parse_kpi(kpi_message(row, now), max_bytes=4096, step_seconds=300, now=now,
                           max_future_s=60)  # fmt: skip
        assert sample.cell == CELL


def test_wall_time_maps_onto_the_replayed_steps_of_each_pacing_segment() -> None:
    position = {
        "backfill_end": 100,
        "segments": [{"wall": 1000.0, "index": 100, "speed": 60.0},
                     {"wall": 2000.0, "index": 500, "speed": 300.0}],
    }  # fmt: skip
    assert wall_to_index(position, 500.0) == 100  # before pacing: the back-fill's end
    assert wall_to_index(position, 1010.0) == pytest.approx(102.0)  # 10 s at 60x: 2 steps
    assert wall_to_index(position, 2001.0) == pytest.approx(501.0)  # 1 s at 300x: 1 step


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    bad = _fedge("fleet", "up", "--sites", "0", "--dir", str(tmp_path / "f"), timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: --sites: between 1 and 500, got 0"]
    assert not (tmp_path / "f").exists()
    word = _fedge("fleet", "up", "--speed", "fast", "--dir", str(tmp_path / "f"), timeout=120)
    assert word.returncode == 2 and "--speed" in word.stderr
    missing = _fedge("fleet", "status", "--dir", str(tmp_path), timeout=120)
    assert missing.returncode == 2 and "not a fleet directory" in missing.stderr
    minutes = _fedge("fleet", "run", "--minutes", "0", "--dir", str(tmp_path), timeout=120)
    assert minutes.returncode == 2 and "--minutes" in minutes.stderr


def _mqtt_accepted(port: int, tls: tuple[Path, Path | None, Path | None] | None) -> bool:
    """Whether the broker accepts an MQTT client (TLS with this CA, certificate and key)
    within a few seconds. A broker that hangs up (TLS 1.3 refuses a client certificate
    after the handshake, plaintext is dropped) answers at once: no waiting out the five."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    accepted, answered = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")

    def on_connect(_c: object, _u: object, _f: object, code: object, _p: object) -> None:
        if code == 0:
            accepted.set()
        answered.set()

    def on_disconnect(*_: object) -> None:
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_connect_fail = on_disconnect
    if tls is not None:
        ca, cert, key = tls
        client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                       keyfile=str(key) if key else None)  # fmt: skip
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return False
    client.loop_start()
    try:
        answered.wait(5)
        return accepted.is_set()
    finally:
        client.disconnect()
        client.loop_stop()


def _assert_only_tls_gets_in(state: FleetState, other: Path) -> None:
    """Every fleet hop wants TLS with the fleet's CA: no plaintext listener, no client
    without a certificate of that CA, no server trusted under another CA."""
    files = tls_files(state)
    ca, replayer = files["ca"], files["replayer"]
    init_ca(other)
    issue(other, "agent", client=True)
    conf = (state.root / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert [line for line in conf if line.startswith("listener")] == [
        f"listener {state.ports['mosquitto']} 127.0.0.1"
    ]
    assert "require_certificate true" in conf and "allow_anonymous false" in conf
    port = state.ports["mosquitto"]
    assert _mqtt_accepted(port, (ca, *replayer))  # the probe itself can succeed
    assert not _mqtt_accepted(port, None)  # plaintext
    assert not _mqtt_accepted(port, (ca, None, None))  # no certificate
    assert not _mqtt_accepted(port, (ca, other / "agent.pem", other / "agent.key"))

    url = state.coordinator_url
    assert http_json(f"{url}/healthz", ca_file=ca)
    with pytest.raises(FleetError):
        http_json(f"http://127.0.0.1:{state.ports['coordinator']}/healthz", timeout=5)
    with pytest.raises(FleetError, match="CERTIFICATE_VERIFY_FAILED"):
        http_json(f"{url}/healthz", ca_file=other / "ca.pem")

    def handshake(cafile: Path) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        context.set_alpn_protocols(["h2"])
        address = ("127.0.0.1", state.ports["superlink"])
        with (
            socket.create_connection(address, timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            pass

    handshake(ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(other / "ca.pem")


@pytest.mark.slow
def test_three_sites_close_the_loop_and_leave_nothing_behind(tmp_path: Path) -> None:
    """up (3 sites, TLS on every hop: nothing gets in without it), SIGKILL of an agent (its
    SuperNode orphaned) and a resuming up, run until the loop closed at every site, down:
    no process of the fleet is left."""
    root = tmp_path / "fleet"
    policies = tmp_path / "policies"
    write_policies(policies)
    try:
        started = _fedge("fleet", "up", "--sites", "3", "--dir", str(root), "--tls",
                         "--policies", str(policies), "--speed", "60")  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        state = load_state(root)
        assert state.tls and state.coordinator_url.startswith("https://")
        _assert_only_tls_gets_in(state, tmp_path / "other-ca")
        assert {"mosquitto", "coordinator", "superlink", "replayer"} <= set(state.processes)
        assert all(s.site_id for s in state.sites)
        assert len({s.site_id for s in state.sites}) == 3
        keys = {s.index: (Path(s.dir) / "site.key").read_bytes() for s in state.sites}

        victim = state.processes["agent-0"]
        os.killpg(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(victim) and time.monotonic() < deadline:
            time.sleep(0.1)
        resumed = _fedge("fleet", "up", "--sites", "3", "--dir", str(root), "--tls")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming" in resumed.stderr and "enrolling" not in resumed.stderr
        again = load_state(root)
        assert again.processes["agent-0"].pid != victim.pid
        assert again.processes["coordinator"].pid == state.processes["coordinator"].pid
        assert {s.index: (Path(s.dir) / "site.key").read_bytes() for s in again.sites} == keys

        ran = _fedge("fleet", "run", "--minutes", "8", "--until-closed", "--dir", str(root))
        assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
        report = json.loads((root / "report.json").read_text())
        assert (root / "report.html").read_text().startswith("<!doctype html>")
        loop = report["loop"]
        assert loop["rounds_completed"] >= 1
        assert loop["model_served_by_every_site"]
        promoted = {f"v{i}" for i in loop["models_promoted"]}
        for site in report["sites"]:
            assert site["kpis_in"] > 0  # a KPI in
            assert site["forecasts_ingested"] > 0  # a forecast ingested
            assert site["serving"] in promoted  # the promoted model served
            assert site["actions"]["applied"] > 0  # an action acknowledged
        assert report["energy"]["always_on_wh"] > 0
        shown = json.loads(_fedge("fleet", "status", "--json", "--dir", str(root)).stdout)
        assert [s["serving"] for s in shown["sites"]] == [s["serving"] for s in report["sites"]]
        assert all(s["last_forecast"] for s in shown["sites"])
    finally:
        stopped = (
            _fedge("fleet", "down", "--dir", str(root)) if (root / STATE_FILE).exists() else None
        )
    assert stopped is not None and stopped.returncode == 0, stopped and stopped.stderr
    assert fleet_processes(load_state(root)) == []
    leftovers = subprocess.run(
        ["ps", "-eo", "pid,stat,args"], capture_output=True, text=True, check=True
    )
    assert [
        line for line in leftovers.stdout.splitlines()
        if str(root) in line and " Z" not in line
    ] == []  # fmt: skip


def test_the_round_timeout_grows_with_the_sites_each_core_must_start() -> None:
    from fedge.simulation._fleet import CLIENTAPP_BATCH_S, round_timeout, run_request

    assert round_timeout(3, cores=2) == 300.0  # a few sites: the plain timeout
    assert round_timeout(20, cores=2) == 10 * CLIENTAPP_BATCH_S
    assert round_timeout(20, cores=16) == 300.0
    assert run_request(20, 1)["config"]["round-timeout"] == round_timeout(20)


def test_a_new_fleets_ports_are_distinct_and_below_the_ephemeral_range(tmp_path: Path) -> None:
    """The fleet keeps its ports across restarts: none may be one an outgoing connection
    can take meanwhile (the kernel's ephemeral range), and no two parts share one."""
    state = _new_state(tmp_path / "fleet", FleetSpec(20))
    ports = list(state.ports.values())
    ports += [port for s in state.sites for port in (s.metrics_port, s.runtime_port)]
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert len(ports) == len(set(ports)) >= 40
    assert all(10_000 <= p < low for p in ports), sorted(ports)
