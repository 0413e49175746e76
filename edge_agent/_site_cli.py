"""``fedge site``: enroll this gNB host with the coordinator (``enroll``), rotate its keys
(``rotate``), and the operator's side of enrollment (``token``, ``list``, ``revoke``).

``enroll`` runs on the site with only ``fedge[agent]``: it reads the site's key file and
KEK from agent.toml's [security], trusts the coordinator's public keys (checked against
``--authority-fingerprint`` when given), proves possession of the site's keys with a
one-time token, then writes the coordinator's keys to ``security.coordinator_keys`` and
the enrolled site id into ``agent.site``, leaving the rest of agent.toml as it was.

``rotate`` makes the site's next key generation, sends the rotation statement (signed by
the old key and the new) in a request signed with the current key, and only once the
coordinator accepted it replaces the key file, in one step; the new file keeps the
previous generation, so envelopes sealed to it still open during the grace period.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedge.edge_agent._errors import AgentError
from fedge.edge_agent._operator_cli import (
    API_KEY_FILE,
    AS_JSON,
    CA_FILE,
    COORDINATOR,
    ca_bundle,
    coordinator_url,
    operator_client,
    show,
)

if TYPE_CHECKING:
    from fedge.core import CoordinatorClient
    from fedge.edge_agent._config import SecurityConfig
    from fedge.security import SitePublicKeys

__all__ = ["EnrollmentError", "RotationError", "enroll_site", "register", "rotate_site",
           "set_agent_site"]  # fmt: skip

_SITE_COLUMNS = ("id", "status", "generation", "archetype", "region", "enrolled_at", "last_seen")
_SITE_ID = re.compile(r"^[0-9a-f]{32}$")
_TABLE = re.compile(r"^\s*\[")
_AGENT_TABLE = re.compile(r"^\s*\[\s*agent\s*\]\s*(#.*)?$")
_SITE_KEY = re.compile(r"^\s*site\s*=")


_CONFIG = typer.Option(Path("agent.toml"), "--config", help="The agent config.")


class EnrollmentError(AgentError):
    """Enrollment refused on the site's side: an untrusted coordinator key, a malformed
    answer, or files it cannot write."""


class RotationError(AgentError):
    """Key rotation not done: the coordinator refused or did not answer (the key file is
    unchanged), or accepted it and the new key file could not be written."""


@dataclass(frozen=True)
class Rotated:
    site_id: str
    generation: int
    key_file: Path


@dataclass(frozen=True)
class Enrolled:
    site_id: str
    authority_fingerprint: str
    fingerprint_checked: bool
    coordinator_keys: Path
    config: Path


def _security(config: Path) -> SecurityConfig:
    """agent.toml's [security] section (the rest is not needed here,
    and ``agent.site`` may not be set before the first enrollment)."""
    from fedge.edge_agent._config import _Section, _security
    from fedge.edge_agent._errors import ConfigError

    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{config}: cannot read config: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config}: config is not UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config}: not valid TOML: {exc}") from exc
    table = data.get("security")
    if not isinstance(table, dict):
        raise ConfigError(
            f"{config}: needs a [security] section with key_file and coordinator_keys"
        )
    return _security(_Section(table, "security", config.parent.resolve()))


def _fingerprint(value: str) -> str:
    cleaned = value.strip().lower().replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{32}", cleaned):
        raise EnrollmentError(
            f"--authority-fingerprint: 32 hex digits (`fedge keys show` on the coordinator's "
            f"key file prints it), got {value!r}"
        )
    return cleaned


def _authority(client: CoordinatorClient) -> SitePublicKeys:
    from fedge.security import SecurityError, SitePublicKeys

    answer = client.get_json("/api/v1/enrollment/authority")
    try:
        raw = base64.b64decode(answer["public_keys_base64"], validate=True)
        return SitePublicKeys.from_bytes(raw)
    except (TypeError, KeyError, binascii.Error, SecurityError) as exc:
        raise EnrollmentError(f"the coordinator's public keys are malformed: {exc}") from exc


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` in one step: a crash leaves the old file or the new, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise EnrollmentError(f"cannot write {path}: {exc.strerror or exc}") from exc


def set_agent_site(text: str, site_id: str) -> str:
    """agent.toml's text with ``[agent] site`` set to ``site_id``; every other line kept."""
    line = f'site = "{site_id}"'
    lines = text.splitlines(keepends=True)
    start = next((i for i, s in enumerate(lines) if _AGENT_TABLE.match(s)), None)
    if start is None:  # no [agent] table yet: one before the first table
        first = next((i for i, s in enumerate(lines) if _TABLE.match(s)), len(lines))
        lines[first:first] = ["[agent]\n", line + "\n", "\n"]
    else:
        end = next((i for i in range(start + 1, len(lines)) if _TABLE.match(lines[i])), len(lines))
        at = next((i for i in range(start + 1, end) if _SITE_KEY.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, line + "\n")
        else:
            lines[at] = line + ("\n" if lines[at].endswith("\n") else "")
    updated = "".join(lines)
    try:
        agent = tomllib.loads(updated).get("agent", {})
    except tomllib.TOMLDecodeError:
        agent = {}
    if not isinstance(agent, dict) or agent.get("site") != site_id:
        raise EnrollmentError(
            f"cannot set agent.site in the config (an [agent] table, not inline): "
            f'set site = "{site_id}" by hand'
        )
    return updated


def enroll_site(
    url: str,
    token: str,
    config: Path,
    authority_fingerprint: str | None = None,
    *,
    archetype: str | None = None,
    region: str | None = None,
    ca_file: Path | None = None,
) -> Enrolled:
    """Enroll the site of ``config`` with the coordinator at ``url``."""
    from fedge.core import CoordinatorClient
    from fedge.security import enrollment_request, load_identity, prove_possession, read_kek

    expected = _fingerprint(authority_fingerprint) if authority_fingerprint else None
    for flag, value in (("--archetype", archetype), ("--region", region)):
        if value is not None and not 0 < len(value) <= 64:
            raise EnrollmentError(f"{flag}: 1 to 64 characters, got {len(value)}")
    security = _security(config)
    identity = load_identity(security.key_file, read_kek(security.kek_file))
    text = config.read_text(encoding="utf-8")
    updated = set_agent_site(text, identity.site_id.hex())  # refused before anything is sent
    client = CoordinatorClient(url, ca_file=ca_file)
    authority = _authority(client)
    seen = authority.key_fingerprint().hex()
    if expected is not None and seen != expected:
        raise EnrollmentError(
            f"the coordinator at {url} presents the key fingerprint {seen}, not {expected}: "
            "nothing was sent"
        )
    request = enrollment_request(identity, token.strip(), authority)
    begun = client.post_json(
        "/api/v1/enrollment/begin", {"request_base64": base64.b64encode(request).decode()}
    )
    try:
        challenge = base64.b64decode(begun["challenge_base64"], validate=True)
    except (TypeError, KeyError, binascii.Error) as exc:
        raise EnrollmentError(f"the coordinator's challenge is malformed: {exc}") from exc
    proof = prove_possession(identity, challenge)
    body: dict[str, object] = {
        "site_id": identity.site_id.hex(),
        "proof_base64": base64.b64encode(proof).decode(),
    }
    if archetype:
        body["archetype"] = archetype
    if region:
        body["region"] = region
    site = client.post_json("/api/v1/enrollment/complete", body)
    site_id = site.get("id") if isinstance(site, dict) else None
    if site_id != identity.site_id.hex():
        raise EnrollmentError(f"the coordinator registered an unexpected site: {site!r}")
    _write_atomic(security.coordinator_keys, authority.to_bytes(), 0o644)
    _write_atomic(config, updated.encode(), config.stat().st_mode & 0o777)
    return Enrolled(site_id, seen, expected is not None, security.coordinator_keys, config)


def _config_coordinator(config: Path) -> tuple[str | None, Path | None]:
    """agent.toml's ``[coordinator] url`` and ``ca_file``, when it has them."""
    try:
        table = tomllib.loads(config.read_text(encoding="utf-8")).get("coordinator")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None, None  # _security() reported the config's problem already
    if not isinstance(table, dict):
        return None, None
    url, ca_file = table.get("url"), table.get("ca_file")
    ca = config.parent.resolve() / ca_file if isinstance(ca_file, str) and ca_file else None
    return (url if isinstance(url, str) and url else None), ca


def rotate_site(config: Path, url: str | None = None) -> Rotated:
    """Rotate the keys of the site of ``config`` with the coordinator at ``url`` (else
    ``$FEDGE_COORDINATOR_URL``, else agent.toml's ``[coordinator] url``)."""
    from fedge.core import ApiError, SiteClient
    from fedge.security import KeyStoreError, load_identity, read_kek, save_identity

    security = _security(config)
    kek = read_kek(security.kek_file)
    identity = load_identity(security.key_file, kek)
    from_config, ca_file = _config_coordinator(config)
    if url is None and not os.environ.get("FEDGE_COORDINATOR_URL", "").strip():
        url = from_config
    if not os.access(security.key_file.parent, os.W_OK):  # checked before anything is sent
        raise RotationError(f"cannot write to {security.key_file.parent}: nothing was sent")
    new, statement = identity.rotate()
    unchanged = f"{security.key_file} is unchanged"
    try:
        client = SiteClient(coordinator_url(url), identity, ca_file=ca_file)
        answer = client.post_json(
            "/api/v1/site/rotate", {"statement_base64": base64.b64encode(statement).decode()}
        )
    except ApiError as exc:
        raise RotationError(
            f"the coordinator did not accept the rotation: {exc}; {unchanged}"
        ) from exc
    site = answer if isinstance(answer, dict) else {}
    if site.get("id") != new.site_id.hex() or site.get("generation") != new.generation:
        raise RotationError(
            f"the coordinator answered the rotation unexpectedly ({answer!r}); {unchanged}"
        )
    try:
        save_identity(security.key_file, new, kek, overwrite=True)
    except KeyStoreError as exc:
        raise RotationError(
            f"the coordinator now holds generation {new.generation} but {exc}; the previous "
            "key is accepted only during the grace period: revoke and re-enroll the site"
        ) from exc
    return Rotated(new.site_id.hex(), new.generation, security.key_file)


def register(app: typer.Typer) -> None:
    """Add the ``site`` sub-command to the ``fedge`` application."""
    site = typer.Typer(
        help="Sites: enroll this gNB host, rotate its keys; issue tokens, list, revoke sites."
    )

    @site.command("enroll")
    def enroll(
        token: str = typer.Option(..., "--token", help="The one-time enrollment token."),
        config: Path = _CONFIG,
        authority_fingerprint: str | None = typer.Option(
            None,
            "--authority-fingerprint",
            help="The coordinator's key fingerprint (hex), checked before anything is sent.",
        ),
        archetype: str | None = typer.Option(None, "--archetype", help="The site's archetype."),
        region: str | None = typer.Option(None, "--region", help="The site's region."),
        coordinator: str | None = COORDINATOR,
        ca_file: Path | None = CA_FILE,
    ) -> None:
        """Enroll this site: prove its keys with a token, store the coordinator's keys."""
        done = enroll_site(
            coordinator_url(coordinator),
            token,
            config,
            authority_fingerprint,
            archetype=archetype,
            region=region,
            ca_file=ca_bundle(ca_file) or _config_coordinator(config)[1],
        )
        typer.echo(f"site id:            {done.site_id}")
        note = "checked" if done.fingerprint_checked else "trusted on first use: check it"
        typer.echo(f"coordinator key:    {done.authority_fingerprint} ({note})")
        typer.echo(f"coordinator keys:   {done.coordinator_keys}")
        typer.echo(f"agent config:       {done.config} (agent.site set)")

    @site.command("rotate")
    def rotate(config: Path = _CONFIG, coordinator: str | None = COORDINATOR) -> None:
        """Rotate this site's keys: the coordinator takes the next generation, then the key
        file is replaced (it keeps the previous generation; restart the agent to sign with
        the new key before the coordinator's grace period ends)."""
        done = rotate_site(config, coordinator)
        typer.echo(f"site id:            {done.site_id}")
        typer.echo(f"key generation:     {done.generation}")
        typer.echo(f"key file:           {done.key_file} (replaced)")

    @site.command("token")
    def token_(
        ttl: float = typer.Option(86400.0, "--ttl", help="Seconds the token stays valid."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """Issue a one-time enrollment token (operator); hand it to the site out of band."""
        if not 0 < ttl <= 30 * 86400:
            raise typer.BadParameter("between 0 and 30 days (2592000 s)", param_hint="--ttl")
        client = operator_client(coordinator, api_key_file, ca_file)
        issued = client.post_json("/api/v1/enrollment/tokens", {"ttl_seconds": ttl})
        if as_json:
            show(issued, (), as_json=True)
        else:
            typer.echo(issued["token"])

    @site.command("list")
    def list_sites(
        status: str | None = typer.Option(None, "--status", help="active or revoked."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """The enrolled sites."""
        from urllib.parse import quote

        client = operator_client(coordinator, api_key_file, ca_file)
        path = "/api/v1/sites" + (f"?status={quote(status)}" if status else "")
        show(client.get_json(path), _SITE_COLUMNS, as_json=as_json)

    @site.command("revoke")
    def revoke(
        site_id: str = typer.Argument(..., help="The site's id (32 hex digits)."),
        coordinator: str | None = COORDINATOR,
        api_key_file: Path | None = API_KEY_FILE,
        ca_file: Path | None = CA_FILE,
        as_json: bool = AS_JSON,
    ) -> None:
        """Revoke a site (admin): its signed requests and envelopes are refused from now on."""
        if not _SITE_ID.match(site_id):
            raise typer.BadParameter("32 lowercase hex digits", param_hint="SITE_ID")
        client = operator_client(coordinator, api_key_file, ca_file)
        show(client.post_json(f"/api/v1/sites/{site_id}/revoke", {}), _SITE_COLUMNS,
             as_json=as_json)  # fmt: skip

    app.add_typer(site, name="site")
