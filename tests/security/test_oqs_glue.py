"""The liboqs provider's glue, against a stand-in ``oqs`` module built on ``cryptography``.

This checks fedge's side only (the library check comes first, the import banner is
swallowed, ``(ct, ss)`` is reordered, ``False`` from verify raises); the real liboqs
interop tests are in test_provider.py and run where liboqs is installed.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from fedge.security import (
    ContentType,
    InvalidSignature,
    KeyDirectory,
    OneShotOpener,
    OneShotSealer,
    SiteIdentity,
    get_provider,
)
from fedge.security import _provider as provider_module
from tests.security.helpers import handshake

FAKE_OQS = textwrap.dedent(
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

    print("liboqs-python faulthandler is disabled")  # the real one prints on import
    KEM_CALLS = []

    class KeyEncapsulation:
        def __init__(self, alg_name):
            assert alg_name == "ML-KEM-768"
            self._key = None

        def generate_keypair_seed(self, seed):
            self._key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
            return self._key.public_key().public_bytes_raw()

        def encap_secret(self, public_key):
            KEM_CALLS.append("encap")
            secret, ciphertext = mlkem.MLKEM768PublicKey.from_public_bytes(
                public_key
            ).encapsulate()
            return ciphertext, secret  # liboqs order

        def decap_secret(self, ciphertext):
            KEM_CALLS.append("decap")
            return self._key.decapsulate(ciphertext)

    class Signature:
        def __init__(self, alg_name):
            self._key = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def generate_keypair(self):
            self._key = mldsa.MLDSA65PrivateKey.generate()
            return self._key.public_key().public_bytes_raw()

        def sign_with_ctx_str(self, message, context):
            return self._key.sign(message, context)

        def verify_with_ctx_str(self, message, signature, context, public_key):
            try:
                mldsa.MLDSA65PublicKey.from_public_bytes(public_key).verify(
                    signature, message, context
                )
            except InvalidSignature:
                return False
            return True

        def export_secret_key(self):
            return b"expanded-form"
    """
)


@pytest.fixture
def fake_oqs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "oqs"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_OQS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "oqs", raising=False)
    monkeypatch.setattr(provider_module, "find_liboqs", lambda: "/opt/liboqs/lib/liboqs.so")


@pytest.mark.usefixtures("fake_oqs")
def test_import_banner_is_swallowed(capsys: pytest.CaptureFixture[str]) -> None:
    provider = get_provider("oqs")
    assert provider.name == "oqs"
    assert "liboqs-python" not in capsys.readouterr().out


@pytest.mark.usefixtures("fake_oqs")
def test_kem_order_is_normalised_and_sessions_work() -> None:
    provider = get_provider("oqs")
    key = provider.kem_from_seed("ML-KEM-768", bytes(range(64)))
    secret, ciphertext = provider.kem_public("ML-KEM-768", key.public_bytes()).encapsulate()
    assert len(secret) == 32 and len(ciphertext) == 1088
    assert key.decapsulate(ciphertext) == secret
    site, coordinator = SiteIdentity.generate(provider), SiteIdentity.generate(provider)
    directory = KeyDirectory(provider=provider)
    directory.register(site.public_keys())
    mine, theirs = handshake(site, coordinator, directory)
    assert theirs.open(mine.seal(b"up", ContentType.MODEL_UPDATE)).plaintext == b"up"
    sealed = OneShotSealer(site, provider=provider).seal(
        coordinator.public_keys(), b"one-shot", ContentType.CONTROL
    )
    opened = OneShotOpener(coordinator, directory, provider=provider).open(sealed)
    assert opened.plaintext == b"one-shot"
    assert {"encap", "decap"} <= set(sys.modules["oqs"].KEM_CALLS)


@pytest.mark.usefixtures("fake_oqs")
def test_native_signatures_and_false_verification() -> None:
    provider = get_provider("oqs")
    signer = provider.sig_generate("ML-DSA-65")
    assert signer.private_bytes() == b"expanded-form"
    signature = signer.sign(b"m", b"ctx")
    provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"ctx")
    with pytest.raises(InvalidSignature):
        provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"n", b"ctx")
    with pytest.raises(InvalidSignature, match="3309"):
        provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature[:-1], b"m", b"ctx")
