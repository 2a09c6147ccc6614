"""The one place where errors become RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from accounting.rate_cards import RateCardError
from gateway.api_schemas import FailedCheck, FieldError, ProblemDetails
from gateway.domain_errors import (
    AuthenticationFailed,
    BudgetExceeded,
    Conflict,
    IncompleteBody,
    InvalidField,
    JobStateConflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    QuotaExceeded,
    RangeNotSatisfiable,
)
from gateway.readiness import ServiceNotReady
from slurm.errors import JobSpecError, SlurmError, SlurmRejected, SlurmUnavailable
from staging.storage_errors import (
    DigestMismatch,
    InvalidObjectPath,
    ObjectMissing,
    SizeLimitExceeded,
    StorageUnavailable,
)

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# RFC 9457: "about:blank" means the problem is fully described by the HTTP status.
GENERIC_PROBLEM_TYPE = "about:blank"
PROBLEM_TYPE_PREFIX = "urn:slurm-gateway:problem:"
AUTH_REALM = "slurm-gateway"
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]+)`(?: - at `\$([^`]*)`)?")


def problem_exception_handlers() -> ExceptionHandlersMap:
    """Exception handlers to install on the Litestar app."""
    return {
        ValidationException: handle_validation_exception,
        HTTPException: handle_http_exception,
        ServiceNotReady: handle_service_not_ready,
        AuthenticationFailed: handle_authentication_failed,
        PermissionDenied: handle_permission_denied,
        NotFound: handle_not_found,
        Conflict: handle_conflict,
        InvalidField: handle_invalid_field,
        JobSpecError: handle_invalid_field,
        SlurmRejected: handle_slurm_rejected,
        SlurmUnavailable: handle_slurm_unavailable,
        SlurmError: handle_slurm_error,
        QuotaExceeded: handle_quota_exceeded,
        BudgetExceeded: handle_budget_exceeded,
        RateCardError: handle_invalid_field,
        SizeLimitExceeded: handle_size_limit_exceeded,
        PreconditionFailed: handle_precondition_failed,
        RangeNotSatisfiable: handle_range_not_satisfiable,
        IncompleteBody: handle_incomplete_body,
        InvalidObjectPath: handle_invalid_object_path,
        DigestMismatch: handle_digest_mismatch,
        StorageUnavailable: handle_storage_unavailable,
        ObjectMissing: handle_object_missing,
        Exception: handle_unexpected_exception,
    }


def problem_response(
    request: Request[Any, Any, Any],
    problem: ProblemDetails,
    headers: Mapping[str, str] | None = None,
) -> Response[ProblemDetails]:
    """Build a problem+json response, using the request path as ``instance``."""
    if problem.instance is None:
        problem = msgspec.structs.replace(problem, instance=request.url.path)
    return Response(
        content=problem,
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


def handle_validation_exception(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[ProblemDetails]:
    """Litestar request validation failed: 400 with one entry per invalid field."""
    return problem_response(
        request,
        ProblemDetails(
            type=f"{PROBLEM_TYPE_PREFIX}validation-failed",
            title="Request validation failed",
            status=exc.status_code,
            detail=exc.detail,
            errors=_field_errors(exc.extra),
        ),
        exc.headers,
    )


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ProblemDetails]:
    """Litestar HTTP errors (404, 405, ...) keep their status, detail and headers (e.g. Allow)."""
    status = exc.status_code
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        # Server-side details may describe internals; log them, answer generically.
        logger.error("HTTP %d on %s %s: %s", status, request.method, request.url.path, exc.detail)
        detail = HTTPStatus(status).phrase
    else:
        detail = exc.detail
    problem = ProblemDetails(
        type=GENERIC_PROBLEM_TYPE, title=HTTPStatus(status).phrase, status=status, detail=detail
    )
    return problem_response(request, problem, exc.headers)


def handle_service_not_ready(
    request: Request[Any, Any, Any], exc: ServiceNotReady
) -> Response[ProblemDetails]:
    """Readiness checks failed: 503 listing each failed check and its reason."""
    names = ", ".join(outcome.name for outcome in exc.failed)
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}not-ready",
        title="Service not ready",
        status=HTTPStatus.SERVICE_UNAVAILABLE,
        detail=f"readiness checks failed: {names}",
        failed_checks=[
            FailedCheck(name=outcome.name, message=outcome.failure or "") for outcome in exc.failed
        ],
    )
    return problem_response(request, problem)


def handle_authentication_failed(
    request: Request[Any, Any, Any], exc: AuthenticationFailed
) -> Response[ProblemDetails]:
    """No valid bearer token: 401 with an RFC 6750 ``WWW-Authenticate`` challenge."""
    challenge = f'Bearer realm="{AUTH_REALM}"'
    # RFC 6750 §3.1: a request without credentials gets the bare challenge, no error code.
    if exc.token_present:
        challenge += f', error="invalid_token", error_description="{_quotable(exc.reason)}"'
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}unauthenticated",
        title="Authentication required",
        status=HTTPStatus.UNAUTHORIZED,
        detail=exc.reason,
    )
    return problem_response(request, problem, {"WWW-Authenticate": challenge})


def handle_permission_denied(
    request: Request[Any, Any, Any], exc: PermissionDenied
) -> Response[ProblemDetails]:
    """Authenticated, but the roles do not allow it: 403."""
    return _simple_problem(request, HTTPStatus.FORBIDDEN, "forbidden", str(exc))


def handle_not_found(request: Request[Any, Any, Any], exc: NotFound) -> Response[ProblemDetails]:
    """Unknown resource (or one the caller may not see): 404."""
    return _simple_problem(request, HTTPStatus.NOT_FOUND, "not-found", str(exc))


def handle_conflict(request: Request[Any, Any, Any], exc: Conflict) -> Response[ProblemDetails]:
    """The request clashes with the current state: 409 (naming the job's state when it is why)."""
    status = HTTPStatus.CONFLICT
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}conflict",
        title=status.phrase,
        status=status,
        detail=str(exc),
        state=exc.state if isinstance(exc, JobStateConflict) else None,
    )
    return problem_response(request, problem)


