"""Base64 at the API boundary: bad input is a 422, never a 500."""

from __future__ import annotations

import base64
import binascii

from fedge.coordinator._errors import InvalidInputError


def unb64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{name} is not base64") from exc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
