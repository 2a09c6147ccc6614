"""Errors the gateway's domain raises; gateway.problems turns each into problem+json.

Messages are written for the API caller: short, safe to show, and saying how to fix the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.accounting_schemas import BudgetExceededDetails


class AuthenticationFailed(Exception):
    """No usable bearer token: missing, malformed, expired, badly signed or for someone else.

    ``reason`` is a short phrase ("token expired", "wrong audience") for the client;
    ``token_present`` is False when the request carried no credentials at all.
    """

    def __init__(self, reason: str, *, token_present: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token_present = token_present


class PermissionDenied(Exception):
    """The caller is authenticated but its roles do not allow this action."""


class NotFound(Exception):
    """The resource does not exist, or the caller may not know that it does."""


class Conflict(Exception):
    """The request clashes with the current state (duplicate id, resource in use, ...)."""


class JobStateConflict(Conflict):
    """The job's current state does not allow the action; ``state`` goes into the problem."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


class InvalidField(Exception):
    """A well-formed request whose field value cannot be accepted; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class QuotaExceeded(Exception):
    """A write would take the tenant's storage past its quota; the figures go into the problem."""

    def __init__(self, *, used: int, reserved: int, limit: int, requested: int) -> None:
        super().__init__(
            f"storing {requested} more bytes would exceed the storage quota: {used} bytes used"
            f" and {reserved} held by uploads in progress, of {limit}"
        )
        self.used = used
        self.reserved = reserved
        self.limit = limit
        self.requested = requested


class PreconditionFailed(Exception):
    """A conditional request (If-Match / If-None-Match) does not hold for the current state."""


class RangeNotSatisfiable(Exception):
    """No byte of the requested range lies inside the file of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range is outside the file's {size} bytes")
        self.size = size


class IncompleteBody(Exception):
    """The request body ended early (short of its Content-Length, or the client hung up); nothing
    was stored."""


class BudgetExceeded(Exception):
    """Admitting the job would take the tenant's projected use to the refusal threshold of its
    budget; ``details`` (every term, the budget, the threshold) goes into the 402 problem."""

    def __init__(self, message: str, details: BudgetExceededDetails) -> None:
        super().__init__(message)
        self.details = details
