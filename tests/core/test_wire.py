"""The signed site request: what is signed, and every way its headers are refused."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fedge.core import (
    NONCE_HEADER,
    REQUEST_CONTEXT,
    SIGNATURE_HEADER,
    SITE_HEADER,
    TIMESTAMP_HEADER,
    SiteRequestError,
    parse_site_request,
    request_message,
    sign_request,
)
from fedge.security import SiteIdentity

PATH = "/api/v1/site/model?v=1"


@pytest.fixture(scope="module")
def site() -> SiteIdentity:
    return SiteIdentity.generate()


def parse(headers: dict[str, str | None], body: bytes = b"", window: float = 300.0) -> object:
    return parse_site_request(method="GET", target=PATH, body=body, headers=headers, window=window)


def test_the_signature_covers_the_canonical_message(site: SiteIdentity) -> None:
    headers: dict[str, str | None] = {**sign_request(site, "get", PATH, b"body")}
    request = parse_site_request(
        method="GET", target=PATH, body=b"body", headers=headers, window=300.0
    )
    assert request.site_id == site.site_id
    assert request.message == request_message(
        "GET",
        PATH,
        b"body",
        str(headers[TIMESTAMP_HEADER]),
        str(headers[NONCE_HEADER]),
        site.site_id.hex(),
    )
    site.public_keys().verify_key().verify(request.signature, request.message, REQUEST_CONTEXT)


def test_the_message_binds_every_part() -> None:
    base = ("GET", PATH, b"", "1.000", "n" * 16, "ab")
    variants = [
        ("POST", *base[1:]),
        (base[0], PATH + "&x", *base[2:]),
        (*base[:2], b"x", *base[3:]),
        (*base[:3], "1.001", *base[4:]),
        (*base[:4], "m" * 16, base[5]),
        (*base[:5], "cd"),
    ]
    messages = {request_message(*v) for v in variants}
    assert len(messages) == len(variants) and request_message(*base) not in messages


Mutate = Callable[[dict[str, str | None]], dict[str, str | None]]
BAD: dict[str, tuple[Mutate, str]] = {
    "no site": (lambda h: {**h, SITE_HEADER: None}, "headers"),
    "no signature": (lambda h: {**h, SIGNATURE_HEADER: ""}, "headers"),
    "site not hex": (lambda h: {**h, SITE_HEADER: "zz"}, "malformed"),
    "signature not base64": (lambda h: {**h, SIGNATURE_HEADER: "***"}, "malformed"),
    "timestamp not a number": (lambda h: {**h, TIMESTAMP_HEADER: "soon"}, "malformed"),
    "timestamp nan": (lambda h: {**h, TIMESTAMP_HEADER: "nan"}, "window"),
    "timestamp inf": (lambda h: {**h, TIMESTAMP_HEADER: "inf"}, "window"),
    "stale": (lambda h: {**h, TIMESTAMP_HEADER: f"{time.time() - 301:.3f}"}, "window"),
    "future": (lambda h: {**h, TIMESTAMP_HEADER: f"{time.time() + 301:.3f}"}, "window"),
    "short nonce": (lambda h: {**h, NONCE_HEADER: "abc"}, "nonce"),
    "long nonce": (lambda h: {**h, NONCE_HEADER: "a" * 65}, "nonce"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_headers_are_refused(site: SiteIdentity, case: str) -> None:
    mutate, message = BAD[case]
    with pytest.raises(SiteRequestError, match=message):
        parse(mutate({**sign_request(site, "GET", PATH)}))
