"""Reporting a deployment run to the fedge coordinator (off unless the run config names one).

The coordinator starts the run with ``coordinator-url``, ``coordinator-run-id`` and
``coordinator-token`` in its run config. :class:`RoundReporter` then wraps the strategy:
when a round starts it reports it ``running``, when the round's evaluation is aggregated it
reports it ``completed`` with participants, bytes on the wire (Flower's own protobuf of
every message sent and received), aggregated metrics and timings. Each report is one HTTP
call, committed by the coordinator before it answers, so a completed round is never lost.
An unreachable coordinator is retried for ``coordinator-retry-seconds``; a refusal (the
coordinator marked the run interrupted, say) ends the run with :class:`FederationError`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedge.core import RUN_TOKEN_HEADER
from fedge.federation._accounting import wire_size
from fedge.federation._errors import FederationError
from fedge.federation._plan import FederationPlan

__all__ = ["RoundReporter", "RUN_TOKEN_HEADER"]

log = logging.getLogger(__name__)


@dataclass
class _Round:
    started_at: float
    bytes_up: int = 0
    bytes_down: int = 0
    participants: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


class RoundReporter:
    """Sends one run's rounds and final model to the coordinator's run endpoints."""

    def __init__(
        self, url: str, run_id: str, token: str, plan: FederationPlan, retry_seconds: float = 120.0
    ) -> None:
        self.base = f"{url.rstrip('/')}/api/v1/runs/{run_id}"
        self.token, self.plan, self.retry_seconds = token, plan, retry_seconds
        self.last_metrics: dict[str, float] = {}
        self.round_metrics: dict[int, dict[str, float]] = {}  # completed rounds

    @classmethod
    def from_config(cls, config: dict[str, Any], plan: FederationPlan) -> RoundReporter | None:
        """A reporter when the run config names a coordinator, else None (``fedge simulate``)."""
        url = str(config.get("coordinator-url") or "")
        if not url:
            return None
        run_id, token = config.get("coordinator-run-id"), config.get("coordinator-token")
        if not run_id or not token:
            raise FederationError("coordinator-url needs coordinator-run-id and coordinator-token")
        retry = float(config.get("coordinator-retry-seconds", 120.0))
        return cls(url, str(run_id), str(token), plan, retry)

    def send(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One report; connection failures and 5xx are retried, a 4xx answer is final."""
        data = json.dumps(body).encode()
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            request = urllib.request.Request(
                self.base + path,
                data=data,
                method=method,
                headers={"Content-Type": "application/json", RUN_TOKEN_HEADER: self.token},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    result: dict[str, Any] = json.loads(answer.read())
                    return result
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    detail = exc.read().decode(errors="replace")[:300]
                    raise FederationError(
                        f"the coordinator refused {method} {path}: {exc.code} {detail}"
                    ) from exc
                problem: Exception = exc
            except (urllib.error.URLError, OSError) as exc:
                problem = exc
            if time.monotonic() + delay > deadline:
                raise FederationError(
                    f"the coordinator did not take {method} {path} "
                    f"in {self.retry_seconds:.0f} s: {problem}"
                ) from problem
            log.warning("coordinator report %s %s failed (%s); retrying", method, path, problem)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def round(self, number: int, state: _Round, status: str) -> None:
        self.send(
            "PUT",
            f"/rounds/{number}",
            {
                "status": status,
                "strategy": self.plan.strategy,
                "codec": self.plan.codec[:32],
                "participants": state.participants,
                "bytes_up": state.bytes_up,
                "bytes_down": state.bytes_down,
                "metrics": state.metrics,
                "started_at": state.started_at,
                "finished_at": time.time() if status == "completed" else None,
            },
        )
        if status == "completed":
            self.last_metrics = dict(state.metrics)
            self.round_metrics[number] = dict(state.metrics)

    def model(self, weights: list[Any], best_round: int | None = None) -> dict[str, Any]:
        """Export the run's model (the global weights of ``best_round``, the best validated
        round) to ONNX and hand it over with that round's metrics and number; the run
        completes."""
        from fedge.models import LoadForecaster, export_onnx, set_weights

        model = LoadForecaster(self.plan.forecast)
        set_weights(model, weights)
        with tempfile.TemporaryDirectory(prefix="fedge-run-model-") as tmp:
            blob = export_onnx(model, Path(tmp) / "model.onnx").read_bytes()
        return self.send(
            "POST",
            "/model",
            {
                "onnx_base64": base64.b64encode(blob).decode(),
                "metrics": self.kept_metrics(best_round),
            },
        )

    def kept_metrics(self, best_round: int | None) -> dict[str, float]:
        """The metrics of the round whose model is kept, with ``best_round`` among them
        (the last round's when the best is unknown)."""
        if best_round is None or best_round not in self.round_metrics:
            return dict(self.last_metrics)
        return {**self.round_metrics[best_round], "best_round": float(best_round)}

    def failure(self, detail: str) -> None:
        try:
            self.send("POST", "/failure", {"detail": detail[:500] or "failed"})
        except FederationError as exc:  # the run is failing anyway; say why in the log
            log.warning("could not report the failure: %s", exc)

    def wrap(self, inner: Strategy) -> Strategy:
        return _ReportingStrategy(inner, self)


def _finite(metrics: MetricRecord | None, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, int | float) and math.isfinite(value) and key != "num-examples":
            out[f"{prefix}{key}"] = float(value)
    return out


class _ReportingStrategy(Strategy):
    """The inner strategy, unchanged, with each round measured and reported."""

    def __init__(self, inner: Strategy, reporter: RoundReporter) -> None:
        self.inner, self.reporter = inner, reporter
        self._rounds: dict[int, _Round] = {}

    def summary(self) -> None:
        self.inner.summary()

    def _sent(self, server_round: int, messages: Iterable[Message]) -> list[Message]:
        out = list(messages)
        self._rounds[server_round].bytes_down += sum(wire_size(m) for m in out)
        return out

    def _received(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        got = list(replies)
        self._rounds[server_round].bytes_up += sum(wire_size(m) for m in got)
        return got

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        state = self._rounds[server_round] = _Round(started_at=time.time())
        self.reporter.round(server_round, state, "running")
        return self._sent(
            server_round, self.inner.configure_train(server_round, arrays, config, grid)
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        got = self._received(server_round, replies)
        state = self._rounds[server_round]
        arrays, metrics = self.inner.aggregate_train(server_round, got)
        accepted = metrics.get("accepted") if metrics is not None else None  # sealed runs
        state.participants = (
            int(accepted)
            if isinstance(accepted, int | float)
            else sum(1 for m in got if not m.has_error())
        )
        state.metrics.update(_finite(metrics, ""))
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._sent(
            server_round, self.inner.configure_evaluate(server_round, arrays, config, grid)
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        got = self._received(server_round, replies)
        metrics = self.inner.aggregate_evaluate(server_round, got)
        state = self._rounds.pop(server_round)
        state.metrics.update(_finite(metrics, "eval_"))
        nmse = [v for k, v in state.metrics.items() if k.startswith("eval_val_nmse_")]
        if nmse:
            state.metrics["eval_rmse"] = float(sum(math.sqrt(v) for v in nmse) / len(nmse))
        self.reporter.round(server_round, state, "completed")
        return metrics
