"""msgspec Structs that define the HTTP API's request and response bodies."""

from __future__ import annotations

from typing import Literal

import msgspec


class HealthStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness: the process is up and serving requests."""

    status: Literal["ok"] = "ok"


class ReadinessReport(msgspec.Struct, frozen=True, kw_only=True):
    """Readiness: every dependency check passed."""

    status: Literal["ready"] = "ready"
    checks: list[str]


class ServiceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What this service is and which API version it speaks."""

    name: str
    version: str
    api_version: str


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One invalid input field and what is wrong with it."""

    field: str
    message: str


class FailedCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One readiness check that did not pass, and why."""

    name: str
    message: str


class ProblemDetails(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem document; extension members are omitted when empty."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None
    failed_checks: list[FailedCheck] | None = None
