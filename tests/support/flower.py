"""A real Flower 1.41 deployment for tests: one ``flower-superlink`` and N
``flower-supernode``s on free loopback ports, plus the FLWR_HOME ``flwr run`` needs.

Each SuperNode is a real site: its own key file (the keystore, as ``fedge keys init``
writes it), KEK file, agent store and state directory, all named in its node config.
The coordinator's public keys are read from ``coordinator_keys`` (written by the test once
it knows them: an exported test authority, or a real coordinator's after enrollment)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.security import SiteIdentity, save_identity
from tests.support.ports import free_port, service, wait_for_port

BIN = Path(sys.executable).parent


STEP = 300
KEK = b"test-site-kek-0123456789"


@dataclass(frozen=True)
class SiteFiles:
    """One test site's own files, as a gNB host would hold them."""

    dir: Path
    identity: SiteIdentity

    @property
    def key_file(self) -> Path:
        return self.dir / "site.key"

    @property
    def kek_file(self) -> Path:
        return self.dir / "site.kek"

    @property
    def store(self) -> Path:
        return self.dir / "agent.db"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    def node_config(self, coordinator_keys: Path, **extra: str) -> str:
        items = {
            "key-file": self.key_file,
            "kek-file": self.kek_file,
            "coordinator-keys": coordinator_keys,
            "state-dir": self.state_dir,
            "store": self.store,
            **extra,
        }
        return " ".join(f'{k}="{v}"' for k, v in items.items())

    def config(self, coordinator_keys: Path) -> dict[str, str]:
        """The node config as a ClientApp's ``Context.node_config`` holds it."""
        return {
            "key-file": str(self.key_file),
            "kek-file": str(self.kek_file),
            "coordinator-keys": str(coordinator_keys),
            "state-dir": str(self.state_dir),
            "store": str(self.store),
        }


