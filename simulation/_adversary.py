"""Misbehaving sites for the simulation: which site attacks, and how its reply is spoiled.

Attack injection exists only here: the simulation's ClientApp gives its sites an
:class:`AttackingUplink` (``fedge.federation.Uplink``); a deployed site has none.

Roles are a deterministic function of (seed, site count, fractions), so every run of a
configuration attacks with the same sites. The attacks act where a real attacker would:
``tampered`` flips a byte of the sealed envelope in transit, ``replayed`` resends the
site's previous envelope, ``nonfinite`` / ``misshaped`` / ``boosted`` are enrolled sites
sending a well-sealed but malicious update (NaN/Inf values, wrong tensor shapes, or the
honest delta times ``boost``, the model-poisoning boost of Bhagoji et al.).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np

from fedge.federation import Arrays, CodecId, CodecSpec, FederationError, encode

LAST_ENVELOPE: Final = "last_envelope.bin"

ATTACKS: Final = ("tampered", "replayed", "nonfinite", "misshaped", "boosted")


@dataclass(frozen=True)
class AdversaryPlan:
    tampered: float = 0.0
    replayed: float = 0.0
    nonfinite: float = 0.0
    misshaped: float = 0.0
    boosted: float = 0.0
    boost: float = -10.0
    num_sites: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = [getattr(self, a) for a in ATTACKS]
        if any(not (0.0 <= f <= 1.0 and math.isfinite(f)) for f in fractions):
            raise FederationError(f"attack fractions must be in [0, 1], got {fractions}")
        if sum(fractions) > 1.0:
            raise FederationError("attack fractions add up to more than 1")
        if not math.isfinite(self.boost):
            raise FederationError("boost must be finite")

    @property
    def active(self) -> bool:
        return any(getattr(self, a) > 0 for a in ATTACKS)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdversaryPlan:
        try:
            return cls(**json.loads(text)) if text else cls()
        except (TypeError, ValueError) as exc:
            raise FederationError(f"bad adversary spec: {exc}") from exc

    @classmethod
    def parse(cls, text: str, num_sites: int, seed: int) -> AdversaryPlan:
        """``"boosted=0.1,tampered=0.05,boost=-10"`` (the CLI form)."""
        kwargs: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, eq, value = part.partition("=")
            if not eq or key not in (*ATTACKS, "boost"):
                raise FederationError(
                    f"bad attack {part!r}; use name=fraction with name in {', '.join(ATTACKS)}"
                )
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise FederationError(f"{key} must be a number, got {value!r}") from None
        return cls(**kwargs, num_sites=num_sites, seed=seed)

    def roles(self) -> dict[int, str]:
        """Site index -> attack, for the attacking sites only."""
        order = np.random.default_rng(self.seed + 0xAD).permutation(self.num_sites)
        out: dict[int, str] = {}
        at = 0
        for attack in ATTACKS:
            n = round(getattr(self, attack) * self.num_sites)
            for i in order[at : at + n]:
                out[int(i)] = attack
            at += n
        return out

    def role(self, site: int) -> str | None:
        return self.roles().get(site) if self.active else None


def spoil_delta(attack: str, delta: Arrays, boost: float) -> Arrays:
    """The malicious update an enrolled site sends instead of ``delta``."""
    if attack == "boosted":
        return [(d * np.float32(boost)).astype(np.float32) for d in delta]
    if attack == "nonfinite":
        out = [d.copy() for d in delta]
        out[0].reshape(-1)[::7] = np.nan
        out[-1].reshape(-1)[0] = np.inf
        return out
    if attack == "misshaped":
        return [d.reshape(-1)[: max(1, d.size - 1)].copy() for d in delta]
    return delta


def tamper(envelope: bytes) -> bytes:
    """One flipped bit in the ciphertext, as a network attacker would."""
    b = bytearray(envelope)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


@dataclass(frozen=True)
class AttackingUplink:
    """One simulated site's attack on its own replies (``fedge.federation.Uplink``)."""

    attack: str
    boost: float

    def payload(self, delta: Arrays, spec: CodecSpec, rng: np.random.Generator) -> bytes | None:
        if self.attack == "boosted":
            return encode(spoil_delta(self.attack, delta, self.boost), spec, rng)
        if self.attack in ("nonfinite", "misshaped"):  # raw fp32: the codecs refuse such input
            return encode(spoil_delta(self.attack, delta, self.boost), CodecSpec(CodecId.FP32))
        return None

    def fields(self, fields: dict[str, bytes], state_dir: Path) -> dict[str, bytes]:
        if self.attack == "tampered":
            return {**fields, "env": tamper(fields["env"])}
        if self.attack == "replayed":  # first time: send honestly, keep it; later: resend it
            last = state_dir / LAST_ENVELOPE
            if last.exists():
                return json_fields(last.read_text())
            last.write_text(fields_json(fields))
        return fields


def fields_json(fields: dict[str, bytes]) -> str:
    return json.dumps({k: v.hex() for k, v in fields.items()})


def json_fields(text: str) -> dict[str, bytes]:
    return {k: bytes.fromhex(v) for k, v in json.loads(text).items()}
