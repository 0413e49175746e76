"""The deployed site's ClientApp, run by ``flower-supernode`` on a gNB host.

Everything that says who the site is and where its files are comes from the SuperNode's
own ``--node-config`` (``fedge.federation._keys.node_setup``): the site's key file and
KEK source, the coordinator's public keys from enrollment, the node's state directory and
the agent store whose cells (all of them) it trains on. The server's messages carry the
plan (rounds, learning rate, codec) and sealed payloads only; a path, a key seed or an
attack setting in them is never read. Only sealed rounds are answered.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context

from fedge.federation._keys import node_setup
from fedge.federation._site_app import site_app
from fedge.federation._site_mod import Site
from fedge.federation._site_task import store_task


def deployed_site(context: Context) -> Site:
    """This node's site, from its node config."""
    setup = node_setup(context.node_config)
    return Site(
        index=int.from_bytes(setup.identity.site_id[:4], "big"),  # the training seed
        identity=setup.identity,
        coordinator=setup.coordinator,
        state_dir=setup.state_dir,
        task=lambda plan: store_task(setup.store, plan.forecast, plan.val_days, plan.test_days),
        rng=lambda _round: np.random.default_rng(),
    )


app = site_app(deployed_site)
