"""Model lifecycle: sealed bundles in, shadow evaluation, atomic swap, rollback.

A bundle is ``fedge.core.ModelBundle`` (the format the coordinator encodes), sealed with a
``security`` one-shot envelope (content type GLOBAL_MODEL) by the coordinator.
A candidate serves only if its shadow score on recent local data is no worse than the
serving model's by more than the configured margin.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from fedge.core import ModelBundle
from fedge.edge_agent._config import ModelConfig
from fedge.edge_agent._errors import ModelRejected, StoreError
from fedge.edge_agent._forecast import Features, Serving, shadow_score
from fedge.edge_agent._store import ModelRecord, Store
from fedge.models import ModelError, OnnxForecaster


@dataclass(frozen=True)
class Verdict:
    version: str
    accepted: bool
    reason: str
    serving_version: str | None
    serving_score: float | None
    candidate_score: float | None
    windows: int

    def to_json(self) -> dict[str, object]:
        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, 6)

        return {
            "v": 1,
            "version": self.version,
            "accepted": self.accepted,
            "reason": self.reason,
            "serving_version": self.serving_version,
            "serving_score": num(self.serving_score),
            "candidate_score": num(self.candidate_score),
            "windows": self.windows,
        }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_model(path: Path, threads: int = 1) -> OnnxForecaster:
    try:
        return OnnxForecaster(path, threads=threads)
    except ModelError as exc:
        raise ModelRejected(str(exc)) from exc


class ModelManager:
    """Owns which model serves; the store's ``models`` table is the durable truth."""

    def __init__(self, store: Store, config: ModelConfig) -> None:
        self.store = store
        self.config = config
        self.serving: Serving | None = None
        try:
            config.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{config.dir}: cannot create model directory: {exc}") from exc

    def load_serving(self) -> Serving | None:
        """Serve what the store says; on first start, the configured initial model."""
        record = self.store.serving()
        if record is None and self.config.initial is not None:
            data = self.config.initial.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            version = f"initial-{digest[:12]}"
            path = self.config.dir / f"{version}.onnx"
            _write_atomic(path, data)
            load_model(path)
            self.store.record_model(version, path, digest, serve=True, reason="initial model")
            record = self.store.serving()
        if record is None:
            self.serving = None
        elif self.serving is None or self.serving.version != record.version:
            self.serving = Serving(record.version, load_model(record.path, self.config.threads))
        return self.serving

    def consider(self, bundle: ModelBundle, data: list[Features]) -> Verdict:
        """Shadow-evaluate a candidate; serve it (atomically) or record why not."""
        if self.store.model(bundle.version) is not None:
            return self._reject(
                bundle, "version already known to this agent", None, None, 0, record=False
            )
        if len(bundle.onnx) > self.config.max_model_bytes:
            return self._reject(
                bundle, f"model is {len(bundle.onnx)} bytes, over the limit", None, None, 0
            )
        path = self.config.dir / f"{bundle.version}.onnx"
        _write_atomic(path, bundle.onnx)
        try:
            candidate = load_model(path, self.config.threads)
        except ModelRejected as exc:
            path.unlink(missing_ok=True)
            return self._reject(bundle, str(exc), None, None, 0)
        digest = hashlib.sha256(bundle.onnx).hexdigest()
        current = self.serving
        if current is None:
            self.store.record_model(
                bundle.version, path, digest, serve=True, reason="no model was serving"
            )
            self.serving = Serving(bundle.version, candidate)
            return Verdict(bundle.version, True, "no model was serving", None, None, None, 0)
        spec = current.model.spec
        serving_score, n = shadow_score(current.model, data, spec.beta_under, spec.beta_over)
        candidate_score, _ = shadow_score(candidate, data, spec.beta_under, spec.beta_over)
        if n < self.config.min_shadow_windows:
            path.unlink(missing_ok=True)
            return self._reject(
                bundle,
                f"only {n} local windows for shadow evaluation (need {self.config.min_shadow_windows})",
                serving_score,
                candidate_score,
                n,
                current.version,
            )
        if not math.isfinite(candidate_score):
            path.unlink(missing_ok=True)
            return self._reject(
                bundle,
                "candidate produced non-finite forecasts",
                serving_score,
                candidate_score,
                n,
                current.version,
            )
        limit = serving_score * (1.0 + self.config.shadow_margin)
        if candidate_score > limit:
            path.unlink(missing_ok=True)
            return self._reject(
                bundle,
                f"shadow score {candidate_score:.4f} is worse than serving {serving_score:.4f} "
                f"by more than {self.config.shadow_margin:.0%}",
                serving_score,
                candidate_score,
                n,
                current.version,
            )
        self.store.record_model(
            bundle.version,
            path,
            digest,
            serve=True,
            serving_score=serving_score,
            candidate_score=candidate_score,
            reason="passed shadow gate",
        )
        self.serving = Serving(bundle.version, candidate)  # one reference swap: atomic
        return Verdict(
            bundle.version,
            True,
            "passed shadow gate",
            current.version,
            serving_score,
            candidate_score,
            n,
        )

    def _reject(
        self,
        bundle: ModelBundle,
        reason: str,
        serving_score: float | None,
        candidate_score: float | None,
        windows: int,
        serving_version: str | None = None,
        *,
        record: bool = True,
    ) -> Verdict:
        if record:
            self.store.record_model(
                bundle.version,
                self.config.dir / f"{bundle.version}.onnx",
                hashlib.sha256(bundle.onnx).hexdigest(),
                serve=False,
                serving_score=serving_score,
                candidate_score=candidate_score,
                reason=reason,
            )
        return Verdict(
            bundle.version, False, reason, serving_version, serving_score, candidate_score, windows
        )


def rollback(store: Store) -> ModelRecord:
    """Serve the previously served model again (``fedge agent rollback``)."""
    retired = [m for m in store.models() if m.state == "retired"]
    if retired:
        target = max(retired, key=lambda m: m.serving_since or 0.0)
        if not target.path.is_file():
            raise ModelRejected(
                f"rollback target {target.version}: model file {target.path} is gone"
            )
    try:
        return store.rollback()
    except StoreError as exc:
        raise ModelRejected(f"rollback refused: {exc}") from exc
