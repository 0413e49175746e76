"""Shared fixtures: identities are costly-ish to make, so one set serves the whole run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.security import KeyDirectory, SiteIdentity

SHARED_VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"


def shared_vector(name: str) -> Path:
    """A file of ``../shared/vectors``; skip (CI has it) when the checkout lacks it."""
    path = SHARED_VECTORS / name
    if not path.exists():
        pytest.skip(f"{path} absent: the external vectors live in ../shared next to the repo")
    return path


@pytest.fixture(scope="session")
def site() -> SiteIdentity:
    return SiteIdentity.generate()


@pytest.fixture(scope="session")
def other_site() -> SiteIdentity:
    return SiteIdentity.generate()


@pytest.fixture(scope="session")
def coordinator() -> SiteIdentity:
    return SiteIdentity.generate()


@pytest.fixture
def directory(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity
) -> KeyDirectory:
    directory = KeyDirectory(grace_seconds=100.0)
    for identity in (site, other_site, coordinator):
        directory.register(identity.public_keys(), now=0.0)
    return directory
