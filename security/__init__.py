"""Post-quantum identities, hybrid-KEM sessions and sealed envelopes."""

__all__: list[str] = []
