"""Training and prediction loops shared by federated sites, local and centralized baselines."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from numpy.typing import NDArray

from fedge.models._errors import ModelError
from fedge.models._forecaster import LoadForecaster, asymmetric_loss

Weights = list[NDArray[np.float32]]


def get_weights(model: LoadForecaster) -> Weights:
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: LoadForecaster, weights: Weights) -> None:
    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ModelError(f"expected {len(keys)} weight arrays, got {len(weights)}")
    state = OrderedDict()
    for k, w, cur in zip(keys, weights, model.state_dict().values(), strict=True):
        if tuple(w.shape) != tuple(cur.shape):
            raise ModelError(
                f"weight {k!r} has shape {tuple(w.shape)}, expected {tuple(cur.shape)}"
            )
        state[k] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    model.load_state_dict(state)


def train_epochs(
    model: LoadForecaster,
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    seed: int,
    proximal_mu: float = 0.0,
) -> float:
    """Adam over ``epochs`` passes of the data; returns the mean loss of the samples seen.

    A fractional ``epochs`` visits that share of the windows (a fresh random subset), so
    a federated round can be shorter than a pass. With ``proximal_mu`` > 0 the FedProx
    term (mu/2)·||w - w_global||² keeps the site near the global model it started from.
    """
    if len(x) == 0:
        raise ModelError("no training windows")
    if len(x) != len(y):
        raise ModelError("inputs and targets differ in length")
    if not epochs > 0:
        raise ModelError(f"epochs must be positive, got {epochs}")
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    spec = model.spec
    model.train()
    budget = max(1, round(epochs * len(xt)))
    total, count = 0.0, 0
    while count < budget:
        order = torch.randperm(len(xt), generator=gen)[: budget - count]
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = asymmetric_loss(model(xt[idx]), yt[idx], spec.beta_under, spec.beta_over)
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if anchor:
                prox = sum(
                    (p - a).square().sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                loss = loss + 0.5 * proximal_mu * prox
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return total / count


@torch.no_grad()
def predict(
    model: LoadForecaster, x: NDArray[np.float32], batch_size: int = 2048
) -> NDArray[np.float32]:
    model.eval()
    outs = [
        model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)
    ]
    if not outs:
        return np.zeros((0, model.spec.horizon, 3), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32)


def evaluate_loss(model: LoadForecaster, x: NDArray[np.float32], y: NDArray[np.float32]) -> float:
    pred = torch.from_numpy(predict(model, x))
    spec = model.spec
    return float(asymmetric_loss(pred, torch.from_numpy(y), spec.beta_under, spec.beta_over))
