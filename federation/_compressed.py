"""Set up a sealed, compressed run: keys, the node-to-site binding, and the wrapped strategy.

Key distribution is the simulation's: every site's identity and the server's are derived
from the plan's seed (:func:`fedge.federation._channel.simulated_identity`), the server's
directory is an in-process :class:`security.MemoryRegistry` holding every site's public
keys, and each site derives the server's public keys the same way. A deployment enrolls
sites instead (``security.EnrollmentAuthority``) and provisions the server's keys.
"""

from __future__ import annotations

import logging
import tempfile

from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedge.federation._accounting import Ledger
from fedge.federation._channel import ServerChannel, simulated_identity
from fedge.federation._codec import CodecSchedule, downlink_spec
from fedge.federation._errors import FederationError
from fedge.federation._plan import FederationPlan
from fedge.federation._sealed_strategy import SealedStrategy, introduce
from fedge.security import KeyDirectory

log = logging.getLogger(__name__)


def seal_strategy(
    grid: Grid, plan: FederationPlan, inner: Strategy
) -> tuple[SealedStrategy, Ledger]:
    directory = KeyDirectory()

    def enroll(index: int) -> None:  # the simulation's stand-in for enrollment
        keys = simulated_identity(plan.seed, f"site-{index}").public_keys()
        if directory.registry.get_site(keys.site_id) is None:
            directory.register(keys)

    channel = ServerChannel(simulated_identity(plan.seed, "server"), directory)
    ledger = Ledger(codec=plan.codec, downlink_codec=plan.downlink_codec)
    schedule = CodecSchedule.parse(plan.codec)  # the server's per-round choice
    bound = introduce(grid, channel, plan.seed, ledger, enroll)
    nodes = list(grid.get_node_ids())
    if bound == 0:
        raise FederationError("no site answered the hello; nothing to federate")
    if bound < len(nodes):
        log.warning("%d of %d nodes did not introduce themselves", len(nodes) - bound, len(nodes))
    state_dir = plan.state_dir or tempfile.mkdtemp(prefix="fedge-site-state-")
    wrapped = SealedStrategy(
        inner,
        channel,
        lambda _node, server_round: str(schedule.at(server_round)),
        key_seed=plan.seed,
        state_dir=state_dir,
        residual_decay=plan.residual_decay,
        ledger=ledger,
        downlink=downlink_spec(plan.downlink_codec),
        feedback=plan.feedback,
    )
    return wrapped, ledger
