"""Seed-derived site and server identities: the simulation's stand-in for enrollment.

Every simulated site's keys and the server's are a function of a per-run key seed that
the harness holds in-process and hands its own workers out of band (never in a Flower
message). A deployment never derives keys: each site has its own key file
(``fedge keys init``) and the coordinator exports the enrolled directory for each run.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import lru_cache

import numpy as np

from fedge.security import (
    CompositeSigningKey,
    KeyDirectory,
    MemoryRegistry,
    SiteIdentity,
    SiteRecord,
    SiteStatus,
    XWingPrivateKey,
    fingerprint,
)

# Parsed records the simulated registry keeps in memory; a site asked for again after it
# was dropped is derived again (about 1 ms).
RECORD_CACHE = 1024


def _material(seed: int, name: str) -> bytes:
    return hashlib.shake_256(f"fedge-sim-identity|{seed}|{name}".encode()).digest(96)


def _derive(seed: int, name: str) -> SiteIdentity:
    material = _material(seed, name)
    signing = CompositeSigningKey(material[:64])
    return SiteIdentity(
        fingerprint(signing.public_key().public_bytes()),
        0,
        signing,
        XWingPrivateKey(material[64:]),
    )


@lru_cache(maxsize=4096)
def simulated_identity(seed: int, name: str) -> SiteIdentity:
    """A deterministic identity for the simulation (never for a real site)."""
    return _derive(seed, name)


def site_name(index: int) -> str:
    return f"site-{index}"


def _site_id(seed: int, index: int) -> bytes:
    """The site id alone: the signing key's fingerprint (no KEM key, nothing cached)."""
    signing = CompositeSigningKey(_material(seed, site_name(index))[:64])
    return fingerprint(signing.public_key().public_bytes())


class SimulatedRegistry(MemoryRegistry):
    """Every simulated site enrolled, without holding every site's keys.

    What it keeps per registered site is the first 8 bytes of its id and its index (12
    bytes, in two numpy arrays); a site's public keys are derived when it is looked up
    (its hello) and at most ``cache`` parsed records stay in memory. Revocations and
    rotations (``put_site``) are kept as they come, as the plain registry keeps them.
    """

    def __init__(self, seed: int, num_sites: int, cache: int = RECORD_CACHE) -> None:
        super().__init__()
        self.seed, self.num_sites, self.cache = seed, num_sites, cache
        prefixes = np.empty(num_sites, dtype=np.uint64)
        for i in range(num_sites):
            prefixes[i] = int.from_bytes(_site_id(seed, i)[:8], "big")
        self._order = np.argsort(prefixes, kind="stable").astype(np.int32)
        self._prefixes = prefixes[self._order]
        self._records: OrderedDict[bytes, SiteRecord] = OrderedDict()
        self.derived = 0  # records derived on lookup, for the memory-follows-sampling test

    def cached_records(self) -> int:
        return len(self._records)

    def get_site(self, site_id: bytes) -> SiteRecord | None:
        stored = super().get_site(site_id)
        if stored is not None:
            return stored
        with self._lock:
            hit = self._records.get(site_id)
            if hit is not None:
                self._records.move_to_end(site_id)
                return hit
        record = self._lookup(site_id)
        if record is not None:
            with self._lock:
                self._records[site_id] = record
                while len(self._records) > self.cache:
                    self._records.popitem(last=False)
        return record

    def _lookup(self, site_id: bytes) -> SiteRecord | None:
        if len(site_id) < 8:
            return None
        prefix = np.uint64(int.from_bytes(site_id[:8], "big"))
        lo = int(np.searchsorted(self._prefixes, prefix, side="left"))
        hi = int(np.searchsorted(self._prefixes, prefix, side="right"))
        for pos in range(lo, hi):  # more than one only on an 8-byte prefix collision
            identity = _derive(self.seed, site_name(int(self._order[pos])))
            self.derived += 1
            if identity.site_id == site_id:
                return SiteRecord(identity.public_keys(), SiteStatus.ACTIVE, 0.0)
        return None


def simulated_directory(seed: int, num_sites: int) -> KeyDirectory:
    """Every simulated site enrolled, as a coordinator's directory would hold them; the
    keys are derived as sites say hello, so memory follows the sites sampled."""
    return KeyDirectory(SimulatedRegistry(seed, num_sites))
