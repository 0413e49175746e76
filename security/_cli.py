"""``fedge keys init|show|rotate``: a site's key file, encrypted at rest; ``fedge pki
init|issue``: the private CA and certificates of the transports' TLS.

Typed errors propagate; ``fedge._cli.main`` turns them into one line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from fedge.security._identity import SiteIdentity

DEFAULT_KEY_FILE = Path("fedge-site.key")

_KEY_FILE = typer.Option(DEFAULT_KEY_FILE, "--key-file", help="Encrypted site key file.")
_KEK_FILE = typer.Option(
    None, "--kek-file", help="File holding the key-encryption key (default: $FEDGE_KEK)."
)


def _print(identity: SiteIdentity, path: Path) -> None:
    keys = identity.public_keys()
    typer.echo(f"site id:         {identity.site_id.hex()}")
    typer.echo(f"key generation:  {identity.generation}")
    typer.echo(f"key fingerprint: {keys.key_fingerprint().hex()}")
    typer.echo("suite:           MLDSA65-Ed25519-SHA512 + X-Wing (ML-KEM-768 + X25519)")
    if identity.previous is not None:
        typer.echo(f"previous key:    generation {identity.previous.generation} (kept for grace)")
    typer.echo(f"key file:        {path}")


_FORCE = typer.Option(False, "--force", help="Replace an existing key file.")
_STATEMENT = typer.Option(
    None, "--statement", help="Where to write the rotation statement for the registry."
)


def register(app: typer.Typer) -> None:
    """Add the ``keys`` sub-command to the ``fedge`` application."""
    keys = typer.Typer(help="Site identity keys (post-quantum, encrypted at rest).")

    @keys.command("init")
    def init(
        key_file: Path = _KEY_FILE,
        kek_file: Path | None = _KEK_FILE,
        force: bool = _FORCE,
    ) -> None:
        """Create a new site identity and write it encrypted (mode 0600)."""
        from fedge.security._errors import KeyStoreError
        from fedge.security._identity import SiteIdentity
        from fedge.security._keystore import read_kek, save_identity

        kek = read_kek(kek_file)
        if key_file.exists() and not force:
            raise KeyStoreError(f"{key_file} exists; pass --force to replace it")
        identity = SiteIdentity.generate()
        save_identity(key_file, identity, kek, overwrite=force)
        _print(identity, key_file)

    @keys.command("show")
    def show(key_file: Path = _KEY_FILE, kek_file: Path | None = _KEK_FILE) -> None:
        """Print the site id and key fingerprint (never the private keys)."""
        from fedge.security._keystore import load_identity, read_kek

        _print(load_identity(key_file, read_kek(kek_file)), key_file)

    @keys.command("rotate")
    def rotate(
        key_file: Path = _KEY_FILE,
        kek_file: Path | None = _KEK_FILE,
        statement: Path | None = _STATEMENT,
    ) -> None:
        """Replace the keys, keep the site id; the old keys stay for the grace period."""
        from fedge.security._errors import KeyStoreError
        from fedge.security._keystore import load_identity, read_kek, save_identity

        kek = read_kek(kek_file)
        identity = load_identity(key_file, kek)
        rotated, proof = identity.rotate()
        out = statement or key_file.with_name(f"{key_file.name}.rotation-{rotated.generation}")
        try:  # the statement first: new keys nobody can register would strand the site
            out.write_bytes(proof)
        except OSError as exc:
            raise KeyStoreError(f"cannot write rotation statement {out}: {exc.strerror}") from exc
        save_identity(key_file, rotated, kek, overwrite=True)
        _print(rotated, key_file)
        typer.echo(f"rotation statement: {out} (send it to the coordinator)")

    app.add_typer(keys, name="keys")
    register_pki(app)


_CA_DIR = typer.Option(Path("fedge-ca"), "--dir", help="The CA's directory (ca.pem, ca.key).")
_DAYS_CA = typer.Option(1825, "--days", help="How long the CA is valid.")
_DAYS = typer.Option(365, "--days", help="How long the certificate is valid (at most the CA's).")
_SERVER_NAME = typer.Option(
    [], "--server-name", help="An address clients dial (DNS name or IP); repeat for several."
)
_CLIENT = typer.Option(False, "--client", help="A client certificate (the broker user name).")


def register_pki(app: typer.Typer) -> None:
    """Add the ``pki`` sub-command: the fleet's transport-TLS CA and certificates."""
    pki = typer.Typer(
        help="Transport TLS: a private CA and the fleet's certificates (broker, HTTPS, SuperLink)."
    )

    @pki.command("init")
    def init(
        directory: Path = _CA_DIR,
        name: str = typer.Option("fedge CA", "--name", help="The CA's common name."),
        days: int = _DAYS_CA,
        force: bool = _FORCE,
    ) -> None:
        """Make a private CA (EC P-256): ca.pem for every host, ca.key kept here (0600)."""
        from fedge.security._pki import init_ca

        made = init_ca(directory, common_name=name, days=days, force=force)
        typer.echo(f"CA certificate: {made.cert}")
        typer.echo(f"CA key:         {made.key} (keep it off the hosts)")

    @pki.command("issue")
    def issue_cmd(
        name: str = typer.Argument(..., help="The certificate's name and file stem."),
        directory: Path = _CA_DIR,
        server_name: list[str] = _SERVER_NAME,
        client: bool = _CLIENT,
        days: int = _DAYS,
        force: bool = _FORCE,
    ) -> None:
        """Issue NAME.pem and NAME.key (0600) from the CA, for a server, a client or both."""
        from fedge.security._pki import issue

        made = issue(
            directory, name, server_names=server_name, client=client, days=days, force=force
        )
        typer.echo(f"certificate: {made.cert}")
        typer.echo(f"key:         {made.key}")

    app.add_typer(pki, name="pki")
