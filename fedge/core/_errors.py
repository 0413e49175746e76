"""Errors of the shared formats: one flat family under ``CoreError``."""

from __future__ import annotations

from fedge._errors import FedgeError


class CoreError(FedgeError):
    """Base class of every error the shared formats raise on purpose."""


class BundleError(CoreError):
    """Bytes that are not a well-formed model bundle; the message says what is wrong."""


class ManifestError(CoreError):
    """A policy manifest that is missing a field or holds a field of the wrong kind."""


class SiteRequestError(CoreError):
    """A site request's authentication headers are missing, malformed or not fresh."""
