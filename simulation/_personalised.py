"""Personalised federation: the federated model, then adapted on each site's own days.

Three ways to adapt, compared in docs/simulation.md ("Personalised federation"):

``fedavg+ft``
    Fine-tuning: the federated weights, trained further on the site's training days with
    the federated runs' optimiser, one pass at a time, keeping the pass with the lowest
    validation loss (the federated model itself if none improves). Needs torch: on a gNB
    host it runs where training runs (the SuperNode's ClientApp), and the agent serves the
    exported ONNX.
``fedavg+cal``
    Output calibration (``models.OutputCalibration``): a linear correction of the
    federated forecast from what the model produced and saw, fitted in closed form
    (asymmetric ridge, numpy) on the training days, its ridge strength chosen on the
    validation days. This is what the agent fits and applies itself, without torch.
``fedavg+ft+cal``
    Both: the fine-tuned model, then its output calibration on the same days.
``fedavg+head``
    A personal head on the federated representation (FedRep's local head, fitted in
    closed form rather than by alternating SGD): the same asymmetric ridge from the
    second LSTM's last hidden state to the federated model's residual. Needs the hidden
    state out of the model (torch here; an ONNX second output on the agent).

Test days are never looked at: training days fit, validation days choose.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray

from fedge.federation import FederationPlan
from fedge.models import (
    LoadForecaster,
    Weights,
    evaluate_loss,
    fit_correction,
    fit_output_calibration,
    get_weights,
    predict,
    set_weights,
    train_epochs,
)
from fedge.simulation._config import PERSONALISED_METHODS
from fedge.simulation._errors import SimulationError
from fedge.simulation._site_task import SiteTask

#: Most fine-tuning passes; a pass that does not lower the validation loss ends it.
FT_MAX_EPOCHS = 4
FT_PATIENCE = 1
#: Fine-tuning's learning rate relative to the plan's base rate.
FT_LR_SCALE = 1.0

Tick = Callable[[], None] | None


def personalise(
    method: str,
    weights: Weights,
    plan: FederationPlan,
    tasks: dict[int, SiteTask],
    on_site: Tick = None,
) -> dict[int, NDArray[np.float32]]:
    """Scaled test forecasts per site index of ``method`` applied to ``weights``."""
    adapt = _ADAPT.get(method)
    if adapt is None or method not in PERSONALISED_METHODS:
        raise SimulationError(
            f"unknown personalised method {method!r}; choose from {', '.join(_ADAPT)}"
        )
    torch.set_num_threads(1)
    model = LoadForecaster(plan.forecast)
    set_weights(model, weights)
    out: dict[int, NDArray[np.float32]] = {}
    for index, task in tasks.items():
        out[index] = adapt(model, weights, plan, task)
        if on_site is not None:
            on_site()
    return out


def fine_tune(
    model: LoadForecaster, weights: Weights, plan: FederationPlan, task: SiteTask
) -> NDArray[np.float32]:
    """``fedavg+ft``: early-stopped passes over the site's training days."""
    _tune(model, weights, plan, task)
    forecast = predict(model, task.prepared.x_test)
    set_weights(model, weights)
    return forecast


def fine_tune_calibrate(
    model: LoadForecaster, weights: Weights, plan: FederationPlan, task: SiteTask
) -> NDArray[np.float32]:
    """``fedavg+ft+cal``: the fine-tuned model, then calibrated on the same days."""
    _tune(model, weights, plan, task)
    forecast = calibrate(model, get_weights(model), plan, task)
    set_weights(model, weights)
    return forecast


def _tune(model: LoadForecaster, weights: Weights, plan: FederationPlan, task: SiteTask) -> None:
    """Leaves ``model`` at the fine-tuning pass with the lowest validation loss."""
    p = task.prepared
    set_weights(model, weights)
    best_loss, best = evaluate_loss(model, p.x_val, p.y_val), weights
    stale = 0
    for epoch in range(FT_MAX_EPOCHS):
        train_epochs(
            model,
            p.x_train,
            p.y_train,
            epochs=1.0,
            batch_size=plan.batch_size,
            learning_rate=plan.learning_rate * FT_LR_SCALE,
            seed=plan.seed * 1_000_003 + 104_729 * (epoch + 1) + len(p.x_train),
        )
        loss = evaluate_loss(model, p.x_val, p.y_val)
        if loss < best_loss:
            best_loss, best, stale = loss, get_weights(model), 0
        else:
            stale += 1
            if stale >= FT_PATIENCE:
                break
    set_weights(model, best)


def calibrate(
    model: LoadForecaster, weights: Weights, plan: FederationPlan, task: SiteTask
) -> NDArray[np.float32]:
    """``fedavg+cal``: the agent's closed-form output calibration."""
    p = task.prepared
    spec = plan.forecast
    pred_test = predict(model, p.x_test)
    cal = fit_output_calibration(
        p.x_train,
        predict(model, p.x_train),
        p.y_train,
        spec,
        val=(p.x_val, predict(model, p.x_val), p.y_val),
    )
    return pred_test if cal is None else cal.apply(p.x_test, pred_test)


@torch.no_grad()
def hidden_state(model: LoadForecaster, x: NDArray[np.float32]) -> NDArray[np.float64]:
    """The second LSTM's state after the window's last step: what the head reads."""
    model.eval()
    parts = []
    for i in range(0, len(x), 2048):
        out, _ = model.lstm1(torch.from_numpy(x[i : i + 2048]))
        out, _ = model.lstm2(out)
        parts.append(out[:, -1, :].numpy().astype(np.float64))
    return np.concatenate(parts) if parts else np.zeros((0, model.spec.hidden[1]))


def personal_head(
    model: LoadForecaster, weights: Weights, plan: FederationPlan, task: SiteTask
) -> NDArray[np.float32]:
    """``fedavg+head``: a closed-form personal head on the federated representation."""
    p = task.prepared
    spec = plan.forecast

    def resid(x: NDArray[np.float32], y: NDArray[np.float32]) -> NDArray[np.float64]:
        return (y.astype(np.float64) - predict(model, x)).reshape(len(y), -1)

    correction = fit_correction(
        hidden_state(model, p.x_train),
        resid(p.x_train, p.y_train),
        beta_under=spec.beta_under,
        beta_over=spec.beta_over,
        val=(hidden_state(model, p.x_val), resid(p.x_val, p.y_val)),
    )
    pred = predict(model, p.x_test)
    if correction is None:
        return pred
    delta = correction.predict(hidden_state(model, p.x_test)).reshape(pred.shape)
    return (pred + delta).astype(np.float32)


_ADAPT: dict[
    str,
    Callable[[LoadForecaster, Weights, FederationPlan, SiteTask], NDArray[np.float32]],
] = {
    "fedavg+ft": fine_tune,
    "fedavg+cal": calibrate,
    "fedavg+head": personal_head,
    "fedavg+ft+cal": fine_tune_calibrate,
    "centralized+ft": fine_tune,  # the centralized model, fine-tuned at each site
}
