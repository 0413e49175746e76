"""The site side of a round (Flower ClientApp): train on, or score against, the site's own data.

:func:`site_app` builds the app around a :class:`Site` resolver: the deployed SuperNode's
app (``fedge.federation.client_app``) resolves it from the node config; the simulation
gives its own resolver (``fedge.simulation``). The train and evaluate functions are the
same for both; a deployed site is all the cells of its agent's store, a simulated one is
one series.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from numpy.typing import NDArray

from fedge.core import TARGET_INDEX, TARGET_KPIS
from fedge.federation._errors import FederationError
from fedge.federation._hello import answer_hello
from fedge.federation._plan import FederationPlan
from fedge.federation._site_mod import Site, SiteResolver, sealed_mod
from fedge.models import (
    LoadForecaster,
    PreparedSite,
    evaluate_loss,
    get_weights,
    predict,
    set_weights,
    train_epochs,
)


def site_app(resolve: SiteResolver) -> ClientApp:
    """A ClientApp whose every message is answered as the site ``resolve`` returns."""
    app = ClientApp(mods=[sealed_mod(resolve)])

    @app.query()
    def hello(msg: Message, context: Context) -> Message:
        """The server's hello before a sealed run: prove which enrolled site this node is."""
        site = resolve(context)
        return answer_hello(msg, context.run_id, context.node_id, site.identity, site.coordinator)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """Train on every cell's windows together; ``num-examples`` is their total."""
        site = resolve(context)
        plan, cells, model = _setup(msg, site)
        config = msg.content.config_records["config"]
        server_round = _int(config.get("server-round"), "server-round")
        mu = plan.proximal_mu if plan.strategy == "fedprox" else 0.0
        x_train = _pool([p.x_train for p in cells])
        y_train = _pool([p.y_train for p in cells])
        loss = train_epochs(
            model,
            x_train,
            y_train,
            epochs=plan.local_epochs,
            batch_size=plan.batch_size,
            learning_rate=plan.learning_rate_at(server_round),
            seed=plan.seed * 1_000_003 + server_round * 7919 + site.index,
            proximal_mu=mu,
        )
        metrics = MetricRecord({"train_loss": loss, "num-examples": len(x_train)})
        content = RecordDict(
            {"arrays": ArrayRecord.from_numpy_ndarrays(get_weights(model)), "metrics": metrics}
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Score the global model on the site's validation days (never its test days),
        each cell in its own units, pooled over all cells' windows."""
        _, cells, model = _setup(msg, resolve(context))
        cols = list(TARGET_INDEX)
        errors = []
        loss = 0.0
        for p in cells:
            if len(p.x_val):
                loss += evaluate_loss(model, p.x_val, p.y_val) * len(p.x_val)
            forecast = p.scaler.inverse(predict(model, p.x_val), TARGET_INDEX)
            actual = p.scaler.inverse(p.y_val, TARGET_INDEX)
            errors.append((forecast - actual).reshape(-1, len(cols)) / p.scaler.range[cols])
        err = np.concatenate(errors)
        count = sum(len(p.x_val) for p in cells)
        record: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": count,
            # the training objective, so the server can keep the best round (and a report
            # can plot it against the training loss)
            "val_loss": loss / max(count, 1),
        }
        for j, kpi in enumerate(TARGET_KPIS):
            record[f"val_nmse_{kpi}"] = float(np.mean(err[:, j] ** 2))
        return Message(content=RecordDict({"metrics": MetricRecord(record)}), reply_to=msg)

    return app


def _setup(msg: Message, site: Site) -> tuple[FederationPlan, list[PreparedSite], LoadForecaster]:
    torch.set_num_threads(1)
    plan = FederationPlan.from_config(dict(msg.content.config_records["config"]))
    data = site.task(plan)
    cells = [data] if isinstance(data, PreparedSite) else list(data)
    if not cells:
        raise FederationError("the site has no cell to train on")
    model = LoadForecaster(plan.forecast)
    set_weights(model, msg.content.array_records["arrays"].to_numpy_ndarrays())
    return plan, cells, model


def _pool(parts: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    """One cell's windows as they are; several cells' as one array to draw batches from."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _int(value: object, name: str) -> int:
    if isinstance(value, int):
        return value
    raise FederationError(f"config {name!r} must be an integer, got {value!r}")
