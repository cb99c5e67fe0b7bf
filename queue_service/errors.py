"""The service's domain errors; ``api/errors.py`` is the one place that maps them to HTTP.

    GpuqError
    ├── NotFound            (404)
    ├── Conflict            (409)
    │   ├── StaleAttempt    (409)
    │   └── lifecycle.table.IllegalTransition (409)
    ├── InvalidRequest      (422)
    ├── Unauthenticated     (401)
    └── Forbidden           (403)
"""

from __future__ import annotations


class GpuqError(Exception):
    """Base of every gpuq service error."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(GpuqError):
    """The thing does not exist, or the caller may not know it does."""


class Conflict(GpuqError):
    """The request is valid but clashes with the current state (``job_state``: the job's, when one is involved)."""

    def __init__(self, message: str, *, field: str | None = None, state: str | None = None) -> None:
        super().__init__(message, field=field)
        self.job_state = state


class StaleAttempt(Conflict):
    """A report about an attempt that is no longer the job's current one (fencing)."""


class InvalidRequest(GpuqError):
    """The request is malformed or asks for something impossible."""


class Unauthenticated(GpuqError):
    """No token, or a token that is not valid."""


class Forbidden(GpuqError):
    """The caller's role may not do this."""