def handle_invalid_field(
    request: Request[Any, Any, Any], exc: InvalidField | JobSpecError | RateCardError
) -> Response[ProblemDetails]:
    """A field's value cannot be accepted: 422 naming the field and how to fix it."""
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}invalid-field",
        title="Invalid field",
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail=f"{exc.field}: {exc.message}",
        errors=[FieldError(field=exc.field, message=exc.message)],
    )
    return problem_response(request, problem)


def handle_slurm_rejected(request: Request[Any, Any, Any], exc: SlurmRejected) -> Response[ProblemDetails]:
    """Slurm refused the request for a reason the caller can fix: 422, naming the field if known."""
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}slurm-rejected",
        title="Rejected by Slurm",
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail=exc.message,
        errors=[FieldError(field=exc.field, message=exc.message)] if exc.field else None,
    )
    return problem_response(request, problem)


def handle_slurm_unavailable(
    request: Request[Any, Any, Any], exc: SlurmUnavailable
) -> Response[ProblemDetails]:
    """Slurm could not be reached: 503, with the runner's one-line summary."""
    logger.warning("Slurm unavailable on %s %s: %s", request.method, request.url.path, exc)
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}slurm-unavailable",
        title="Slurm unavailable",
        status=HTTPStatus.SERVICE_UNAVAILABLE,
        detail=str(exc),
    )
    return problem_response(request, problem)


def handle_slurm_error(request: Request[Any, Any, Any], exc: SlurmError) -> Response[ProblemDetails]:
    """Slurm answered something unusable: 502 (bad gateway)."""
    logger.error("Slurm error on %s %s: %s", request.method, request.url.path, exc)
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}slurm-error",
        title="Unexpected answer from Slurm",
        status=HTTPStatus.BAD_GATEWAY,
        detail=str(exc),
    )
    return problem_response(request, problem)


def handle_quota_exceeded(request: Request[Any, Any, Any], exc: QuotaExceeded) -> Response[ProblemDetails]:
    """The write would pass the tenant's storage quota: 413 with used, reserved, limit, requested."""
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}storage-quota-exceeded",
        title="Storage quota exceeded",
        status=status,
        detail=f"{exc}; delete files you no longer need or ask an admin for a larger quota",
        used_bytes=exc.used,
        reserved_bytes=exc.reserved,
        limit_bytes=exc.limit,
        requested_bytes=exc.requested,
    )
    return problem_response(request, problem)


def handle_budget_exceeded(request: Request[Any, Any, Any], exc: BudgetExceeded) -> Response[ProblemDetails]:
    """Admitting the job would reach the refusal threshold of the tenant's budget: 402 showing
    the budget, every term of the projected use and how to get under the threshold."""
    status = HTTPStatus.PAYMENT_REQUIRED
    details = exc.details
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}budget-exceeded",
        title="Budget exceeded",
        status=status,
        detail=str(exc),
        period=details.period,
        budget=details.budget,
        terms=details.terms,
        projected=details.projected,
        refusal_threshold=details.refusal_threshold,
        exceeded=details.exceeded,
    )
    return problem_response(request, problem)


def handle_size_limit_exceeded(
    request: Request[Any, Any, Any], exc: SizeLimitExceeded
) -> Response[ProblemDetails]:
    """More bytes than allowed (the file size limit, or the declared Content-Length): 413."""
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}too-large",
        title=status.phrase,
        status=status,
        detail=f"the body has {exc}; nothing was stored",
        limit_bytes=exc.limit,
    )
    return problem_response(request, problem)


