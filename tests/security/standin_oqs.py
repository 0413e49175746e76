"""A stand-in for liboqs-python 0.16's ``oqs.oqs`` module, built on ``cryptography``.

No liboqs build exists where the suite runs, so ``oqs_standin`` (conftest) copies this file
to ``<tmp>/oqs/oqs.py`` and imports it as ``oqs``. It behaves as liboqs-python does where
fedge relies on it or must defend against it:

- the loader: with ``$OQS_INSTALL_PATH`` set it loads only ``$OQS_INSTALL_PATH/lib/liboqs.so``,
  otherwise ``~/_oqs/lib/liboqs.so`` then ``ctypes.util.find_library("oqs")``; on a miss it
  logs a countdown, runs ``git clone`` (of a path under ``$HOME``, so never the network)
  and, when that fails, raises ``SystemExit(1)``; every attempt is appended to
  ``$HOME/oqs-clone-attempts.log``;
- the import banner: a line printed to stdout and an INFO line on the ``oqs.oqs`` logger,
  which has its own stdout handler;
- ``encap_secret`` returns ``(ciphertext, secret)``; failures are bare ``RuntimeError``
  (a public key failing the modulus check, an over-long context);
- ``KeyEncapsulation`` and ``Signature`` hold their secret key until ``free()`` or the end
  of a ``with`` block and have no ``__del__``: ``LIVE`` keeps every object not yet freed,
  as native memory would be kept.

It also records every native call in ``CALLS`` and fails the calls named in ``FAULTS``
with liboqs' ``RuntimeError``, for the paths no well-formed input reaches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import subprocess
import tempfile
from collections import deque
from pathlib import Path
from sys import stdout
from types import TracebackType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

__all__ = [
    "CALLS",
    "CLONE_LOG",
    "COUNTS",
    "FAULTS",
    "LIVE",
    "KeyEncapsulation",
    "MechanismNotSupportedError",
    "Signature",
    "get_enabled_kem_mechanisms",
    "get_enabled_sig_mechanisms",
    "oqs_version",
]

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
logger.addHandler(logging.StreamHandler(stdout))

CLONE_LOG: Final = "oqs-clone-attempts.log"
#: (call, algorithm) of the latest native calls, in order: keypair, encaps, decaps, sign,
#: verify. Bounded, so that the stand-in's own memory stays flat in long runs.
CALLS: deque[tuple[str, str]] = deque(maxlen=10_000)
#: Native objects made, freed, and freed with their secret key cleansed.
COUNTS: dict[str, int] = {"created": 0, "freed": 0, "cleansed": 0}
#: Objects not yet freed, by id: what would stay in native memory.
LIVE: dict[int, _Native] = {}
#: Calls that fail with liboqs' RuntimeError while named here.
FAULTS: set[str] = set()

#: name -> (private key class, public key class, secret key size)
_KEMS: Final[dict[str, tuple[Any, Any, int]]] = {
    "ML-KEM-768": (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey, 2400),
    "ML-KEM-1024": (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey, 3168),
}
_SIGS: Final[dict[str, tuple[Any, Any, int]]] = {
    "ML-DSA-44": (mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey, 2560),
    "ML-DSA-65": (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey, 4032),
    "ML-DSA-87": (mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey, 4896),
}


def _candidates() -> list[str]:
    if "OQS_INSTALL_PATH" in os.environ:
        return [str(Path(os.environ["OQS_INSTALL_PATH"]).absolute() / "lib" / "liboqs.so")]
    found = ctypes.util.find_library("oqs")
    return [str(Path.home() / "_oqs" / "lib" / "liboqs.so"), *([found] if found else [])]


def _install_liboqs(target: Path) -> None:
    logger.info("liboqs not found, installing it in %s", target)
    for seconds in range(5, 0, -1):  # the real one sleeps a second per line
        logger.info("Installing in %s seconds...", seconds)
    with (Path.home() / CLONE_LOG).open("a") as attempts:
        attempts.write(f"git clone into {target}\n")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path.home() / "liboqs.git"  # never the network, whatever PATH holds
        code = subprocess.call(f"cd {tmp} && git clone --depth 1 file://{source}", shell=True)
    if code != 0:
        logger.error("Error installing liboqs.")
        raise SystemExit(1)


def _load_liboqs() -> ctypes.CDLL:
    for candidate in _candidates():
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            pass
    _install_liboqs(Path(os.environ.get("OQS_INSTALL_PATH", Path.home() / "_oqs")))
    raise SystemExit("Could not load liboqs shared library")


_liboqs = _load_liboqs()
print("liboqs-python faulthandler is disabled")
logger.info("liboqs-python 0.16.0.1 (stand-in) loaded liboqs %s", _liboqs._name)


def oqs_version() -> str:
    return "0.16.0"


def get_enabled_kem_mechanisms() -> list[str]:
    return list(_KEMS)


def get_enabled_sig_mechanisms() -> list[str]:
    return list(_SIGS)


class MechanismNotSupportedError(Exception):
    def __init__(self, alg_name: str) -> None:
        super().__init__(f"{alg_name} is not supported by OQS")
        self.alg_name = alg_name


class _Native:
    """What both wrappers share: native memory and a secret key, released only by free()."""

    def __init__(self, alg_name: str, secret_key: bytes | None, table: dict[str, Any]) -> None:
        if alg_name not in table:
            raise MechanismNotSupportedError(alg_name)
        self.alg_name = alg_name
        self._private, self._public, self._secret_size = table[alg_name]
        self.secret_key = bytearray(secret_key) if secret_key else None
        self._freed = False
        COUNTS["created"] += 1
        LIVE[id(self)] = self

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.free()

    def free(self) -> None:
        assert not self._freed, "double free"  # liboqs would corrupt its heap
        self._freed = True
        if self.secret_key is not None:
            self.secret_key[:] = bytes(len(self.secret_key))  # OQS_MEM_cleanse
            COUNTS["cleansed"] += 1
        COUNTS["freed"] += 1
        del LIVE[id(self)]

    def export_secret_key(self) -> bytes:
        assert self.secret_key is not None
        return bytes(self.secret_key)

    def _call(self, name: str) -> None:
        assert not self._freed, "use after free"
        CALLS.append((name, self.alg_name))
        if name in FAULTS:
            raise RuntimeError(f"Can not {name}")

    def _keep_seed(self, seed: bytes) -> None:
        """The stand-in's secret key: the seed, padded to liboqs' expanded size."""
        self.secret_key = bytearray(seed.ljust(self._secret_size, b"\x00"))

    def _seed(self, size: int) -> bytes:
        if self.secret_key is None:
            raise RuntimeError("no secret key")
        return bytes(self.secret_key[:size])


class KeyEncapsulation(_Native):
    def __init__(self, alg_name: str, secret_key: bytes | None = None) -> None:
        super().__init__(alg_name, secret_key, _KEMS)

    def generate_keypair_seed(self, seed: bytes) -> bytes:
        self._call("keypair")
        if len(seed) != 64:
            raise ValueError(f"Seed length must be 64 bytes, got {len(seed)} bytes")
        self._keep_seed(seed)
        public: bytes = self._private.from_seed_bytes(seed).public_key().public_bytes_raw()
        return public

    def encap_secret(self, public_key: bytes) -> tuple[bytes, bytes]:
        self._call("encaps")
        try:
            secret, ciphertext = self._public.from_public_bytes(public_key).encapsulate()
        except ValueError:
            raise RuntimeError("Can not encapsulate secret") from None
        return ciphertext, secret  # liboqs order

    def decap_secret(self, ciphertext: bytes) -> bytes:
        self._call("decaps")
        secret: bytes = self._private.from_seed_bytes(self._seed(64)).decapsulate(ciphertext)
        return secret


class Signature(_Native):
    def __init__(self, alg_name: str, secret_key: bytes | None = None) -> None:
        super().__init__(alg_name, secret_key, _SIGS)

    def generate_keypair(self) -> bytes:
        self._call("keypair")
        seed = os.urandom(32)
        self._keep_seed(seed)
        public: bytes = self._private.from_seed_bytes(seed).public_key().public_bytes_raw()
        return public

    def sign_with_ctx_str(self, message: bytes, context: bytes) -> bytes:
        self._call("sign")
        try:
            signature: bytes = self._private.from_seed_bytes(self._seed(32)).sign(message, context)
        except ValueError:
            raise RuntimeError("Can not sign message") from None
        return signature

    def verify_with_ctx_str(
        self, message: bytes, signature: bytes, context: bytes, public_key: bytes
    ) -> bool:
        self._call("verify")
        try:
            self._public.from_public_bytes(public_key).verify(signature, message, context)
        except (InvalidSignature, ValueError):
            return False
        return True
