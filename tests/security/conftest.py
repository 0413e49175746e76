"""Shared fixtures: identities are costly-ish to make, so one set serves the whole run.

The provider under test is ``$FEDGE_CRYPTO_PROVIDER`` (default ``cryptography``): with
``FEDGE_CRYPTO_PROVIDER=oqs`` and a liboqs build, the whole suite runs on liboqs. Tests that
need a particular provider ask for it by name.
"""

from __future__ import annotations

import ctypes.util
import logging
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedge.security import KeyDirectory, Provider, SiteIdentity, get_provider
from fedge.security import _provider as provider_module

SHARED_VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
STANDIN_SOURCE = Path(__file__).with_name("standin_oqs.py")


def shared_vector(name: str) -> Path:
    """A file of ``../shared/vectors``; skip (CI has it) when the checkout lacks it."""
    path = SHARED_VECTORS / name
    if not path.exists():
        pytest.skip(f"{path} absent: the external vectors live in ../shared next to the repo")
    return path


@pytest.fixture(scope="session")
def provider() -> Provider:
    """The provider the suite runs on: ``$FEDGE_CRYPTO_PROVIDER``, else ``cryptography``."""
    return get_provider()


@pytest.fixture(scope="session")
def site(provider: Provider) -> SiteIdentity:
    return SiteIdentity.generate(provider)


@pytest.fixture(scope="session")
def other_site(provider: Provider) -> SiteIdentity:
    return SiteIdentity.generate(provider)


@pytest.fixture(scope="session")
def coordinator(provider: Provider) -> SiteIdentity:
    return SiteIdentity.generate(provider)


@pytest.fixture
def directory(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, provider: Provider
) -> KeyDirectory:
    directory = KeyDirectory(grace_seconds=100.0, provider=provider)
    for identity in (site, other_site, coordinator):
        directory.register(identity.public_keys(), now=0.0)
    return directory


# --- the stand-in for liboqs-python (tests/security/standin_oqs.py) -----------------------


def loadable_library() -> Path:
    """A shared library this process has loaded: a file the dynamic loader accepts.

    It stands in for liboqs.so in install layouts; glibc hands back the loaded copy (same
    SONAME), so loading it again changes nothing."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("install layouts are built from /proc/self/maps (Linux)")
    loaded = {line.split()[-1] for line in maps.read_text().splitlines() if ".so" in line}
    for name in ("libm.so", "libz.so", "libc.so"):
        for path in sorted(loaded):
            if Path(path).name.startswith(name) and Path(path).is_file():
                return Path(path)
    pytest.skip("no system shared library to stand in for liboqs.so")


@dataclass
class OqsStandin:
    """An environment where liboqs-python can only be the stand-in and cannot clone."""

    root: Path
    home: Path
    monkeypatch: pytest.MonkeyPatch

    def place_library(self, lib_dir: Path, name: str = "liboqs.so") -> Path:
        lib_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copyfile(loadable_library(), lib_dir / name))

    def install(self) -> Path:
        """A loadable layout: ``$OQS_INSTALL_PATH/lib/liboqs.so``."""
        prefix = self.root / "liboqs"
        self.place_library(prefix / "lib")
        self.monkeypatch.setenv("OQS_INSTALL_PATH", str(prefix))
        return prefix

    def provider(self) -> Provider:
        self.install()
        return get_provider("oqs")

    @property
    def module(self) -> Any:
        """The imported stand-in (``oqs.oqs``): its counters and fault switches."""
        return sys.modules["oqs.oqs"]

    @property
    def clone_attempts(self) -> list[str]:
        log = self.home / "oqs-clone-attempts.log"
        return log.read_text().splitlines() if log.exists() else []


def _oqs_modules() -> dict[str, Any]:
    return {k: v for k, v in sys.modules.items() if k == "oqs" or k.startswith("oqs.")}


@pytest.fixture
def oqs_standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OqsStandin]:
    """The stand-in ``oqs`` first on ``sys.path``; HOME in tmp, no git on PATH, no system
    liboqs, and a fresh provider cache. Everything is put back afterwards."""
    home, empty_bin, site_packages = tmp_path / "home", tmp_path / "bin", tmp_path / "site"
    for folder in (home, empty_bin, site_packages / "oqs"):
        folder.mkdir(parents=True)
    (site_packages / "oqs" / "__init__.py").write_text("from oqs.oqs import *  # noqa: F403\n")
    shutil.copyfile(STANDIN_SOURCE, site_packages / "oqs" / "oqs.py")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("OQS_INSTALL_PATH", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.syspath_prepend(str(site_packages))
    cached = provider_module._PROVIDERS.pop("oqs", None)
    saved = _oqs_modules()
    for name in saved:
        del sys.modules[name]
    loggers = {name: logging.getLogger(name) for name in ("oqs", "oqs.oqs")}
    logger_state = {n: (lg.level, lg.propagate, list(lg.handlers)) for n, lg in loggers.items()}
    yield OqsStandin(tmp_path, home, monkeypatch)
    for name in _oqs_modules():
        del sys.modules[name]
    sys.modules.update(saved)
    provider_module._PROVIDERS.pop("oqs", None)
    if cached is not None:
        provider_module._PROVIDERS["oqs"] = cached
    for name, (level, propagate, handlers) in logger_state.items():
        loggers[name].setLevel(level)
        loggers[name].propagate = propagate
        loggers[name].handlers[:] = handlers
