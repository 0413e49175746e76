"""The reference forecaster (torch): two stacked LSTMs and a linear head, asymmetric loss."""

from __future__ import annotations

import torch
from torch import nn

from fedge.core import TARGET_INDEX
from fedge.models._spec import N_TARGETS, ForecastSpec


class LoadForecaster(nn.Module):
    """(batch, lookback, features) -> (batch, horizon, targets), in scaled units."""

    def __init__(self, spec: ForecastSpec) -> None:
        super().__init__()
        self.spec = spec
        h1, h2 = spec.hidden
        self.lstm1 = nn.LSTM(spec.n_features, h1, batch_first=True)
        self.lstm2 = nn.LSTM(h1, h2, batch_first=True)
        self.head = nn.Linear(h2, N_TARGETS * spec.horizon)
        # where the targets sit among the KPI features: the persistence skip adds their
        # latest scaled values to the network's output
        self.target_features: torch.Tensor
        self.register_buffer(
            "target_features", torch.tensor(TARGET_INDEX, dtype=torch.long), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm1(x)
        out, _ = self.lstm2(out)
        pred: torch.Tensor = self.head(out[:, -1, :]).reshape(-1, self.spec.horizon, N_TARGETS)
        if self.spec.persistence_skip:
            pred = pred + x[:, -1:, :].index_select(2, self.target_features)
        return pred


def asymmetric_loss(
    pred: torch.Tensor, target: torch.Tensor, beta_under: float, beta_over: float
) -> torch.Tensor:
    """Squared error weighted by side: a missed peak (pred < target) costs beta_under."""
    err = target - pred
    weight = torch.where(err > 0, beta_under, beta_over)
    return (weight * err.square()).mean()
