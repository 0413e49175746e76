"""The site side of a round (Flower ClientApp): train on, or score against, the site's own data.

The same app runs in the simulation (one Ray actor per worker) and on a gNB host under
``flower-supernode``. A site learns which data is its own from the node config:
``partition-id`` (set by the simulation runtime) or ``site-index`` (set by the operator).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedge.core import TARGET_INDEX, TARGET_KPIS
from fedge.federation._errors import FederationError
from fedge.federation._plan import FederationPlan
from fedge.federation._site_mod import hello_reply, sealed_update_mod
from fedge.federation._site_task import SiteTask, site_task
from fedge.models import LoadForecaster, get_weights, predict, set_weights, train_epochs

# The mod compresses and seals train/evaluate replies when the server asks for it.
app = ClientApp(mods=[sealed_update_mod])


@app.query()
def hello(msg: Message, context: Context) -> Message:
    """The server's hello before a sealed run: which site is this node."""
    return hello_reply(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    plan, task, model = _setup(msg, context)
    config = msg.content.config_records["config"]
    server_round = _int(config.get("server-round"), "server-round")
    prepared = task.prepared
    mu = plan.proximal_mu if plan.strategy == "fedprox" else 0.0
    loss = train_epochs(
        model,
        prepared.x_train,
        prepared.y_train,
        epochs=plan.local_epochs,
        batch_size=plan.batch_size,
        learning_rate=plan.learning_rate_at(server_round),
        seed=plan.seed * 1_000_003 + server_round * 7919 + _site_index(context),
        proximal_mu=mu,
    )
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(prepared.x_train)})
    content = RecordDict(
        {"arrays": ArrayRecord.from_numpy_ndarrays(get_weights(model)), "metrics": metrics}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the global model on the site's validation days (never its test days)."""
    _, task, model = _setup(msg, context)
    p = task.prepared
    cols = list(TARGET_INDEX)
    forecast = p.scaler.inverse(predict(model, p.x_val), TARGET_INDEX)
    actual = p.scaler.inverse(p.y_val, TARGET_INDEX)
    err = (forecast - actual).reshape(-1, len(cols)) / p.scaler.range[cols]
    record: dict[str, int | float | list[int] | list[float]] = {"num-examples": len(p.x_val)}
    for j, kpi in enumerate(TARGET_KPIS):
        record[f"val_nmse_{kpi}"] = float(np.mean(err[:, j] ** 2))
    return Message(content=RecordDict({"metrics": MetricRecord(record)}), reply_to=msg)


def _setup(msg: Message, context: Context) -> tuple[FederationPlan, SiteTask, LoadForecaster]:
    torch.set_num_threads(1)
    plan = FederationPlan.from_config(dict(msg.content.config_records["config"]))
    task = site_task(
        plan.data_spec, _site_index(context), plan.forecast, plan.val_days, plan.test_days
    )
    model = LoadForecaster(plan.forecast)
    set_weights(model, msg.content.array_records["arrays"].to_numpy_ndarrays())
    return plan, task, model


def _int(value: object, name: str) -> int:
    if isinstance(value, int):
        return value
    raise FederationError(f"config {name!r} must be an integer, got {value!r}")


def _site_index(context: Context) -> int:
    cfg = context.node_config
    for key in ("site-index", "partition-id"):
        if key in cfg:
            return int(cfg[key])
    raise FederationError(
        "node config names no site: start the SuperNode with --node-config 'site-index=N'"
    )
