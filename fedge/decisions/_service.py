"""Serving the decision policies: batched ONNX Runtime inference, no torch.

A policy directory holds the two ONNX policies and the manifest ``fedge.core`` defines
(written by ``fedge decisions train``); its ``version`` is a digest of both ONNX files,
checked on load, and every answer carries the version that made it. Observations are
checked before they reach ONNX Runtime, whose own errors are untyped.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import (
    ENERGY_OUTPUTS,
    MANIFEST,
    OBS_INPUT,
    SLICE_OUTPUT,
    ManifestError,
    PolicyManifest,
    policy_version,
)
from fedge.decisions._errors import DecisionInputError, PolicyError, UnknownSiteError


@dataclass(frozen=True)
class StrategicDecision:
    site_ids: tuple[str, ...]
    modes: NDArray[np.int64]  # index into ``mode_names``
    mode_names: tuple[str, ...]
    version: str


@dataclass(frozen=True)
class TacticalDecision:
    site_ids: tuple[str, ...]
    shares: NDArray[np.float32]  # (n, 4): eMBB, URLLC, mMTC, unreserved; rows sum to 1
    version: str


class _Policies:
    """One loaded, verified policy directory."""

    def __init__(self, directory: Path, threads: int) -> None:
        import onnxruntime as ort

        path = directory / MANIFEST
        try:
            manifest = PolicyManifest.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, ManifestError) as exc:
            raise PolicyError(f"{path}: not a readable policy manifest: {exc}") from exc
        self.version = manifest.version
        self.mode_names = manifest.energy.labels
        self.energy_dim = len(manifest.energy.obs)
        self.slice_dim = len(manifest.slices.obs)
        self.shares_dim = len(manifest.slices.labels)
        blobs, sessions = [], []
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        for policy in (manifest.energy, manifest.slices):
            try:
                blob = (directory / policy.file).read_bytes()
            except OSError as exc:
                raise PolicyError(f"{directory / policy.file}: {exc}") from exc
            if hashlib.sha256(blob).hexdigest() != policy.sha256:
                raise PolicyError(f"{policy.file}: does not match the manifest's digest")
            blobs.append(blob)
            try:
                sessions.append(
                    ort.InferenceSession(
                        blob, sess_options=opts, providers=["CPUExecutionProvider"]
                    )
                )
            except Exception as exc:  # onnxruntime raises its own untyped exceptions
                raise PolicyError(f"{policy.file}: not a loadable ONNX model: {exc}") from exc
        if policy_version(blobs) != self.version:
            raise PolicyError(f"{path}: version {self.version} does not match the policy files")
        self.energy, self.slices = sessions


class DecisionService:
    """Strategic modes and tactical slice shares for the sites it is told about."""

    def __init__(self, policy_dir: Path, sites: Iterable[str], threads: int = 1) -> None:
        self._threads = threads
        self._policies = _Policies(Path(policy_dir), threads)
        self._sites = set(sites)
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self._policies.version

    @property
    def mode_names(self) -> tuple[str, ...]:
        return self._policies.mode_names

    @property
    def sites(self) -> frozenset[str]:
        return frozenset(self._sites)

    def add_sites(self, sites: Iterable[str]) -> None:
        with self._lock:
            self._sites.update(sites)

    def remove_sites(self, sites: Iterable[str]) -> None:
        with self._lock:
            self._sites.difference_update(sites)

    def reload(self, policy_dir: Path) -> str:
        """Swap in a new policy directory once it has loaded and verified; returns its version."""
        fresh = _Policies(Path(policy_dir), self._threads)
        with self._lock:
            self._policies = fresh
        return fresh.version

    def strategic(self, site_ids: Sequence[str], obs: Any) -> StrategicDecision:
        """Power modes for ``site_ids`` from their energy observations (n, 17)."""
        p = self._policies
        ids, x = self._check(site_ids, obs, p.energy_dim, "energy")
        mode = p.energy.run([ENERGY_OUTPUTS[0]], {OBS_INPUT: x})[0]
        return StrategicDecision(ids, np.asarray(mode, dtype=np.int64), p.mode_names, p.version)

    def tactical(self, site_ids: Sequence[str], obs: Any) -> TacticalDecision:
        """PRB shares for ``site_ids`` from their slice observations (n, 14)."""
        p = self._policies
        ids, x = self._check(site_ids, obs, p.slice_dim, "slice")
        shares = p.slices.run([SLICE_OUTPUT], {OBS_INPUT: x})[0]
        return TacticalDecision(ids, np.asarray(shares, dtype=np.float32), p.version)

    def _check(
        self, site_ids: Sequence[str], obs: Any, dim: int, what: str
    ) -> tuple[tuple[str, ...], NDArray[np.float32]]:
        if isinstance(site_ids, str):
            raise DecisionInputError("site_ids must be a sequence of site ids, not one string")
        ids = tuple(site_ids)
        try:
            x = np.asarray(obs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DecisionInputError(f"{what} observations are not numeric: {exc}") from exc
        if x.ndim != 2 or x.shape[1] != dim:
            raise DecisionInputError(f"{what} observations must be (n, {dim}), got {x.shape}")
        if x.shape[0] != len(ids):
            raise DecisionInputError(f"{len(ids)} site ids for {x.shape[0]} observation rows")
        if x.shape[0] == 0:
            raise DecisionInputError("no sites to decide for")
        if not np.isfinite(x).all():
            rows = np.nonzero(~np.isfinite(x).all(axis=1))[0][:5].tolist()
            raise DecisionInputError(f"{what} observations hold NaN or inf (rows {rows})")
        unknown = [s for s in ids if s not in self._sites]
        if unknown:
            raise UnknownSiteError(f"unknown site(s): {', '.join(unknown[:5])}")
        return ids, np.ascontiguousarray(x)
