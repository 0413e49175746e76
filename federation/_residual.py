"""Error feedback: what compression dropped is kept on the site and added to its next update.

The residual lives in the site's state directory (``residual.npz``, written atomically),
so a restarted site keeps it. It is tied to the site's channel id for the run: a residual
from another run (or another server) is never added to this one's updates. With partial
participation a residual goes stale between the rounds a site is sampled in; ``decay``
scales it by ``decay ** missed_rounds`` before use (1.0 keeps it whole).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.federation._codec import Arrays, CodecSpec, decode, encode
from fedge.federation._errors import FederationError

RESIDUAL_FILE = "residual.npz"
ESTIMATE_FILE = "estimate.npz"
FEEDBACK_MODES = ("residual", "tracked")


def compress_with_feedback(
    delta: Arrays, residual: Arrays, spec: CodecSpec, rng: np.random.Generator | None = None
) -> tuple[bytes, Arrays]:
    """(payload of delta + residual, the new residual = what that payload fails to carry)."""
    if len(delta) != len(residual) or any(
        d.shape != r.shape for d, r in zip(delta, residual, strict=True)
    ):
        raise FederationError("residual does not match the update's shapes")
    target = [(d + r).astype(np.float32) for d, r in zip(delta, residual, strict=True)]
    payload = encode(target, spec, rng)
    if spec.lossless:
        return payload, [np.zeros_like(t) for t in target]
    sent = decode(payload)
    return payload, [(t - s).astype(np.float32) for t, s in zip(target, sent, strict=True)]


def compress_difference(
    delta: Arrays, estimate: Arrays, spec: CodecSpec, rng: np.random.Generator | None = None
) -> tuple[bytes, Arrays]:
    """Tracked feedback (EF21): send ``C(delta - estimate)``; both ends add what was sent to
    their copy of the site's estimate, and the server aggregates the estimates.

    A site's updates change slowly from round to round, so its estimate soon carries most
    of the update densely while each round's payload stays top-k sparse; with residual
    feedback the server only ever sees the sparse part.
    """
    if len(delta) != len(estimate) or any(
        d.shape != e.shape for d, e in zip(delta, estimate, strict=True)
    ):
        raise FederationError("estimate does not match the update's shapes")
    target = [(d - e).astype(np.float32) for d, e in zip(delta, estimate, strict=True)]
    payload = encode(target, spec, rng)
    sent = decode(payload)
    return payload, [(e + s).astype(np.float32) for e, s in zip(estimate, sent, strict=True)]


class ResidualStore:
    """One site's residual (or tracked estimate) on disk."""

    def __init__(self, site_dir: Path, file: str = RESIDUAL_FILE) -> None:
        self.path = Path(site_dir) / file

    def _read(self, channel: str, like: Arrays) -> tuple[dict[str, Any], Arrays] | None:
        """Tags and arrays if the file exists, is this channel's and fits ``like``."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = [np.asarray(z[f"r{i}"], dtype=np.float32) for i in range(len(like))]
        except (OSError, KeyError, ValueError) as exc:
            raise FederationError(f"feedback file {self.path} is unreadable: {exc}") from exc
        if meta.get("channel") != channel or any(
            a.shape != b.shape for a, b in zip(arrays, like, strict=True)
        ):
            return None
        return meta, arrays

    def load(self, channel: str, like: Arrays, server_round: int, decay: float = 1.0) -> Arrays:
        """The residual for this channel, aged to ``server_round``; zeros when there is none."""
        held = self._read(channel, like)
        if held is None:
            return [np.zeros_like(a, dtype=np.float32) for a in like]
        meta, arrays = held
        missed = max(0, server_round - int(meta["round"]) - 1)
        if missed and decay != 1.0:
            factor = np.float32(decay**missed)
            arrays = [a * factor for a in arrays]
        return arrays

    def load_estimate(self, channel: str, like: Arrays, seq: int) -> Arrays | None:
        """The estimate after the site's ``seq``-th accepted update; None if not the one held."""
        held = self._read(channel, like) if seq >= 1 else None
        if held is None or held[0].get("seq") != seq:
            return None
        return held[1]

    def save(
        self, channel: str, residual: Arrays, server_round: int, seq: int | None = None
    ) -> None:
        tags: dict[str, Any] = {"channel": channel, "round": server_round}
        if seq is not None:
            tags["seq"] = seq
        meta = json.dumps(tags).encode()
        buf = io.BytesIO()
        named: dict[str, NDArray[Any]] = {f"r{i}": a for i, a in enumerate(residual)}
        named["meta"] = np.frombuffer(meta, dtype=np.uint8)
        np.savez(buf, **named)  # type: ignore[arg-type]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, self.path)
