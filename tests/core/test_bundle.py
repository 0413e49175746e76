"""The model bundle: what the coordinator encodes, the agent decodes, and what it refuses."""

from __future__ import annotations

import hashlib

import pytest

from fedge.core import BundleError, ModelBundle

ONNX = b"onnx bytes"


def test_a_bundle_round_trips() -> None:
    assert ModelBundle.decode(ModelBundle("v1", ONNX).encode()) == ModelBundle("v1", ONNX)


def _with_header(header: bytes, onnx: bytes = ONNX) -> bytes:
    return b"FEDGEMDL" + len(header).to_bytes(4, "big") + header + onnx


def _header(version: str) -> bytes:
    digest = hashlib.sha256(ONNX).hexdigest()
    return f'{{"version": "{version}", "sha256": "{digest}"}}'.encode()


GOOD = ModelBundle("v1", ONNX).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"NOTAMODEL" + GOOD, "bad magic"),
        (b"FEDGEMD", "bad magic"),
        (GOOD + b"x", "do not match"),
        (GOOD[:8] + b"\xff\xff\xff\xff", "out of bounds"),
        (_with_header(b"x" * 5000), "out of bounds"),
        (_with_header(b"{nope"), "malformed"),
        (_with_header(b'{"version": "v1"}'), "malformed"),
        (_with_header(_header("../etc")), "is not"),
        (_with_header(_header("")), "is not"),
        (_with_header(b"[" * 4096), "malformed"),  # deeper than the decoder recurses
    ],
)
def test_malformed_bundles_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        ModelBundle.decode(data)


def test_a_version_that_could_name_a_path_is_not_encoded() -> None:
    with pytest.raises(BundleError, match="is not"):
        ModelBundle("../x", ONNX).encode()
