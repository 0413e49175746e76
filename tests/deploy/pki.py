"""A private CA made for a test with the product's own ``fedge pki`` functions
(:mod:`fedge.security._pki`): ``ca.pem``, and certificates it issues to servers (for
127.0.0.1 and localhost) and to clients (by name)."""

from __future__ import annotations

from pathlib import Path

from fedge.security import init_ca, issue


class PrivateCA:
    """A CA in ``root``: ``ca.pem``, and ``issue`` writes ``<name>.pem`` and ``<name>.key``."""

    def __init__(self, root: Path, common: str = "fedge test CA") -> None:
        self.root = root
        self.cert = init_ca(root, common_name=common, days=1).cert

    def issue(self, name: str, *, server: bool) -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1 and localhost, or a client one for ``name``."""
        names = ("127.0.0.1", "localhost") if server else ()
        made = issue(self.root, name, server_names=names, client=not server, days=1)
        return made.cert, made.key