def write_store(path: Path, days: int = 10, seed: int = 0, index: int = 0) -> None:
    """An agent store holding ``days`` of one generated cell's KPIs, as the agent writes."""
    from fedge.edge_agent import KpiSample, Store
    from fedge.simulation import GeneratorConfig, SiteGenerator

    values = (
        SiteGenerator(GeneratorConfig(num_sites=index + 1, days=days, seed=seed)).site(index).values
    )
    last = int(time.time() // STEP)
    first = last - len(values) + 1
    store = Store(path, step_seconds=STEP)
    samples = [
        KpiSample("cell-a", float((first + i) * STEP), first + i,
                  tuple(None if np.isnan(v) else float(v) for v in values[i]))
        for i in range(len(values))
    ]  # fmt: skip
    store.commit_batch(samples, [], time.time())
    store.close()


def make_site(
    root: Path, *, store: Path | None = None, identity: SiteIdentity | None = None
) -> SiteFiles:
    """A site's key file (encrypted, 0600), KEK file (0600) and agent store under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    site = SiteFiles(root, identity or SiteIdentity.generate())
    fd = os.open(site.kek_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(KEK)
    save_identity(site.key_file, site.identity, KEK, overwrite=True, log2_n=10)
    if store is None:
        write_store(site.store)
    else:
        site.store.symlink_to(store)
    return site


def export_authority(
    root: Path, enrolled: Sequence[SiteFiles], coordinator_keys: Path
) -> tuple[SiteIdentity, Path]:
    """A stand-in coordinator: its identity, ``enrolled`` in its directory, exported for a
    run exactly as the coordinator does (``fedge.federation.export_run_keys``). Returns
    the identity and the run's key-directory file; writes its public keys for the sites."""
    from fedge.federation import export_run_keys
    from fedge.security import SiteRecord, SiteStatus

    authority = SiteIdentity.generate()
    records = [
        SiteRecord(s.identity.public_keys(), SiteStatus.ACTIVE, time.time()) for s in enrolled
    ]
    coordinator_keys.write_bytes(authority.public_keys().to_bytes())
    return authority, export_run_keys(root / "run-keys", authority, records)


def enroll(client: Any, site: SiteFiles) -> None:
    """Enroll ``site`` with a real coordinator over its API (token, begin, complete)."""
    import base64

    from fedge.security import SitePublicKeys, enrollment_request, prove_possession

    keys = client.get("/api/v1/enrollment/authority").json()
    authority = SitePublicKeys.from_bytes(base64.b64decode(keys["public_keys_base64"]))
    token = client.post("/api/v1/enrollment/tokens", json={}).json()["token"]
    request = enrollment_request(site.identity, token, authority)
    begun = client.post(
        "/api/v1/enrollment/begin",
        json={"request_base64": base64.b64encode(request).decode()},
    )
    assert begun.status_code == 200, begun.text
    challenge = base64.b64decode(begun.json()["challenge_base64"])
    proof = prove_possession(site.identity, challenge)
    done = client.post(
        "/api/v1/enrollment/complete",
        json={"site_id": site.identity.site_id.hex(),
              "proof_base64": base64.b64encode(proof).decode()},
    )  # fmt: skip
    assert done.status_code == 201, done.text


#: ``flower-supernode``, except that its idle pull sleeps at most half a second: Flower's
#: sleeps three (``start_client_internal``), so each message of a round (hello, train,
#: evaluate) would wait on average 1.5 s, and a round for its slowest node, before the
#: node even sees it. The node's protocol and everything it runs are Flower's own.
_BRISK_SUPERNODE = """\
import sys, time, types
import flwr.supernode.start_client_internal as internal
from flwr.supernode.cli import flower_supernode
internal.time = types.SimpleNamespace(**{**vars(time), "sleep": lambda s: time.sleep(min(s, 0.5))})
sys.argv[0] = "flower-supernode"
sys.exit(flower_supernode())
"""


def supernode_command(address: str, node_config: str) -> list[str]:
    """A plaintext SuperNode of ``address`` with ``node_config`` (polling briskly)."""
    return [
        sys.executable, "-c", _BRISK_SUPERNODE, "--insecure", "--superlink", address,
        "--port", str(free_port()), "--node-config", node_config,
    ]  # fmt: skip


def gated_env(root: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a SuperNode that starts its ClientApps as the agent's does: fedge's
    SuperExec (host slots shared by the deployment's nodes, warm starts) first on PATH."""
    from fedge.edge_agent._config import FederationConfig
    from fedge.edge_agent._supernode import write_superexec

    config = FederationConfig(
        superlink="unused", state_dir=root / "superexec", clientapp_slot_dir=root / "slots"
    )
    bindir = write_superexec(config, sys.executable)
    return {**env, "PATH": f"{bindir}{os.pathsep}{env['PATH']}"}


@dataclass(frozen=True)
class Deployment:
    port: int  # the SuperLink's (Fleet, Control and Runtime APIs on one port in 1.41)
    env: dict[str, str]  # FLWR_HOME with a "local" federation, the venv's bin on PATH
    sites: list[SiteFiles] = field(default_factory=list)
    coordinator_keys: Path = Path()  # every site reads the coordinator's keys from here
    node_env: dict[str, str] = field(default_factory=dict)  # a SuperNode's (gated_env)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def flower_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        # flower-supernode starts flower-superexec by name: the venv's bin must be on PATH.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        # As the agent's own SuperExec polls (fedge.federation._launch_gate.POLL_S).
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",
        **extra,
    }


@contextmanager
def deployment(
    root: Path, nodes: int = 2, sites: Sequence[SiteFiles] | None = None
) -> Iterator[Deployment]:
    """A SuperLink and one SuperNode per site (``nodes`` new sites unless ``sites`` are
    given), stopped afterwards. Write the coordinator's keys to ``coordinator_keys``
    before starting a run."""
    if not (BIN / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed in this environment")
    home = root / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = flower_env(FLWR_HOME=str(home))
    coordinator_keys = root / "coordinator.pub"
    if sites is None:
        shared = root / "shared-store.db"
        write_store(shared)
        sites = [make_site(root / f"site{i}", store=shared) for i in range(nodes)]
    superlink = [
        str(BIN / "flower-superlink"), "--insecure", "--port", str(port),
        "--database", str(root / "superlink.db"), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    node_env = gated_env(root, env)
    with ExitStack() as stack:
        stack.enter_context(service(superlink, root / "superlink.log", env))
        wait_for_port(port)
        for i, site in enumerate(sites):
            node = supernode_command(f"127.0.0.1:{port}", site.node_config(coordinator_keys))
            stack.enter_context(service(node, root / f"node{i}.log", node_env))
        yield Deployment(port, env, list(sites), coordinator_keys, node_env)


def flwr_home(root: Path, port: int, root_certificates: Path | None = None) -> Path:
    """A FLWR_HOME whose ``local`` connection is the SuperLink on ``port``: TLS verified
    with ``root_certificates``, else insecure."""
    home = root / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    transport = (
        "insecure = true"
        if root_certificates is None
        else f'root-certificates = "{root_certificates.resolve()}"'
    )
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\n{transport}\n'
    )
    return home


def write_node_key(path: Path) -> Path:
    """A SuperNode authentication key pair as ``ssh-keygen -t ecdsa -b 384 -N ""`` writes
    it: the unencrypted OpenSSH P-384 private key at ``path`` (0600) and its OpenSSH public
    key at ``path.pub``, which is returned."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
    public = path.with_name(path.name + ".pub")
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return public


def flwr_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """``flwr <args> local --format json`` against the deployment in ``env``'s FLWR_HOME."""
    import json
    import subprocess

    result = subprocess.run(
        [str(BIN / "flwr"), *args, "local", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def register_node(env: dict[str, str], public_key: Path) -> int:
    """Register a SuperNode's public key over the SuperLink's Control API
    (``flwr supernode register``); returns the node id the SuperLink assigned."""
    return int(flwr_json(env, "supernode", "register", str(public_key))["node-id"])


def list_nodes(env: dict[str, str]) -> dict[int, str]:
    """The SuperLink's SuperNodes and their status (``flwr supernode ls``)."""
    nodes = flwr_json(env, "supernode", "ls")["nodes"]
    return {int(n["node-id"]): str(n["status"]) for n in nodes}
