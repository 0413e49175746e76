"""Per-site personalisation of a shared forecaster in closed form (numpy only).

The federated model is fitted to the fleet; a site whose load differs from the majority's
keeps a small linear correction of its own: ``forecast' = forecast + phi @ coef +
intercept``, where ``phi`` is what the shared model produced and saw (its forecast, the
latest targets, the time encodings and the site profile ahead; ``output_features``) and
the correction is fitted by ridge regression on the site's own windows. The fit weights
misses by ``beta_under`` like the forecaster's loss (an expectile regression, solved by
iteratively reweighted least squares), so personalising does not undo the deliberate
upward bias that keeps peaks covered. The ridge strength is chosen on held-out windows,
and a correction that does not beat the shared model there is not used at all: a site
like the majority keeps the federated forecast.

No torch: the edge agent fits and applies it next to ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import TARGET_INDEX
from fedge.models._errors import ModelError
from fedge.models._spec import N_KPIS, N_TARGETS, N_TIME_FEATURES, ForecastSpec

#: Ridge strengths tried (per window, on standardised features); the held-out windows pick.
RIDGES: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: A correction must beat the shared model on the held-out windows by this share.
MIN_GAIN = 0.02
#: Fewest windows a correction is fitted on; fewer and the shared model serves as is.
MIN_WINDOWS = 48
_IRLS_STEPS = 6
#: The time encodings come first as tod_sin, tod_cos (``fedge.core.TIME_FEATURE_NAMES``).
_N_CLOCK = 2
_MIN_STD = 1e-6


@dataclass(frozen=True)
class Correction:
    """A linear map from features ``phi`` (n, d) to additive corrections (n, outputs)."""

    coef: NDArray[np.float64]  # (d, outputs)
    intercept: NDArray[np.float64]  # (outputs,)
    ridge: float

    def predict(self, phi: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        if phi.ndim != 2 or phi.shape[1] != self.coef.shape[0]:
            raise ModelError(
                f"correction takes (n, {self.coef.shape[0]}) features, got {phi.shape}"
            )
        out: NDArray[np.float64] = phi.astype(np.float64) @ self.coef + self.intercept
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "ridge": self.ridge,
        }

    @classmethod
    def from_dict(cls, data: object) -> Correction:
        if not isinstance(data, dict):
            raise ModelError(f"a correction is a JSON object, got {type(data).__name__}")
        try:
            coef = np.asarray(data["coef"], dtype=np.float64)
            intercept = np.asarray(data["intercept"], dtype=np.float64)
            ridge = float(data["ridge"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"bad correction record: {exc}") from exc
        if coef.ndim != 2 or intercept.shape != (coef.shape[1],):
            raise ModelError(
                f"correction coef {coef.shape} and intercept {intercept.shape} do not agree"
            )
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise ModelError("correction holds non-finite values")
        return cls(coef, intercept, ridge)


def asymmetric_cost(err: NDArray[np.floating[Any]], beta_under: float, beta_over: float) -> float:
    """Mean weighted squared error; ``err`` = target - forecast, so a miss is ``err > 0``."""
    e = np.asarray(err, dtype=np.float64)
    return float(np.mean(np.where(e > 0, beta_under, beta_over) * e**2)) if e.size else np.nan


def _solve(
    phi: NDArray[np.float64],
    resid: NDArray[np.float64],
    ridges: tuple[float, ...],
    beta_under: float,
    beta_over: float,
) -> list[Correction]:
    """Asymmetric ridge per output column on standardised ``phi`` (the intercept free),
    one correction per strength in ``ridges``."""
    n, d = phi.shape
    mu = phi.mean(axis=0)
    sd = phi.std(axis=0)
    sd[sd < _MIN_STD] = 1.0
    z = np.concatenate([(phi - mu) / sd, np.ones((n, 1))], axis=1)
    # einsum, not BLAS: a BLAS thread pool on a small, busy host is far slower. Weights are
    # beta_over, or beta_under on a miss, so the Gram matrix of a column is built once and
    # each step (and each strength) updates it with the windows whose side changed.
    base = beta_over * np.einsum("ni,nj->ij", z, z)
    extra = beta_under - beta_over
    coefs = np.zeros((len(ridges), d + 1, resid.shape[1]))
    for j in range(resid.shape[1]):
        r = resid[:, j]
        miss0 = r > 0
        zm = z[miss0]
        gram0 = base + extra * np.einsum("ni,nj->ij", zm, zm)
        zr0 = np.einsum("ni,n->i", z, np.where(miss0, beta_under, beta_over) * r)
        for k, ridge in enumerate(ridges):
            penalty = np.full(d + 1, ridge * n)
            penalty[-1] = 0.0
            gram, zr, miss = gram0 + np.diag(penalty), zr0, miss0
            c = np.zeros(d + 1)
            for _ in range(_IRLS_STEPS):
                c = np.linalg.solve(gram, zr)
                now = r - np.einsum("ni,i->n", z, c) > 0
                flip = now != miss
                if not flip.any():
                    break
                sign = np.where(now[flip], extra, -extra)
                zf = z[flip]
                gram = gram + np.einsum("ni,n,nj->ij", zf, sign, zf)
                zr = zr + np.einsum("ni,n->i", zf, sign * r[flip])
                miss = now
            coefs[k, :, j] = c
    out = []
    for k, ridge in enumerate(ridges):
        raw = coefs[k, :-1] / sd[:, None]
        out.append(Correction(raw, coefs[k, -1] - mu @ raw, ridge))
    return out


def fit_correction(
    phi: NDArray[np.floating[Any]],
    resid: NDArray[np.floating[Any]],
    *,
    beta_under: float,
    beta_over: float,
    val: tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]] | None = None,
    holdout: float = 0.25,
    ridges: tuple[float, ...] = RIDGES,
) -> Correction | None:
    """The correction of ``resid`` (n, outputs; target - shared forecast) from ``phi``.

    The ridge strength is chosen on ``val`` (phi, resid), or else on the newest
    ``holdout`` share of the windows (they are in time order); the chosen correction is
    then refitted on all of ``phi``. None when no strength beats no correction on those
    held-out windows, or when there are fewer than ``MIN_WINDOWS`` windows.
    """
    x = np.asarray(phi, dtype=np.float64)
    r = np.asarray(resid, dtype=np.float64)
    if x.ndim != 2 or r.ndim != 2 or len(x) != len(r):
        raise ModelError(f"features {x.shape} and residuals {r.shape} do not pair up")
    if not ridges or min(ridges) <= 0:
        raise ModelError("ridge strengths must be positive")
    if not (np.isfinite(x).all() and np.isfinite(r).all()):
        raise ModelError("non-finite features or residuals")
    if val is None:
        if not 0 < holdout < 1:
            raise ModelError(f"holdout must be a fraction in (0, 1), got {holdout}")
        cut = int(len(x) * (1 - holdout))
        fit_x, fit_r, val_x, val_r = x[:cut], r[:cut], x[cut:], r[cut:]
    else:
        fit_x, fit_r = x, r
        val_x, val_r = (np.asarray(v, dtype=np.float64) for v in val)
        if val_x.shape[1:] != x.shape[1:] or val_r.shape[1:] != r.shape[1:]:
            raise ModelError("validation windows are shaped unlike the fitting windows")
    if len(fit_x) < MIN_WINDOWS or len(val_x) == 0:
        return None
    best_ridge, best = 0.0, (1.0 - MIN_GAIN) * asymmetric_cost(val_r, beta_under, beta_over)
    for c in _solve(fit_x, fit_r, ridges, beta_under, beta_over):
        cost = asymmetric_cost(val_r - c.predict(val_x), beta_under, beta_over)
        if cost < best:
            best_ridge, best = c.ridge, cost
    if best_ridge == 0.0:
        return None
    return _solve(x, r, (best_ridge,), beta_under, beta_over)[0]


def output_features(
    x: NDArray[np.floating[Any]], pred: NDArray[np.floating[Any]], spec: ForecastSpec
) -> NDArray[np.float64]:
    """What the output calibration reads: the shared forecast (all horizons and targets),
    the latest scaled targets, the time of day now and, with a profile, the site's typical
    shape now and ahead (the model's own inputs at its newest step). Not the day of week:
    a site's fitting days need not cover every weekday, and a linear term in an encoding
    it has not seen extrapolates; the profile carries the weekday/weekend shape."""
    n = len(x)
    if x.ndim != 3 or x.shape[1:] != (spec.lookback, spec.n_features):
        raise ModelError(f"windows must be (n, {spec.lookback}, {spec.n_features}), got {x.shape}")
    if pred.shape != (n, spec.horizon, N_TARGETS):
        raise ModelError(f"forecasts must be ({n}, {spec.horizon}, {N_TARGETS}), got {pred.shape}")
    last = x[:, -1, :]
    parts = [
        pred.reshape(n, -1),
        last[:, list(TARGET_INDEX)],
        last[:, N_KPIS : N_KPIS + _N_CLOCK],
    ]
    if spec.site_profile:
        parts.append(last[:, N_KPIS + N_TIME_FEATURES :])
    return np.concatenate(parts, axis=1).astype(np.float64)


@dataclass(frozen=True)
class OutputCalibration:
    """A site's correction of one shared model's forecasts (scaled units)."""

    spec: ForecastSpec
    correction: Correction

    def apply(
        self, x: NDArray[np.floating[Any]], pred: NDArray[np.floating[Any]]
    ) -> NDArray[np.float32]:
        delta = self.correction.predict(output_features(x, pred, self.spec))
        return (pred.astype(np.float64) + delta.reshape(pred.shape)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "correction": self.correction.to_dict()}

    @classmethod
    def from_dict(cls, data: object) -> OutputCalibration:
        if not isinstance(data, dict) or "spec" not in data or "correction" not in data:
            raise ModelError("a calibration record needs 'spec' and 'correction'")
        spec = ForecastSpec.from_dict(data["spec"])
        correction = Correction.from_dict(data["correction"])
        want = (spec.horizon * N_TARGETS, _n_output_features(spec))
        got = (correction.coef.shape[1], correction.coef.shape[0])
        if got != want:
            raise ModelError(f"calibration of {got} does not fit its spec (want {want})")
        return cls(spec, correction)


def _n_output_features(spec: ForecastSpec) -> int:
    return spec.horizon * N_TARGETS + N_TARGETS + _N_CLOCK + spec.profile_features


def fit_output_calibration(
    x: NDArray[np.floating[Any]],
    pred: NDArray[np.floating[Any]],
    y: NDArray[np.floating[Any]],
    spec: ForecastSpec,
    *,
    val: tuple[NDArray[np.floating[Any]], ...] | None = None,
    holdout: float = 0.25,
) -> OutputCalibration | None:
    """The site's calibration of the shared model: windows ``x``, its forecasts ``pred``
    and the actual targets ``y`` (n, horizon, targets), all scaled; ``val`` is (x, pred, y)
    of held-out windows, else the newest ``holdout`` share picks the ridge strength.
    None when the shared model is as good on the held-out windows."""
    if y.shape != pred.shape:
        raise ModelError(f"targets {y.shape} and forecasts {pred.shape} differ")
    phi = output_features(x, pred, spec)
    resid = (y.astype(np.float64) - pred.astype(np.float64)).reshape(len(y), -1)
    held = None
    if val is not None:
        vx, vp, vy = val
        if vy.shape != vp.shape:
            raise ModelError(f"validation targets {vy.shape} and forecasts {vp.shape} differ")
        held = (
            output_features(vx, vp, spec),
            (vy.astype(np.float64) - vp.astype(np.float64)).reshape(len(vy), -1),
        )
    correction = fit_correction(
        phi,
        resid,
        beta_under=spec.beta_under,
        beta_over=spec.beta_over,
        val=held,
        holdout=holdout,
    )
    return None if correction is None else OutputCalibration(spec, correction)
