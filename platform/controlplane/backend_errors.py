"""The domain errors a backend raises; the routes turn each into one HTTP status.

Below both the backends and what they use (the Prometheus source raises Unavailable too), so
nothing that a backend imports has to import the backends' package back.
"""

from __future__ import annotations


class BackendError(Exception):
    """Base of the errors a backend raises; each maps to one HTTP status in the routes."""


class NotFound(BackendError):
    pass


class AlreadyExists(BackendError):
    pass


class Invalid(BackendError):
    """The request breaks a rule the backend enforces (e.g. the API server's CEL rules)."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class Unavailable(BackendError):
    """Something the backend depends on (API server, Prometheus) did not answer."""


class StorageFull(Unavailable):
    """The disk holding the backend's state has no room: writes fail until it has."""
