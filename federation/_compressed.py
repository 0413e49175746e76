"""Set up a sealed, compressed run: the server's channel, the introducer and the wrapped strategy.

The keys come from the caller (:class:`fedge.federation.ServerKeys`): the deployed
ServerApp loads the coordinator's per-run export (``fedge.federation._keys``); the
simulation builds its own in-process directory.
"""

from __future__ import annotations

from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedge.federation._accounting import Ledger
from fedge.federation._channel import ServerChannel
from fedge.federation._codec import CodecSchedule, downlink_spec
from fedge.federation._introduce import Introducer
from fedge.federation._keys import ServerKeys
from fedge.federation._plan import FederationPlan
from fedge.federation._sealed_strategy import SealedStrategy


def seal_strategy(
    grid: Grid, plan: FederationPlan, inner: Strategy, keys: ServerKeys
) -> tuple[SealedStrategy, Ledger, Introducer]:
    channel = ServerChannel(keys.identity, keys.directory)
    ledger = Ledger(codec=plan.codec, downlink_codec=plan.downlink_codec)
    schedule = CodecSchedule.parse(plan.codec)  # the server's per-round choice
    wrapped = SealedStrategy(
        inner,
        channel,
        lambda _node, server_round: str(schedule.at(server_round)),
        residual_decay=plan.residual_decay,
        ledger=ledger,
        downlink=downlink_spec(plan.downlink_codec),
        feedback=plan.feedback,
    )
    return wrapped, ledger, Introducer(grid, channel, ledger, seed=plan.seed)
