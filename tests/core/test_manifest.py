"""The policy manifest: it round-trips, and a missing or mistyped field is refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fedge.core import (
    ENERGY_ONNX,
    MANIFEST_FORMAT,
    SLICE_ONNX,
    ManifestError,
    PolicyFile,
    PolicyManifest,
    policy_version,
)

DIGEST = "0" * 64


def manifest() -> PolicyManifest:
    return PolicyManifest(
        version=policy_version([b"energy", b"slices"]),
        energy=PolicyFile(ENERGY_ONNX, DIGEST, ("a", "b"), ("active", "deep_sleep")),
        slices=PolicyFile(SLICE_ONNX, DIGEST, ("c",), ("embb", "unreserved")),
        details={"sites": ["s1"], "headroom": 0.84},
    )


def test_round_trip_through_json() -> None:
    doc = json.loads(json.dumps(manifest().to_dict()))
    assert doc["format"] == MANIFEST_FORMAT and doc["energy"]["modes"] == ["active", "deep_sleep"]
    assert PolicyManifest.from_dict(doc) == manifest()


def test_the_version_is_a_digest_of_the_files_in_order() -> None:
    v = policy_version([b"energy", b"slices"])
    assert len(v) == 16 and v == policy_version([b"energy", b"slices"])
    assert v != policy_version([b"slices", b"energy"])


def _broken(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(manifest().to_dict())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), 2, "format"),
        (("format",), KeyError, "format"),
        (("version",), 7, "version"),
        (("version",), "short", "version"),
        (("energy",), KeyError, "energy must be an object"),
        (("slices",), [1], "slices must be an object"),
        (("energy", "file"), "../../etc/passwd", "plain file name"),
        (("energy", "file"), ".hidden", "plain file name"),
        (("slices", "file"), 3, "plain file name"),
        (("energy", "sha256"), "abc", "sha256"),
        (("energy", "obs"), [], "energy.obs"),
        (("energy", "modes"), ["a", 1], "energy.modes"),
        (("slices", "shares"), KeyError, "slices.shares"),
    ],
)
def test_bad_manifests_are_refused(path: tuple[str, ...], value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        PolicyManifest.from_dict(_broken(path, value))


def test_a_manifest_is_an_object() -> None:
    with pytest.raises(ManifestError, match="JSON object"):
        PolicyManifest.from_dict([1, 2])
