from collections.abc import Iterator, Sequence

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.readiness import ReadinessCheck, ReadinessFailure
from gateway.version import package_version


def passing_check(name: str) -> ReadinessCheck:
    async def probe() -> None:
        return None

    return ReadinessCheck(name=name, probe=probe)


def failing_check(name: str, message: str) -> ReadinessCheck:
    async def probe() -> None:
        raise ReadinessFailure(message)

    return ReadinessCheck(name=name, probe=probe)


def client_for(config: GatewayConfig, checks: Sequence[ReadinessCheck]) -> TestClient[Litestar]:
    return TestClient(create_app(config, readiness_checks=checks))


@pytest.fixture
def client(gateway_config: GatewayConfig) -> Iterator[TestClient[Litestar]]:
    with client_for(gateway_config, [passing_check("database"), passing_check("slurm")]) as test_client:
        yield test_client


def test_healthz_is_ok(client: TestClient[Litestar]) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_passes_when_all_checks_pass(client: TestClient[Litestar]) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": ["database", "slurm"]}


def test_readyz_names_failing_check(gateway_config: GatewayConfig) -> None:
    checks = [passing_check("database"), failing_check("slurm", "scontrol: command not found")]
    with client_for(gateway_config, checks) as test_client:
        response = test_client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 503
    assert body["instance"] == "/readyz"
    assert body["type"].endswith("not-ready")
    assert "slurm" in body["detail"]
    assert body["failed_checks"] == [{"name": "slurm", "message": "scontrol: command not found"}]


def test_readyz_reports_unexpected_probe_error_without_details(gateway_config: GatewayConfig) -> None:
    async def broken_probe() -> None:
        raise KeyError("internal secret")

    with client_for(gateway_config, [ReadinessCheck(name="database", probe=broken_probe)]) as test_client:
        response = test_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed_checks"] == [{"name": "database", "message": "unexpected KeyError"}]
    assert "internal secret" not in response.text


def test_default_checks_use_configured_database(gateway_config: GatewayConfig) -> None:
    # No checks injected: the real database check runs against the SQLite default,
    # and the Slurm check against whatever scontrol this machine has (either outcome).
    with TestClient(create_app(gateway_config)) as test_client:
        response = test_client.get("/readyz")
        engine = test_client.app.state.database_engine
    assert str(engine.url) == gateway_config.database.url
    assert response.status_code in (200, 503)
    if response.status_code == 503:
        failed_names = [check["name"] for check in response.json()["failed_checks"]]
        assert failed_names == ["slurm"]


def test_service_info(client: TestClient[Litestar]) -> None:
    response = client.get("/v1")
    assert response.status_code == 200
    assert response.json() == {"name": "slurm-gateway", "version": package_version(), "api_version": "v1"}


def test_unknown_route_is_problem_json(client: TestClient[Litestar]) -> None:
    response = client.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "instance": "/v1/no-such-thing",
    }


def test_wrong_method_is_problem_json_with_allow_header(client: TestClient[Litestar]) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert "GET" in response.headers["allow"]
    assert response.json()["title"] == "Method Not Allowed"


def test_openapi_document_lists_routes(client: TestClient[Litestar]) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"] == {"title": "slurm-gateway", "version": package_version()}
    assert {"/healthz", "/readyz", "/v1"} <= set(document["paths"])
    not_ready = document["paths"]["/readyz"]["get"]["responses"]["503"]
    assert "application/problem+json" in not_ready["content"]
