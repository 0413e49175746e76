"""Model lifecycle: sealed bundles in, shadow evaluation, atomic swap, rollback.

A bundle is ``fedge.core.ModelBundle`` (the format the coordinator encodes), sealed with a
``security`` one-shot envelope (content type GLOBAL_MODEL) by the coordinator.
A candidate serves only if its shadow score on recent local data is no worse than the
serving model's by more than the configured margin. With ``[model] personalise`` each
cell's calibration is fitted again for both models on the same days before they are
scored (edge_agent._personal), so the gate compares like with like.

Bundles come off the network: a candidate that cannot be loaded, whose graph disagrees with
its own spec, that does not fit what the agent can feed it, or that fails while it is
scored, is a recorded rejection with its reason, never an exception for the agent.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.core import TARGET_INDEX, ModelBundle
from fedge.edge_agent._config import ModelConfig
from fedge.edge_agent._errors import ModelRejected, StoreError
from fedge.edge_agent._forecast import WINDOW_STEPS, Features, Predictor, Serving, shadow_score
from fedge.edge_agent._personal import fit_cells, load_personal, save_personal
from fedge.edge_agent._store import ModelRecord, Store
from fedge.models import ModelError, OnnxForecaster, OutputCalibration

#: Longest reason kept in the store and a verdict (a runtime's message can be long).
REASON_CHARS = 300


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


def load_model(path: Path, threads: int = 1, max_lookback: int = WINDOW_STEPS) -> OnnxForecaster:
    """A model the agent can serve: it loads, its graph matches its spec, and it forecasts
    finite (1, horizon, targets) values from a probe window shaped as the agent builds them."""
    try:
        model = OnnxForecaster(path, threads=threads)
        check_servable(model, max_lookback)
    except ModelError as exc:
        raise ModelRejected(str(exc)) from exc
    return model


def check_servable(model: Predictor, max_lookback: int = WINDOW_STEPS) -> None:
    """Raise ``ModelError`` unless the agent can feed ``model`` and read its forecasts.

    The agent builds each model's input from that model's own spec, so lookback, horizon
    and the site-profile features may differ from the serving model's; what must hold is
    that the window fits the agent's per-cell history and that the output carries the
    targets the shadow gate and the forecasts compare."""
    spec = model.spec
    if spec.lookback > max_lookback:
        raise ModelError(
            f"lookback {spec.lookback} is longer than the {max_lookback} steps the agent "
            "keeps per cell"
        )
    probe = np.zeros((1, spec.lookback, spec.n_features), dtype=np.float32)
    out = np.asarray(model.predict(probe))
    want = (1, spec.horizon, len(TARGET_INDEX))
    if out.shape != want:
        raise ModelError(f"forecast shape {out.shape} on a probe window, expected {want}")
    if not np.isfinite(out).all():
        raise ModelError("non-finite forecast on a probe window")


class ModelManager:
    """Owns which model serves; the store's ``models`` table is the durable truth."""

    def __init__(
        self,
        store: Store,
        config: ModelConfig,
        *,
        max_lookback: int = WINDOW_STEPS,
    ) -> None:
        self.store = store
        self.config = config
        self.max_lookback = max_lookback
        self.serving: Serving | None = None
        # Held while a model is judged and swapped (off the broker thread), and by the
        # broker thread before it reloads what the store says serves: one swap at a time.
        self.lock = threading.Lock()
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
            load_model(path, max_lookback=self.max_lookback)
            self.store.record_model(version, path, digest, serve=True, reason="initial model")
            record = self.store.serving()
        if record is None:
            self.serving = None
        elif self.serving is None or self.serving.version != record.version:
            model = load_model(record.path, self.config.threads, self.max_lookback)
            personal = (
                load_personal(self.store, record.version, model) if self.config.personalise else {}
            )
            self.serving = Serving(record.version, model, personal)
        return self.serving

    def consider(
        self, bundle: ModelBundle, data: list[Features], store: Store | None = None
    ) -> Verdict:
        """Shadow-evaluate a candidate; serve it (atomically) or record why not.

        ``store``: the judging thread's own connection to the same store file (the
        uplink's); the caller holds ``lock``."""
        store = store or self.store
        if store.model(bundle.version) is not None:
            return self._reject(
                store, bundle, "version already known to this agent", None, None, 0, record=False
            )
        if len(bundle.onnx) > self.config.max_model_bytes:
            return self._reject(
                store, bundle, f"model is {len(bundle.onnx)} bytes, over the limit", None, None, 0
            )
        path = self.config.dir / f"{bundle.version}.onnx"
        _write_atomic(path, bundle.onnx)
        try:
            candidate = load_model(path, self.config.threads, self.max_lookback)
        except ModelRejected as exc:
            path.unlink(missing_ok=True)  # the agent's own paths stay out of the verdict
            return self._reject(store, bundle, str(exc).removeprefix(f"{path}: "), None, None, 0)
        digest = hashlib.sha256(bundle.onnx).hexdigest()
        current = self.serving
        personalise = self.config.personalise
        if current is None:
            try:
                personal = fit_cells(candidate, data) if personalise else {}
            except ModelError:
                personal = {}  # nothing serves: the global forecast is better than none
            store.record_model(
                bundle.version, path, digest, serve=True, reason="no model was serving"
            )
            if personalise:
                save_personal(store, bundle.version, personal)
            self.serving = Serving(bundle.version, candidate, personal)
            return Verdict(bundle.version, True, "no model was serving", None, None, None, 0)
        spec = current.model.spec
        # like with like: both models' calibrations fitted on the same days, just now
        serving_personal: dict[str, OutputCalibration] | None = None
        if personalise:
            try:
                serving_personal = fit_cells(current.model, data)
            except ModelError as exc:
                path.unlink(missing_ok=True)
                return self._reject(
                    store, bundle, f"serving model failed personalisation: {exc}", None, None, 0,
                    current.version,
                )  # fmt: skip
        try:
            serving_score, n = shadow_score(
                current.model, data, spec.beta_under, spec.beta_over, serving_personal
            )
        except ModelError as exc:
            path.unlink(missing_ok=True)
            return self._reject(
                store, bundle, f"serving model failed shadow evaluation: {exc}", None, None, 0,
                current.version,
            )  # fmt: skip
        candidate_personal: dict[str, OutputCalibration] = {}
        try:
            if personalise:
                candidate_personal = fit_cells(candidate, data)
            candidate_score, _ = shadow_score(
                candidate, data, spec.beta_under, spec.beta_over,
                candidate_personal if personalise else None,
            )  # fmt: skip
        except ModelError as exc:
            path.unlink(missing_ok=True)
            return self._reject(
                store, bundle, f"candidate failed shadow evaluation: {exc}", serving_score, None, n,
                current.version,
            )  # fmt: skip
        if n < self.config.min_shadow_windows:
            path.unlink(missing_ok=True)
            return self._reject(
                store,
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
                store,
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
                store,
                bundle,
                f"shadow score {candidate_score:.4f} is worse than serving {serving_score:.4f} "
                f"by more than {self.config.shadow_margin:.0%}",
                serving_score,
                candidate_score,
                n,
                current.version,
            )
        store.record_model(
            bundle.version,
            path,
            digest,
            serve=True,
            serving_score=serving_score,
            candidate_score=candidate_score,
            reason="passed shadow gate",
        )
        if personalise:
            save_personal(store, bundle.version, candidate_personal)
        # one reference swap, the model with its calibrations: atomic
        self.serving = Serving(bundle.version, candidate, candidate_personal)
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
        store: Store,
        bundle: ModelBundle,
        reason: str,
        serving_score: float | None,
        candidate_score: float | None,
        windows: int,
        serving_version: str | None = None,
        *,
        record: bool = True,
    ) -> Verdict:
        reason = reason[:REASON_CHARS]
        if record:
            store.record_model(
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