def handle_precondition_failed(
    request: Request[Any, Any, Any], exc: PreconditionFailed
) -> Response[ProblemDetails]:
    """If-Match / If-None-Match did not hold: 412."""
    return _simple_problem(request, HTTPStatus.PRECONDITION_FAILED, "precondition-failed", str(exc))


def handle_incomplete_body(request: Request[Any, Any, Any], exc: IncompleteBody) -> Response[ProblemDetails]:
    """The body ended early: 400 (the client's connection or Content-Length, never ours)."""
    return _simple_problem(request, HTTPStatus.BAD_REQUEST, "incomplete-body", str(exc))


def handle_range_not_satisfiable(
    request: Request[Any, Any, Any], exc: RangeNotSatisfiable
) -> Response[ProblemDetails]:
    """A Range header outside the file: 416 with ``Content-Range: bytes */<size>`` (RFC 9110)."""
    status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}range-not-satisfiable",
        title=status.phrase,
        status=status,
        detail=str(exc),
    )
    return problem_response(request, problem, {"Content-Range": f"bytes */{exc.size}"})


def handle_invalid_object_path(
    request: Request[Any, Any, Any], exc: InvalidObjectPath
) -> Response[ProblemDetails]:
    """A file path that may not be used (traversal, control characters, ...): 422 naming ``path``."""
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}invalid-field",
        title="Invalid field",
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail=f"path: {exc.message}",
        errors=[FieldError(field="path", message=exc.message)],
    )
    return problem_response(request, problem)


def handle_digest_mismatch(request: Request[Any, Any, Any], exc: DigestMismatch) -> Response[ProblemDetails]:
    """The bytes do not hash to the sha256 the client sent: 422; nothing was stored."""
    message = "the uploaded bytes do not match the expected sha256; nothing was stored, send the file again"
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}digest-mismatch",
        title="Digest mismatch",
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail=message,
        errors=[FieldError(field="sha256", message=message)],
        expected_sha256=exc.expected,
        actual_sha256=exc.actual,
    )
    return problem_response(request, problem)


def handle_storage_unavailable(
    request: Request[Any, Any, Any], exc: StorageUnavailable
) -> Response[ProblemDetails]:
    """Object storage failed mid-request: 503 with Retry-After; nothing half-written is visible."""
    logger.warning("object storage unavailable on %s %s: %s", request.method, request.url.path, exc)
    status = HTTPStatus.SERVICE_UNAVAILABLE
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}storage-unavailable",
        title="Object storage unavailable",
        status=status,
        detail=f"{exc}; nothing was stored or changed, try again shortly",
    )
    return problem_response(request, problem, {"Retry-After": "5"})


def handle_object_missing(request: Request[Any, Any, Any], exc: ObjectMissing) -> Response[ProblemDetails]:
    """The database names a blob that storage no longer has: 502 (an operator must look)."""
    logger.error("blob missing on %s %s: %s", request.method, request.url.path, exc)
    status = HTTPStatus.BAD_GATEWAY
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}object-missing",
        title="Stored object missing",
        status=status,
        detail="the file's bytes are missing from object storage; an administrator has been told",
    )
    return problem_response(request, problem)


def handle_unexpected_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetails]:
    """Anything else: log it with its traceback, answer a generic 500 that reveals nothing."""
    logger.error("unhandled exception on %s %s", request.method, request.url.path, exc_info=exc)
    problem = ProblemDetails(
        type=GENERIC_PROBLEM_TYPE,
        title=HTTPStatus.INTERNAL_SERVER_ERROR.phrase,
        status=HTTPStatus.INTERNAL_SERVER_ERROR,
        detail="An unexpected error occurred.",
    )
    return problem_response(request, problem)


def _quotable(text: str) -> str:
    # RFC 6750 error_description allows printable ASCII except '"' and '\\'.
    return "".join(char if " " <= char <= "~" and char not in '"\\' else "?" for char in text)


def _simple_problem(
    request: Request[Any, Any, Any], status: HTTPStatus, slug: str, detail: str
) -> Response[ProblemDetails]:
    problem = ProblemDetails(
        type=f"{PROBLEM_TYPE_PREFIX}{slug}", title=status.phrase, status=status, detail=detail
    )
    return problem_response(request, problem)


def _field_errors(extra: object) -> list[FieldError] | None:
    # Litestar puts a list of {"key", "message", "source"} dicts in ValidationException.extra.
    if not isinstance(extra, list):
        return None
    errors = [
        _named_field_error(str(item.get("key", "")), str(item.get("message", "")))
        for item in extra
        if isinstance(item, dict)
    ]
    return errors or None


def _named_field_error(key: str, message: str) -> FieldError:
    # msgspec reports an unknown field against the whole body ("data"); name the field itself.
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown is None:
        return FieldError(field=key, message=message)
    parent = (unknown.group(2) or "").lstrip(".")
    field = f"{parent}.{unknown.group(1)}" if parent else unknown.group(1)
    return FieldError(field=field, message="unknown field; remove it (the API schema lists accepted fields)")
