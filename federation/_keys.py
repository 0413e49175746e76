"""Where a deployed run's keys come from: the coordinator's export on the server side, the
node's own files on the site side. Nothing here is ever read from a Flower message.

Server: the coordinator exports, per run, a key-directory file (``key-directory`` in the
run config, which every SuperNode can read, so it holds only paths and public keys): the
enrolled sites' public keys with their status, and where the coordinator's identity key
file and its key-encryption key (KEK) file are. Those two files are private to the
coordinator's host (mode 0600).

Site: the SuperNode's ``--node-config`` names the site's key file, its KEK file (or the
environment variable holding the KEK), the coordinator's public keys as written at
enrollment, the node's own state directory and the agent store to train from (all its
cells). Which site the node is follows from its key alone: it proves it at the hello.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from fedge.federation._errors import FederationError
from fedge.security import (
    KeyDirectory,
    KeyStoreError,
    MemoryRegistry,
    SecurityError,
    SiteIdentity,
    SitePublicKeys,
    SiteRecord,
    SiteStatus,
    load_identity,
    read_kek,
    save_identity,
)

log = logging.getLogger(__name__)

DIRECTORY_VERSION: Final = 1
KEY_DIRECTORY: Final = "key-directory"  # the run-config key
DEFAULT_KEK_ENV: Final = "FEDGE_KEK"


@dataclass(frozen=True)
class ServerKeys:
    """The server's identity and the directory of enrolled sites it accepts."""

    identity: SiteIdentity
    directory: KeyDirectory


def _private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def export_run_keys(directory: Path, identity: SiteIdentity, sites: Iterable[SiteRecord]) -> Path:
    """Write one run's key material under ``directory`` (0700); returns the directory file.

    The identity is re-encrypted under a fresh per-run KEK, so the coordinator's own KEK
    never leaves its process.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    kek = os.urandom(32).hex().encode()
    key_file, kek_file = directory / "server.key", directory / "server.kek"
    _private_file(kek_file, kek)
    save_identity(key_file, identity, kek, overwrite=True)
    body = {
        "version": DIRECTORY_VERSION,
        "identity": {"key_file": key_file.name, "kek_file": kek_file.name},
        "sites": [
            {
                "site_id": r.site_id.hex(),
                "status": r.status.value,
                "enrolled_at": r.enrolled_at,
                "keys": r.keys.to_bytes().hex(),
                "previous": None if r.previous is None else r.previous.to_bytes().hex(),
                "previous_until": r.previous_until,
            }
            for r in sites
        ],
    }
    path = directory / "directory.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)
    return path


def _site_record(entry: Any) -> SiteRecord:
    if not isinstance(entry, dict):
        raise FederationError("key directory: a site entry is not an object")
    try:
        keys = SitePublicKeys.from_bytes(bytes.fromhex(entry["keys"]))
        previous = entry.get("previous")
        record = SiteRecord(
            keys=keys,
            status=SiteStatus(entry["status"]),
            enrolled_at=float(entry["enrolled_at"]),
            previous=None
            if previous is None
            else SitePublicKeys.from_bytes(bytes.fromhex(previous)),
            previous_until=float(entry.get("previous_until", 0.0)),
        )
    except (KeyError, TypeError, ValueError, SecurityError) as exc:
        raise FederationError(f"key directory: bad site entry: {exc}") from exc
    if record.site_id.hex() != entry.get("site_id"):
        raise FederationError("key directory: a site id does not match its keys")
    return record


def load_run_keys(path: Path) -> ServerKeys:
    """The server's identity and enrolled sites from the coordinator's export."""
    try:
        body = json.loads(path.read_text())
    except OSError as exc:
        raise FederationError(f"key directory {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise FederationError(f"key directory {path} is not JSON: {exc}") from exc
    if not isinstance(body, dict) or body.get("version") != DIRECTORY_VERSION:
        raise FederationError(f"key directory {path}: not a version-{DIRECTORY_VERSION} file")
    ident, sites = body.get("identity"), body.get("sites")
    if not isinstance(ident, dict) or not isinstance(sites, list):
        raise FederationError(f"key directory {path}: needs 'identity' and 'sites'")
    base = path.parent
    try:
        key_file = base / str(ident["key_file"])
        kek_file = base / str(ident["kek_file"])
    except KeyError as exc:
        raise FederationError(f"key directory {path}: identity needs {exc}") from exc
    _check_private(kek_file, "the server's KEK file")
    try:
        identity = load_identity(key_file, read_kek(kek_file))
    except KeyStoreError as exc:
        raise FederationError(f"server identity: {exc}") from exc
    registry = MemoryRegistry()
    for entry in sites:
        registry.put_site(_site_record(entry))
    return ServerKeys(identity, KeyDirectory(registry))


def _check_private(path: Path, what: str) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise FederationError(f"{what} {path}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        raise FederationError(f"{what} {path} is readable by others (mode {mode:o}); chmod 600")


# --- the site's side --------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSetup:
    """What a deployed SuperNode's ClientApp works with, all from its own node config."""

    identity: SiteIdentity
    coordinator: SitePublicKeys
    state_dir: Path
    store: Path  # the node trains on every cell in it


