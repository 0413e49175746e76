"""Sealed model envelopes from the coordinator, opened with the site's own keys.

Its own module so that ``fedge agent check`` can test the keys without importing the
whole agent (inference, anomaly scoring, metrics).
"""

from __future__ import annotations

from fedge.core import BundleError, ModelBundle
from fedge.edge_agent._config import AgentConfig
from fedge.edge_agent._errors import AgentError, ModelRejected


class ModelOpener:
    """Opens sealed model envelopes from the coordinator (security one-shot envelopes)."""

    def __init__(self, config: AgentConfig) -> None:
        from fedge.security import (
            KeyDirectory,
            OneShotOpener,
            SecurityError,
            SitePublicKeys,
            load_identity,
            read_kek,
        )

        sec = config.security
        assert sec is not None
        try:
            identity = load_identity(sec.key_file, read_kek(sec.kek_file))
            coordinator = SitePublicKeys.from_bytes(sec.coordinator_keys.read_bytes())
        except (SecurityError, OSError) as exc:
            raise AgentError(f"security: {exc}") from exc
        directory = KeyDirectory()
        directory.register(coordinator)
        self.coordinator_id = coordinator.site_id
        self._opener = OneShotOpener(  # models only move forward, across restarts too
            identity, directory, window=1, state=config.store.path.with_suffix(".replay.json")
        )

    def open(self, envelope: bytes) -> ModelBundle:
        from fedge.security import ContentType, SecurityError

        try:
            opened = self._opener.open(envelope)
        except SecurityError as exc:
            raise ModelRejected(f"sealed model envelope refused: {exc}") from exc
        if opened.sender != self.coordinator_id:
            raise ModelRejected("sealed model is not from the coordinator")
        if opened.content_type != ContentType.GLOBAL_MODEL:
            raise ModelRejected(f"envelope carries {opened.content_type!r}, not a global model")
        try:
            return ModelBundle.decode(opened.plaintext)
        except BundleError as exc:
            raise ModelRejected(str(exc)) from exc
        except RecursionError as exc:  # a header nested deeper than the JSON decoder goes
            raise ModelRejected(f"model bundle header is malformed: {exc}") from exc
