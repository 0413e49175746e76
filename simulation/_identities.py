"""Seed-derived site and server identities: the simulation's stand-in for enrollment.

Every simulated site's keys and the server's are a function of a per-run key seed that
the harness holds in-process and hands its own workers out of band (never in a Flower
message). A deployment never derives keys: each site has its own key file
(``fedge keys init``) and the coordinator exports the enrolled directory for each run.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from fedge.security import (
    CompositeSigningKey,
    KeyDirectory,
    SiteIdentity,
    XWingPrivateKey,
    fingerprint,
)


@lru_cache(maxsize=4096)
def simulated_identity(seed: int, name: str) -> SiteIdentity:
    """A deterministic identity for the simulation (never for a real site)."""
    material = hashlib.shake_256(f"fedge-sim-identity|{seed}|{name}".encode()).digest(96)
    signing = CompositeSigningKey(material[:64])
    return SiteIdentity(
        fingerprint(signing.public_key().public_bytes()),
        0,
        signing,
        XWingPrivateKey(material[64:]),
    )


def site_name(index: int) -> str:
    return f"site-{index}"


def simulated_directory(seed: int, num_sites: int) -> KeyDirectory:
    """Every simulated site enrolled, as a coordinator's directory would hold them."""
    directory = KeyDirectory()
    for i in range(num_sites):
        directory.register(simulated_identity(seed, site_name(i)).public_keys())
    return directory
