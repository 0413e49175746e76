"""The server keeps the global model of the round with the best aggregated validation
loss, not the last one: training loss can keep falling while validation rises."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedge.federation import FederationPlan, run_rounds
from fedge.federation._rounds import _validation_score, initial_weights
from fedge.models import ForecastSpec
from tests.support.grid import LocalGrid

SPEC = ForecastSpec(lookback=4, horizon=2, hidden=(4, 2))
PLAN = FederationPlan(data_spec="{}", num_rounds=4, forecast=SPEC)
# validation loss per round: best at round 2, worse after (overfitting)
VAL = {1: 0.5, 2: 0.2, 3: 0.3, 4: 0.4}
# the first initial weight: evaluate reads the round off the shift from it
BASE = float(initial_weights(PLAN)[0].flat[0])


def scripted_app(val: dict[int, float | None]) -> ClientApp:
    """Each round adds 1 to every weight; evaluate reports the scripted validation loss
    of the round whose model it was sent (its weights say which)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = [a + 1.0 for a in msg.content.array_records["arrays"].to_numpy_ndarrays()]
        content = RecordDict(
            {
                "arrays": ArrayRecord.from_numpy_ndarrays(arrays),
                "metrics": MetricRecord({"train_loss": 1.0, "num-examples": 10}),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        first = msg.content.array_records["arrays"].to_numpy_ndarrays()[0]
        served = round(float(first.flat[0] - BASE))
        record: dict[str, int | float | list[int] | list[float]] = {"num-examples": 10}
        loss = val.get(served)
        if loss is not None:
            record["val_loss"] = loss
        return Message(content=RecordDict({"metrics": MetricRecord(record)}), reply_to=msg)

    return app


def _run(val: dict[int, float | None]) -> tuple[int | None, float]:
    grid = LocalGrid(scripted_app(val))
    grid.add_node(1, {})
    grid.add_node(2, {})
    outcome = run_rounds(grid, PLAN)
    assert [r.val_loss for r in outcome.rounds] == [val.get(r) for r in range(1, 5)]
    return outcome.best_round, float(outcome.weights[0].flat[0] - BASE)


def test_the_best_validated_round_is_kept() -> None:
    best, shift = _run(dict(VAL))
    assert best == 2
    assert np.isclose(shift, 2.0)  # the weights of round 2, not round 4


def test_without_validation_the_last_round_is_kept() -> None:
    best, shift = _run({})
    assert best == 4 and np.isclose(shift, 4.0)


def test_a_non_finite_validation_loss_is_never_the_best() -> None:
    assert _validation_score(MetricRecord({"val_loss": float("nan")})) is None
    assert _validation_score(None) is None
    assert _validation_score(MetricRecord({"val_loss": 0.3})) == 0.3


def test_the_coordinator_gets_the_kept_rounds_metrics_and_number() -> None:
    from fedge.federation._report import RoundReporter

    reporter = RoundReporter("http://127.0.0.1:9", "0" * 32, "t", PLAN, 1.0)
    reporter.round_metrics = {1: {"eval_rmse": 0.5}, 2: {"eval_rmse": 0.2}}
    reporter.last_metrics = {"eval_rmse": 0.4}
    assert reporter.kept_metrics(2) == {"eval_rmse": 0.2, "best_round": 2.0}
    assert reporter.kept_metrics(None) == {"eval_rmse": 0.4}  # unknown: the last round's
    assert reporter.kept_metrics(7) == {"eval_rmse": 0.4}