NODE_KEYS: Final = (
    "key-file",
    "kek-file",
    "kek-env",
    "coordinator-keys",
    "state-dir",
    "store",
)
#: An older agent's setting, ignored: the node trains on all the site's cells, and which
#: site it is comes from its enrolled key alone.
RETIRED_NODE_KEYS: Final = ("cell-index",)


def _path(config: Mapping[str, Any], key: str) -> Path:
    value = config.get(key)
    if not isinstance(value, str) or not value:
        raise FederationError(
            f"node config has no {key!r}: start the SuperNode with --node-config "
            '\'key-file="..." kek-file="..." coordinator-keys="..." state-dir="..." '
            'store="..."\' (the agent does: docs/agent.md)'
        )
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise FederationError(f"node config {key!r} must be an absolute path, got {value!r}")
    return path


def node_setup(config: Mapping[str, Any]) -> NodeSetup:
    """Read the node's keys and paths from its node config (cached per process)."""
    items = tuple(sorted((k, str(v)) for k, v in config.items() if k in NODE_KEYS))
    retired = tuple(sorted(k for k in config if k in RETIRED_NODE_KEYS))
    if retired:
        _warn_retired(retired)
    return _node_setup(items)


@lru_cache(maxsize=1)
def _warn_retired(keys: tuple[str, ...]) -> None:
    log.warning(
        "node config %s is ignored: the node trains on every cell of its store, and its "
        "site is the enrolled key it proves at the hello",
        ", ".join(keys),
    )


@lru_cache(maxsize=64)
def _node_setup(items: tuple[tuple[str, str], ...]) -> NodeSetup:
    config = dict(items)
    key_file = _path(config, "key-file")
    coordinator_file = _path(config, "coordinator-keys")
    state_dir = _path(config, "state-dir")
    store = _path(config, "store")
    try:
        if "kek-file" in config:
            kek_file = _path(config, "kek-file")
            _check_private(kek_file, "KEK file")
            kek = read_kek(kek_file)
        else:
            env = config.get("kek-env", DEFAULT_KEK_ENV)
            value = os.environ.get(env, "")
            if len(value) < 8:
                raise FederationError(
                    f"node config names no kek-file and ${env} holds no usable KEK"
                )
            kek = value.encode()
        identity = load_identity(key_file, kek)
    except KeyStoreError as exc:
        raise FederationError(f"site identity: {exc}") from exc
    try:
        coordinator = SitePublicKeys.from_bytes(coordinator_file.read_bytes())
    except OSError as exc:
        raise FederationError(
            f"coordinator keys {coordinator_file}: {exc.strerror or exc}"
        ) from exc
    except SecurityError as exc:
        raise FederationError(f"coordinator keys {coordinator_file}: {exc}") from exc
    return NodeSetup(identity, coordinator, state_dir, store)
