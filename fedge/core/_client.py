"""A small HTTP client for the coordinator's API, on the standard library alone.

Operators' commands and the site's enrollment run from any install (``fedge[agent]``
included), so they talk to the coordinator without a third-party HTTP stack. Every failure
leaves here as an :class:`ApiError`: urllib's exceptions never reach the caller.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedge.core._errors import CoreError
from fedge.core._wire import RequestSigner, sign_request

__all__ = ["ApiError", "CoordinatorClient", "CoordinatorUnreachable", "SiteClient"]

#: The header that carries an operator's API key.
API_KEY_HEADER = "X-API-Key"


class ApiError(CoreError):
    """The coordinator answered ``status`` >= 400; ``detail`` is its problem's one line.
    ``status`` 0: no answer (or nothing sent: a bad URL, key or setting)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status} {detail}" if status else detail)


class CoordinatorUnreachable(ApiError):  # noqa: N818 - an ApiError, status 0
    """No answer at all (refused, unknown host, timeout, TLS): ``status`` is 0."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(0, f"the coordinator at {url} is unreachable: {reason}")


def _detail(status: int, body: bytes) -> str:
    """The problem's ``detail`` (a string, or FastAPI's list of validation errors)."""
    try:
        parsed: Any = jsonlib.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or http.client.responses.get(status, "error")
    detail = parsed.get("detail") if isinstance(parsed, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # request validation: "field: message; ..."
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
        if parts:
            return "; ".join(parts)
    return http.client.responses.get(status, "error")


class CoordinatorClient:
    """One coordinator's API at ``base_url`` (``http://host:port``), with an optional
    operator key; ``ca_file`` trusts a private CA for ``https``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ApiError(0, f"not a coordinator URL (http[s]://host[:port]): {base_url!r}")
        try:
            parsed.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ApiError(0, f"not a coordinator URL: {base_url!r} ({exc})") from exc
        if api_key is not None and not (api_key.isascii() and api_key.isprintable()):
            raise ApiError(0, "the API key holds characters an HTTP header cannot carry")
        if timeout <= 0:
            raise ApiError(0, f"the timeout must be positive, not {timeout}")
        self.base_url = base_url.strip().rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            try:
                self._context = ssl.create_default_context(
                    cafile=str(ca_file) if ca_file is not None else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise ApiError(0, f"cannot read the CA file {ca_file}: {exc}") from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        json: object | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send one request; (status, headers, body) for a status below 400."""
        extra = headers
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        if extra:
            headers.update(extra)
        url = self.base_url + "/" + path.lstrip("/")
        req = urllib.request.Request(url, data=body, headers=headers, method=method.upper())
        try:
            wait = self.timeout if timeout is None else timeout
            with urllib.request.urlopen(req, timeout=wait, context=self._context) as ans:
                return ans.status, dict(ans.headers.items()), ans.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read() if exc.fp is not None else b""
            raise ApiError(exc.code, _detail(exc.code, payload)) from exc
        except urllib.error.URLError as exc:
            raise CoordinatorUnreachable(self.base_url, str(exc.reason)) from exc
        except TimeoutError as exc:
            raise CoordinatorUnreachable(self.base_url, "timed out") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise CoordinatorUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from exc

    def _json(self, method: str, path: str, obj: object | None = None) -> Any:
        status, _, payload = self.request(method, path, json=obj)
        if not payload:
            return None
        try:
            return jsonlib.loads(payload)
        except ValueError as exc:
            raise ApiError(status, f"the answer to {method} {path} is not JSON") from exc

    def get_json(self, path: str) -> Any:
        return self._json("GET", path)

    def post_json(self, path: str, obj: object) -> Any:
        return self._json("POST", path, obj)

    def delete_json(self, path: str) -> Any:
        return self._json("DELETE", path)


class SiteClient:
    """The coordinator's API as one site calls it: every request signed with the site's
    identity (``fedge.core.sign_request``), the target including its query string."""

    def __init__(
        self,
        base_url: str,
        signer: RequestSigner,
        *,
        timeout: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        self.http = CoordinatorClient(base_url, timeout=timeout, ca_file=ca_file)
        self.signer = signer

    @property
    def base_url(self) -> str:
        return self.http.base_url

    def request(
        self,
        method: str,
        path: str,
        *,
        json: object | None = None,
        query: Mapping[str, str | int | float] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One signed request; (status, headers, body) below 400, else :class:`ApiError`."""
        target = "/" + path.lstrip("/")
        if query:
            target += "?" + urllib.parse.urlencode(query)
        body = b"" if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        headers = sign_request(self.signer, method, target, body)
        if json is not None:
            headers["Content-Type"] = "application/json"
        return self.http.request(
            method,
            target,
            body=body if json is not None else None,
            headers=headers,
            timeout=timeout,
        )

    def get_json(self, path: str, query: Mapping[str, str | int | float] | None = None) -> Any:
        status, _, payload = self.request("GET", path, query=query)
        return _parse(status, "GET", path, payload)

    def post_json(self, path: str, obj: object) -> Any:
        status, _, payload = self.request("POST", path, json=obj)
        return _parse(status, "POST", path, payload)


def _parse(status: int, method: str, path: str, payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return jsonlib.loads(payload)
    except ValueError as exc:
        raise ApiError(status, f"the answer to {method} {path} is not JSON") from exc
