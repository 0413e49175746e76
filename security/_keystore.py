"""Site key files, encrypted at rest with a key-encryption key (KEK) from an env var or file.

The KEK (a passphrase or random bytes) goes through scrypt into an AES-256-GCM key; the
file header is bound as associated data, so no field can be changed unnoticed.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fedge.security._composite import PRIVATE_KEY_SIZE, CompositeSigningKey
from fedge.security._errors import InvalidKey, KeyStoreError
from fedge.security._identity import SITE_ID_SIZE, SiteIdentity
from fedge.security._provider import Provider
from fedge.security._xwing import SEED_SIZE, XWingPrivateKey

KEK_ENV: Final = "FEDGE_KEK"
MAGIC: Final = b"FEDGEKEY"
VERSION: Final = 1
KDF_SCRYPT: Final = 1
DEFAULT_LOG2_N: Final = 15
_HEADER = struct.Struct(">8sBBBBB16s12s")
_GEN = struct.Struct(">I")
_KEYS_SIZE = _GEN.size + PRIVATE_KEY_SIZE + SEED_SIZE


def read_kek(kek_file: Path | None = None) -> bytes:
    """The KEK from ``kek_file`` if given, else from ``$FEDGE_KEK``."""
    if kek_file is not None:
        try:
            kek = kek_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise KeyStoreError(f"cannot read key-encryption key file {kek_file}") from exc
    else:
        kek = os.environ.get(KEK_ENV, "").encode()
    if len(kek) < 8:
        raise KeyStoreError(
            f"no usable key-encryption key: set ${KEK_ENV} or pass --kek-file (8 bytes or more)"
        )
    return kek


def _wrap_key(kek: bytes, salt: bytes, log2_n: int, r: int, p: int) -> AESGCM:
    if not 10 <= log2_n <= 20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise KeyStoreError("key file has out-of-range scrypt parameters")
    return AESGCM(Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(kek))


def _keys_bytes(identity: SiteIdentity) -> bytes:
    return (
        _GEN.pack(identity.generation)
        + identity.signing_key.private_bytes()
        + identity.kem_key.seed_bytes()
    )


def encode_identity(identity: SiteIdentity) -> bytes:
    """Plaintext layout: site id, current keys, flag, previous keys if kept."""
    body = identity.site_id + _keys_bytes(identity)
    if identity.previous is None:
        return body + b"\x00"
    return body + b"\x01" + _keys_bytes(identity.previous)


def decode_identity(data: bytes, provider: Provider | None = None) -> SiteIdentity:
    if len(data) not in (SITE_ID_SIZE + _KEYS_SIZE + 1, SITE_ID_SIZE + 2 * _KEYS_SIZE + 1):
        raise KeyStoreError("key file payload has the wrong size")
    site_id = data[:SITE_ID_SIZE]

    def keys(at: int, previous: SiteIdentity | None) -> SiteIdentity:
        (generation,) = _GEN.unpack_from(data, at)
        sig = data[at + 4 : at + 4 + PRIVATE_KEY_SIZE]
        seed = data[at + 4 + PRIVATE_KEY_SIZE : at + _KEYS_SIZE]
        try:
            return SiteIdentity(
                site_id,
                generation,
                CompositeSigningKey(sig, provider),
                XWingPrivateKey(seed, provider),
                previous,
            )
        except InvalidKey as exc:
            raise KeyStoreError("key file holds unusable key material") from exc

    flag_at = SITE_ID_SIZE + _KEYS_SIZE
    has_previous = len(data) > flag_at + 1
    if data[flag_at] != int(has_previous):
        raise KeyStoreError("key file payload is malformed")
    previous = keys(flag_at + 1, None) if has_previous else None
    return keys(SITE_ID_SIZE, previous)


def save_identity(
    path: Path,
    identity: SiteIdentity,
    kek: bytes,
    *,
    overwrite: bool = False,
    log2_n: int = DEFAULT_LOG2_N,
) -> None:
    """Write the key file atomically with mode 0600; refuse to clobber unless told."""
    if path.exists() and not overwrite:
        raise KeyStoreError(f"{path} exists; pass --force to replace it")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _HEADER.pack(MAGIC, VERSION, KDF_SCRYPT, log2_n, 8, 1, salt, nonce)
    blob = header + _wrap_key(kek, salt, log2_n, 8, 1).encrypt(
        nonce, encode_identity(identity), header
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyStoreError(f"cannot write key file {path}: {exc.strerror}") from exc


def load_identity(path: Path, kek: bytes, provider: Provider | None = None) -> SiteIdentity:
    """Read and decrypt a key file; refuse one that others can read, like ssh does."""
    try:
        mode = path.stat().st_mode
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyStoreError(f"no key file at {path}; run `fedge keys init` first") from exc
    except OSError as exc:
        raise KeyStoreError(f"cannot read key file {path}: {exc.strerror}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise KeyStoreError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600"
        )
    if len(blob) < _HEADER.size + 16:
        raise KeyStoreError(f"{path} is not a fedge key file")
    magic, version, kdf, log2_n, r, p, salt, nonce = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != VERSION or kdf != KDF_SCRYPT:
        raise KeyStoreError(f"{path} is not a version-{VERSION} fedge key file")
    header = blob[: _HEADER.size]
    try:
        plain = _wrap_key(kek, salt, log2_n, r, p).decrypt(nonce, blob[_HEADER.size :], header)
    except InvalidTag as exc:
        raise KeyStoreError("wrong key-encryption key, or the key file was altered") from exc
    return decode_identity(plain, provider)
