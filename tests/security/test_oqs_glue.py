"""The liboqs provider's glue, against the stand-in ``oqs`` (tests/security/standin_oqs.py).

This checks fedge's side only: the loader guard, the silent import, typed errors, freed
native objects, and that the provider chosen is the one used. The interop and memory
checks against a real liboqs build are in test_provider.py and run where it is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from fedge.security import (
    ContentType,
    CryptographyProvider,
    DecryptionFailed,
    EnrollmentAuthority,
    Initiator,
    InvalidEnvelope,
    InvalidKey,
    InvalidSignature,
    KeyDirectory,
    OneShotOpener,
    OneShotSealer,
    Provider,
    ProviderUnavailable,
    Responder,
    SecurityError,
    SiteIdentity,
    enrollment_request,
    get_provider,
)
from fedge.security import _provider as provider_module
from fedge.security._handshake import INIT_SIZE
from tests.security.conftest import OqsStandin
from tests.security.helpers import handshake


def _kem_calls(module: Any) -> dict[str, int]:
    calls = [call for call, alg in module.CALLS if alg.startswith("ML-KEM")]
    return {name: calls.count(name) for name in ("keypair", "encaps", "decaps")}


# --- the import: silent, and never the loader's internet fallback ------------------------


def test_oqs_import_banner_is_silenced_on_stdout_and_in_the_logs(
    oqs_standin: OqsStandin, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert oqs_standin.provider().name == "oqs"
    assert capsys.readouterr().out == ""
    assert [r for r in caplog.records if r.name.startswith("oqs")] == []
    oqs_logger = logging.getLogger("oqs.oqs")
    oqs_logger.info("liboqs-python chatter")
    oqs_logger.warning("liboqs-python warning")
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records if r.name == "oqs.oqs"] == [
        "liboqs-python warning"  # warnings still reach the application's handlers
    ]


def test_oqs_layouts_that_load(oqs_standin: OqsStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = oqs_standin.install()
    assert provider_module.find_liboqs() == str(prefix / "lib" / "liboqs.so")
    monkeypatch.delenv("OQS_INSTALL_PATH")
    home_lib = oqs_standin.place_library(oqs_standin.home / "_oqs" / "lib")
    assert provider_module.find_liboqs() == str(home_lib)
    assert get_provider("oqs").name == "oqs"
    assert oqs_standin.clone_attempts == []


def test_oqs_install_path_set_ignores_a_library_in_home(oqs_standin: OqsStandin) -> None:
    """With $OQS_INSTALL_PATH set the loader never looks in ~/_oqs, so a library there
    must not count: the loader would clone liboqs and exit."""
    oqs_standin.place_library(oqs_standin.home / "_oqs" / "lib")
    oqs_standin.monkeypatch.setenv("OQS_INSTALL_PATH", str(oqs_standin.root / "empty-prefix"))
    with pytest.raises(ProviderUnavailable, match="not found"):
        get_provider("oqs")
    assert oqs_standin.clone_attempts == []
    assert provider_module.find_liboqs() is None


@pytest.mark.parametrize("in_home", [False, True], ids=["install-path", "home"])
def test_oqs_lib_folder_with_only_a_versioned_soname_does_not_count(
    oqs_standin: OqsStandin, in_home: bool
) -> None:
    prefix = oqs_standin.home / "_oqs" if in_home else oqs_standin.root / "prefix"
    oqs_standin.place_library(prefix / "lib", "liboqs.so.9")
    if not in_home:
        oqs_standin.monkeypatch.setenv("OQS_INSTALL_PATH", str(prefix))
    with pytest.raises(ProviderUnavailable, match="not found"):
        get_provider("oqs")
    assert oqs_standin.clone_attempts == []
    assert provider_module.find_liboqs() is None


def test_oqs_library_the_dynamic_loader_refuses_does_not_count(oqs_standin: OqsStandin) -> None:
    lib = oqs_standin.root / "prefix" / "lib"
    lib.mkdir(parents=True)
    (lib / "liboqs.so").write_bytes(b"not an ELF file")
    oqs_standin.monkeypatch.setenv("OQS_INSTALL_PATH", str(lib.parent))
    with pytest.raises(ProviderUnavailable, match="not found"):
        get_provider("oqs")
    assert oqs_standin.clone_attempts == []


def test_standin_loader_really_clones_and_exits_on_a_miss(oqs_standin: OqsStandin) -> None:
    """Guards the tests above: imported past the guard, the stand-in tries to clone (which
    fails here: no git on PATH) and exits, as liboqs-python does."""
    with pytest.raises(SystemExit):
        __import__("oqs")
    assert len(oqs_standin.clone_attempts) == 1


@pytest.mark.parametrize(
    "body", ["raise SystemExit(1)\n", "raise RuntimeError('No oqs shared libraries found')\n"]
)
def test_oqs_import_that_exits_or_fails_is_provider_unavailable(
    oqs_standin: OqsStandin, body: str
) -> None:
    oqs_standin.install()
    package = oqs_standin.root / "site" / "oqs"
    (package / "__init__.py").write_text(body)
    with pytest.raises(ProviderUnavailable, match="liboqs-python"):
        get_provider("oqs")


# --- typed errors ---------------------------------------------------------------------


def test_oqs_malformed_kem_public_key_is_refused_as_on_openssl(oqs_standin: OqsStandin) -> None:
    ours, theirs = CryptographyProvider(), oqs_standin.provider()
    good = ours.kem_from_seed("ML-KEM-768", bytes(64)).public_bytes()
    over_q = bytearray(good)
    over_q[0], over_q[1] = 0x01, (over_q[1] & 0xF0) | 0x0D  # first coefficient = 3329 = q
    for bad in (b"\xff" * 1184, bytes(over_q)):
        for provider in (ours, theirs):
            with pytest.raises(InvalidKey, match="does not parse"):
                provider.kem_public("ML-KEM-768", bad)
    edge = bytearray(good)
    edge[0], edge[1] = 0x00, (edge[1] & 0xF0) | 0x0D  # 3328 = q - 1 is a valid coefficient
    for provider in (ours, theirs):
        provider.kem_public("ML-KEM-768", bytes(edge)).encapsulate()


def test_oqs_responder_refuses_a_malformed_ephemeral_key_with_a_typed_error(
    oqs_standin: OqsStandin,
) -> None:
    oqs = oqs_standin.provider()
    site, coordinator = SiteIdentity.generate(oqs), SiteIdentity.generate(oqs)
    directory = KeyDirectory(provider=oqs)
    directory.register(site.public_keys())
    init = Initiator(site, coordinator.public_keys(), provider=oqs).start()
    bad = init[: INIT_SIZE - 1216] + b"\xff" * 1216
    with pytest.raises(InvalidEnvelope, match="ephemeral"):
        Responder(coordinator, directory, provider=oqs).respond(bad)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("keypair", InvalidKey),
        ("encaps", InvalidKey),
        ("decaps", DecryptionFailed),
        ("sign", InvalidSignature),
        ("verify", InvalidSignature),
    ],
)
def test_oqs_runtime_errors_become_typed_errors(
    oqs_standin: OqsStandin, fault: str, error: type[SecurityError]
) -> None:
    oqs = oqs_standin.provider()
    kem = oqs.kem_from_seed("ML-KEM-768", bytes(range(64)))
    _, ciphertext = oqs.kem_public("ML-KEM-768", kem.public_bytes()).encapsulate()
    signer = oqs.sig_generate("ML-DSA-65")
    signature = signer.sign(b"m", b"c")
    operations: dict[str, Callable[[], object]] = {
        "keypair": lambda: oqs.kem_from_seed("ML-KEM-768", bytes(64)),
        "encaps": lambda: oqs.kem_public("ML-KEM-768", kem.public_bytes()).encapsulate(),
        "decaps": lambda: kem.decapsulate(ciphertext),
        "sign": lambda: signer.sign(b"m", b"c"),
        "verify": lambda: oqs.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"c"),
    }
    oqs_standin.module.FAULTS.add(fault)
    with pytest.raises(error):
        operations[fault]()
    assert not oqs_standin.module.LIVE  # freed on the error path too


@pytest.mark.parametrize("name", ["cryptography", "oqs"])
def test_oqs_and_openssl_refuse_an_over_long_context_alike(
    oqs_standin: OqsStandin, name: str
) -> None:
    provider = oqs_standin.provider() if name == "oqs" else CryptographyProvider()
    signer = provider.sig_generate("ML-DSA-65")
    signature = signer.sign(b"m", b"x" * 255)
    provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"x" * 255)
    with pytest.raises(InvalidSignature, match="255"):
        signer.sign(b"m", b"x" * 256)
    with pytest.raises(InvalidSignature, match="255"):
        provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"x" * 256)


# --- the glue itself ------------------------------------------------------------------


def test_oqs_kem_order_is_normalised_and_sessions_work(oqs_standin: OqsStandin) -> None:
    provider = oqs_standin.provider()
    key = provider.kem_from_seed("ML-KEM-768", bytes(range(64)))
    assert key.public_bytes() == (
        CryptographyProvider().kem_from_seed("ML-KEM-768", bytes(range(64))).public_bytes()
    )
    secret, ciphertext = provider.kem_public("ML-KEM-768", key.public_bytes()).encapsulate()
    assert len(secret) == 32 and len(ciphertext) == 1088
    assert key.decapsulate(ciphertext) == secret
    site, coordinator = SiteIdentity.generate(provider), SiteIdentity.generate(provider)
    directory = KeyDirectory(provider=provider)
    directory.register(site.public_keys())
    mine, theirs = handshake(site, coordinator, directory)
    assert theirs.open(mine.seal(b"up", ContentType.MODEL_UPDATE)).plaintext == b"up"


def test_oqs_native_signatures_and_false_verification(oqs_standin: OqsStandin) -> None:
    provider = oqs_standin.provider()
    signer = provider.sig_generate("ML-DSA-65")
    assert len(signer.private_bytes()) == 4032  # liboqs' expanded form stays in liboqs
    signature = signer.sign(b"m", b"ctx")
    provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"ctx")
    CryptographyProvider().sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"ctx")
    with pytest.raises(InvalidSignature):
        provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"n", b"ctx")
    with pytest.raises(InvalidSignature, match="3309"):
        provider.sig_verify("ML-DSA-65", signer.public_bytes(), signature[:-1], b"m", b"ctx")


# --- native memory and secrets ----------------------------------------------------------


def _workload(oqs: Provider, rounds: int) -> None:
    site, coordinator = SiteIdentity.generate(oqs), SiteIdentity.generate(oqs)
    directory = KeyDirectory(provider=oqs)
    directory.register(site.public_keys())
    opener = OneShotOpener(coordinator, directory, provider=oqs)
    sealer = OneShotSealer(site, provider=oqs)
    signer = oqs.sig_generate("ML-DSA-65")
    for _ in range(rounds):
        mine, theirs = handshake(site, coordinator, directory)
        theirs.open(mine.seal(b"x", ContentType.METRICS))
        opener.open(sealer.seal(coordinator.public_keys(), b"y", ContentType.CONTROL))
        oqs.kem_public("ML-KEM-768", coordinator.kem_key.public_bytes()[:1184]).encapsulate()
        signature = signer.sign(b"m", b"")
        oqs.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"")
        with pytest.raises(InvalidEnvelope):  # an error path: encapsulation that fails
            Responder(coordinator, directory, provider=oqs).respond(
                Initiator(site, coordinator.public_keys(), provider=oqs).start()[:-1216]
                + coordinator.kem_key.public_bytes()[:1184]
                + bytes(32)
            )


def test_oqs_every_native_object_is_freed_and_its_secret_cleansed(
    oqs_standin: OqsStandin,
) -> None:
    oqs = oqs_standin.provider()
    _workload(oqs, 25)
    counts = oqs_standin.module.COUNTS
    assert counts["created"] > 25 * 8
    assert counts["freed"] == counts["created"]
    assert not oqs_standin.module.LIVE
    holding_secrets = sum(1 for call, _ in oqs_standin.module.CALLS if call in ("decaps", "sign"))
    assert counts["cleansed"] >= holding_secrets


# --- the provider chosen is the provider used -----------------------------------------------


def test_oqs_handshake_and_oneshot_do_every_kem_operation_on_the_chosen_provider(
    oqs_standin: OqsStandin,
) -> None:
    """Public keys come from ``public_keys()`` and a directory with no provider of its own,
    as in a deployment; still the oqs initiator, responder, sealer and opener use oqs."""
    oqs = oqs_standin.provider()
    module = oqs_standin.module
    site, coordinator = SiteIdentity.generate(oqs), SiteIdentity.generate(oqs)
    directory = KeyDirectory(provider=CryptographyProvider())
    directory.register(site.public_keys())
    module.CALLS.clear()
    initiator = Initiator(site, coordinator.public_keys(), provider=oqs)
    response, theirs = Responder(coordinator, directory, provider=oqs).respond(initiator.start())
    mine = initiator.finish(response)
    assert theirs.open(mine.seal(b"up", ContentType.MODEL_UPDATE)).plaintext == b"up"
    assert _kem_calls(module) == {"keypair": 1, "encaps": 3, "decaps": 3}
    module.CALLS.clear()
    sealed = OneShotSealer(site, provider=oqs).seal(
        coordinator.public_keys(), b"one-shot", ContentType.CONTROL
    )
    opened = OneShotOpener(coordinator, directory, provider=oqs).open(sealed)
    assert opened.plaintext == b"one-shot"
    assert _kem_calls(module) == {"keypair": 0, "encaps": 1, "decaps": 1}
    assert [call for call, alg in module.CALLS if alg == "ML-DSA-65"] == ["verify"]


def test_oqs_enrollment_encapsulates_on_the_chosen_provider(oqs_standin: OqsStandin) -> None:
    oqs = oqs_standin.provider()
    module = oqs_standin.module
    coordinator, newcomer = SiteIdentity.generate(oqs), SiteIdentity.generate(oqs)
    authority = EnrollmentAuthority(coordinator, KeyDirectory(), provider=oqs)
    token = authority.issue_token(now=0.0)
    module.CALLS.clear()
    request = enrollment_request(newcomer, token, coordinator.public_keys(), provider=oqs)
    assert _kem_calls(module)["encaps"] == 1
    authority.begin(request, now=1.0)
    assert _kem_calls(module) == {"keypair": 0, "encaps": 2, "decaps": 1}


def test_public_keys_parse_once_per_provider(oqs_standin: OqsStandin) -> None:
    oqs, ours = oqs_standin.provider(), CryptographyProvider()
    keys = SiteIdentity.generate(ours).public_keys()
    assert keys.kem_key(oqs) is keys.kem_key(oqs)
    assert keys.kem_key(oqs) is not keys.kem_key(ours)
    assert keys.verify_key(oqs) is keys.verify_key(oqs) is not keys.verify_key(ours)


def test_oqs_provider_is_imported_once_per_process(oqs_standin: OqsStandin) -> None:
    first = oqs_standin.provider()
    assert get_provider("oqs") is first
