import logging

import msgspec
import pytest
from litestar import Response
from litestar.exceptions import NotFoundException, ValidationException
from litestar.testing import RequestFactory

from gateway.api_schemas import ProblemDetails
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.problems import (
    PROBLEM_MEDIA_TYPE,
    handle_http_exception,
    handle_service_not_ready,
    handle_slurm_error,
    handle_slurm_unavailable,
    handle_unexpected_exception,
    handle_validation_exception,
    problem_exception_handlers,
)
from gateway.readiness import CheckOutcome, ServiceNotReady
from slurm.errors import SlurmOutputError, SlurmUnavailable


@pytest.fixture
def request_factory(gateway_config: GatewayConfig) -> RequestFactory:
    # Bound to our app: a bare RequestFactory() builds a default Litestar app,
    # whose logging config would replace the handlers caplog relies on.
    return RequestFactory(app=create_app(gateway_config))


def encoded(response: Response[ProblemDetails]) -> dict[str, object]:
    body: dict[str, object] = msgspec.to_builtins(response.content)
    return body


def test_catch_all_hides_details_and_logs(
    request_factory: RequestFactory, caplog: pytest.LogCaptureFixture
) -> None:
    request = request_factory.get("/v1/jobs")
    with caplog.at_level(logging.ERROR, logger="gateway.problems"):
        response = handle_unexpected_exception(request, RuntimeError("db password is hunter2"))
    assert response.status_code == 500
    assert response.media_type == PROBLEM_MEDIA_TYPE
    body = encoded(response)
    assert body == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "An unexpected error occurred.",
        "instance": "/v1/jobs",
    }
    assert "hunter2" not in msgspec.json.encode(response.content).decode()
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_validation_exception_lists_fields(request_factory: RequestFactory) -> None:
    request = request_factory.get("/v1/jobs")
    exc = ValidationException(
        detail="Validation failed for GET /v1/jobs",
        extra=[{"key": "limit", "message": "Expected `int`, got `str`", "source": "query"}],
    )
    response = handle_validation_exception(request, exc)
    assert response.status_code == 400
    body = encoded(response)
    assert body["errors"] == [{"field": "limit", "message": "Expected `int`, got `str`"}]
    assert body["detail"] == "Validation failed for GET /v1/jobs"


def test_http_exception_keeps_status_and_detail(request_factory: RequestFactory) -> None:
    request = request_factory.get("/v1/jobs/42")
    response = handle_http_exception(request, NotFoundException(detail="job 42 not found"))
    assert response.status_code == 404
    assert encoded(response)["detail"] == "job 42 not found"


def test_service_not_ready_lists_failed_checks(request_factory: RequestFactory) -> None:
    request = request_factory.get("/readyz")
    exc = ServiceNotReady([CheckOutcome(name="database", failure="connection refused")])
    response = handle_service_not_ready(request, exc)
    assert response.status_code == 503
    assert encoded(response)["failed_checks"] == [{"name": "database", "message": "connection refused"}]


def test_slurm_unavailable_is_503_and_slurm_output_error_is_502(request_factory: RequestFactory) -> None:
    request = request_factory.get("/v1/jobs")
    unavailable = handle_slurm_unavailable(request, SlurmUnavailable("scontrol: timed out after 30s"))
    bad_output = handle_slurm_error(request, SlurmOutputError("unrecognised scontrol ping line: 'x'"))
    assert unavailable.status_code == 503
    assert encoded(unavailable)["detail"] == "scontrol: timed out after 30s"
    assert bad_output.status_code == 502


def test_handlers_cover_domain_and_catch_all() -> None:
    handlers = problem_exception_handlers()
    assert handlers[Exception] is handle_unexpected_exception
    assert handlers[SlurmUnavailable] is handle_slurm_unavailable
    assert handlers[ValidationException] is handle_validation_exception
