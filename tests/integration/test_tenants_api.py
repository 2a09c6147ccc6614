"""Tenants API end to end: real database (SQLite and PostgreSQL), real Slurm accounting."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.storage_models import Tenant
from tests.integration.gateway_fixtures import (
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.slurm_cluster import run_command

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

# Slurm round trips dominate these tests; the database layer is covered on both backends by the
# authorization and validation tests, so the provisioning ones run on SQLite only.
slurm_provisioning_on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

Client = TestClient[Litestar]
Headers = Callable[..., dict[str, str]]


@pytest.fixture
def headers(token_for: Callable[..., str]) -> Headers:
    def make(user: str, tenant: str | None, *roles: str) -> dict[str, str]:
        return bearer_headers(token_for(user, tenant, list(roles)))

    return make


@pytest.fixture
def admin(headers: Headers) -> dict[str, str]:
    return headers("root-admin", None, "admin")


@pytest.fixture
def slurm_names() -> Iterator[dict[str, str]]:
    """Unique tenant/account/QOS names; the Slurm objects are removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {"tenant": f"sgw_gw_{suffix}", "account": f"sgw_gw_{suffix}", "qos": f"sgw_gw_{suffix}_q"}
    yield names
    run_command(["sacctmgr", "-i", "delete", "account", f"name={names['account']}"], check=False)
    run_command(["sacctmgr", "-i", "delete", "qos", names["qos"]], check=False)


def associations(account: str) -> dict[str, dict[str, str]]:
    """sacctmgr's associations of ``account`` by user ('' for the account's own row)."""
    out = run_command(
        ["sacctmgr", "-nP", "show", "assoc", f"account={account}", "format=user,qos,defaultqos"]
    ).stdout
    rows = {}
    for line in out.splitlines():
        user, qos, default_qos = line.split("|")
        rows[user] = {"qos": set(filter(None, qos.split(","))), "default_qos": default_qos}
    return rows


def create_body(names: dict[str, str], **overrides: Any) -> dict[str, Any]:
    body = {
        "id": names["tenant"],
        "slurm_account": names["account"],
        "allowed_qos": [names["qos"], "normal"],
        "default_qos": names["qos"],
        "allowed_partitions": ["cpu", "gpu"],
    }
    body.update(overrides)
    return body


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    if field is not None:
        assert field in [error["field"] for error in body.get("errors", [])], body
    return body


@slurm_provisioning_on_sqlite
def test_admin_creates_tenant_and_slurm_is_provisioned(
    gateway_client: Client, admin: dict[str, str], slurm_names: dict[str, str]
) -> None:
    tenant_id, account, qos = slurm_names["tenant"], slurm_names["account"], slurm_names["qos"]
    storage = {"storage_quota_bytes": 10**9, "s3_input_prefixes": ["s3://sgw-inputs/data/"]}
    response = gateway_client.post("/v1/tenants", json=create_body(slurm_names, **storage), headers=admin)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["slurm_account"] == account
    assert created["storage_quota_bytes"] == 10**9
    assert created["s3_input_prefixes"] == ["s3://sgw-inputs/data/"]
    assert (created["storage_used_bytes"], created["storage_reserved_bytes"]) == (0, 0)
    assert created["provisioned_at"] is not None
    assert created["provisioning_error"] is None
    assert created["members"] == []
    assert "" in associations(account)

    member = gateway_client.put(
        f"/v1/tenants/{tenant_id}/members/alice@example.org", json={"unix_user": "alice"}, headers=admin
    )
    assert member.status_code == 200, member.text
    assert member.json()["unix_user"] == "alice"
    rows = associations(account)
    assert rows["alice"]["qos"] == {qos, "normal"}
    assert rows["alice"]["default_qos"] == qos

    # Creating the same tenant again is a retry: provisioning re-applied, 200, nothing duplicated.
    again = gateway_client.post("/v1/tenants", json=create_body(slurm_names, **storage), headers=admin)
    assert again.status_code == 200, again.text
    assert [m["user"] for m in again.json()["members"]] == ["alice@example.org"]

    patched = gateway_client.patch(
        f"/v1/tenants/{tenant_id}",
        json={"default_qos": "normal", "storage_quota_bytes": None, "s3_input_prefixes": []},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["default_qos"] == "normal"
    assert (patched.json()["storage_quota_bytes"], patched.json()["s3_input_prefixes"]) == (None, [])
    assert associations(account)["alice"]["default_qos"] == "normal"

    listed = gateway_client.get("/v1/tenants", headers=admin).json()["tenants"]
    assert tenant_id in [tenant["id"] for tenant in listed]

    removed = gateway_client.delete(f"/v1/tenants/{tenant_id}/members/alice@example.org", headers=admin)
    assert removed.status_code == 204
    assert gateway_client.get(f"/v1/tenants/{tenant_id}", headers=admin).json()["members"] == []
    assert "alice" not in associations(account)


@slurm_provisioning_on_sqlite
def test_slurm_outage_keeps_tenant_with_error_until_a_retry(
    gateway_client: Client,
    gateway_config: GatewayConfig,
    admin: dict[str, str],
    slurm_names: dict[str, str],
    tmp_path: Path,
) -> None:
    # A Slurm bin dir where sinfo exists but sacctmgr does not: a real outage of one command.
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").symlink_to(shutil.which("sinfo") or "/usr/bin/sinfo")
    broken = msgspec.structs.replace(
        gateway_config, slurm=msgspec.structs.replace(gateway_config.slurm, bin_dir=str(bin_dir))
    )
    with TestClient(create_app(broken)) as broken_client:
        response = broken_client.post("/v1/tenants", json=create_body(slurm_names), headers=admin)
    body = assert_problem(response, 503)
    assert "sacctmgr" in body["detail"]

    stored = gateway_client.get(f"/v1/tenants/{slurm_names['tenant']}", headers=admin).json()
    assert stored["provisioned_at"] is None
    assert "sacctmgr" in stored["provisioning_error"]

    repaired = gateway_client.patch(f"/v1/tenants/{slurm_names['tenant']}", json={}, headers=admin)
    assert repaired.status_code == 200, repaired.text
    assert repaired.json()["provisioning_error"] is None
    assert repaired.json()["provisioned_at"] is not None
    assert "" in associations(slurm_names["account"])


@slurm_provisioning_on_sqlite
def test_conflicting_create_is_409(
    gateway_client: Client, admin: dict[str, str], slurm_names: dict[str, str]
) -> None:
    assert gateway_client.post("/v1/tenants", json=create_body(slurm_names), headers=admin).status_code == 201
    response = gateway_client.post(
        "/v1/tenants", json=create_body(slurm_names, allowed_partitions=["cpu"]), headers=admin
    )
    assert_problem(response, 409)
    other_id = create_body(slurm_names, id=f"{slurm_names['tenant']}_b")
    assert_problem(gateway_client.post("/v1/tenants", json=other_id, headers=admin), 409)


def add_tenant_row(client: Client, tenant_id: str) -> None:
    now = datetime.now(UTC)
    with client.app.state.session_factory() as session:
        session.add(
            Tenant(
                id=tenant_id,
                slurm_account=tenant_id,
                allowed_qos=["normal"],
                default_qos=None,
                allowed_partitions=["cpu"],
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()


def test_tenants_are_isolated(gateway_client: Client, headers: Headers) -> None:
    # Authorization is decided before Slurm is touched, so stored rows are enough here.
    add_tenant_row(gateway_client, "sgw_gw_iso_a")
    add_tenant_row(gateway_client, "sgw_gw_iso_b")
    admin_of_a = headers("ann", "sgw_gw_iso_a", "tenant-admin")
    user_of_a = headers("al", "sgw_gw_iso_a", "user")

    assert gateway_client.get("/v1/tenants/sgw_gw_iso_a", headers=admin_of_a).status_code == 200
    body = assert_problem(gateway_client.get("/v1/tenants/sgw_gw_iso_b", headers=admin_of_a), 404)
    assert body["detail"] == assert_problem(
        gateway_client.get("/v1/tenants/sgw_gw_nonexistent", headers=admin_of_a), 404
    )["detail"].replace("sgw_gw_nonexistent", "sgw_gw_iso_b")
    assert_problem(gateway_client.patch("/v1/tenants/sgw_gw_iso_b", json={}, headers=admin_of_a), 404)
    assert_problem(
        gateway_client.put(
            "/v1/tenants/sgw_gw_iso_b/members/x", json={"unix_user": "bob"}, headers=admin_of_a
        ),
        404,
    )
    assert_problem(gateway_client.delete("/v1/tenants/sgw_gw_iso_b/members/x", headers=admin_of_a), 404)
    # Settings of its own tenant are the cluster admin's, not the tenant-admin's.
    assert_problem(gateway_client.patch("/v1/tenants/sgw_gw_iso_a", json={}, headers=admin_of_a), 403)
    assert_problem(gateway_client.get("/v1/tenants", headers=admin_of_a), 403)
    assert_problem(gateway_client.get("/v1/tenants/sgw_gw_iso_a", headers=user_of_a), 403)
    create = {
        "id": "sgw_gw_iso_c",
        "slurm_account": "sgw_gw_iso_c",
        "allowed_qos": ["normal"],
        "allowed_partitions": ["cpu"],
    }
    assert_problem(gateway_client.post("/v1/tenants", json=create, headers=user_of_a), 403)
    assert_problem(gateway_client.post("/v1/tenants", json=create, headers=admin_of_a), 403)
    unauthenticated = assert_problem(gateway_client.get("/v1/tenants/sgw_gw_iso_a"), 401)
    assert unauthenticated["detail"] == "missing bearer token"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"id": "Bad-Id"}, "id"),
        ({"slurm_account": "1abc"}, "slurm_account"),
        ({"allowed_qos": []}, "allowed_qos"),
    ],
)
def test_malformed_create_is_400_naming_the_field(
    gateway_client: Client,
    admin: dict[str, str],
    slurm_names: dict[str, str],
    overrides: dict[str, Any],
    field: str,
) -> None:
    response = gateway_client.post("/v1/tenants", json=create_body(slurm_names, **overrides), headers=admin)
    assert_problem(response, 400, field)


def test_unacceptable_values_are_422_naming_the_field(
    gateway_client: Client, admin: dict[str, str], slurm_names: dict[str, str]
) -> None:
    bad_default = create_body(slurm_names, default_qos="sgw_gw_not_listed")
    assert_problem(gateway_client.post("/v1/tenants", json=bad_default, headers=admin), 422, "default_qos")
    bad_partition = create_body(slurm_names, allowed_partitions=["cpu", "nosuchpart"])
    body = assert_problem(
        gateway_client.post("/v1/tenants", json=bad_partition, headers=admin), 422, "allowed_partitions"
    )
    assert "nosuchpart" in body["detail"]
    for prefix in (
        "https://bucket/x/",
        "s3://bucket/no-slash",
        "s3://Bucket/x/",
        "s3://bucket/../x/",
        "s3://b/x/",
    ):
        bad_prefix = create_body(slurm_names, s3_input_prefixes=[prefix])
        assert_problem(
            gateway_client.post("/v1/tenants", json=bad_prefix, headers=admin), 422, "s3_input_prefixes"
        )
    negative_quota = create_body(slurm_names, storage_quota_bytes=-1)
    assert_problem(
        gateway_client.post("/v1/tenants", json=negative_quota, headers=admin), 400, "storage_quota_bytes"
    )
    reserved = create_body(slurm_names, slurm_account="root")
    assert_problem(gateway_client.post("/v1/tenants", json=reserved, headers=admin), 422, "slurm_account")
    # Nothing was stored for the rejected creates.
    assert_problem(gateway_client.get(f"/v1/tenants/{slurm_names['tenant']}", headers=admin), 404)

    add_tenant_row(gateway_client, slurm_names["tenant"])
    unknown_user = gateway_client.put(
        f"/v1/tenants/{slurm_names['tenant']}/members/zed",
        json={"unix_user": "sgw_no_such_user"},
        headers=admin,
    )
    assert_problem(unknown_user, 422, "unix_user")
    root_user = gateway_client.put(
        f"/v1/tenants/{slurm_names['tenant']}/members/zed", json={"unix_user": "root"}, headers=admin
    )
    assert_problem(root_user, 422, "unix_user")
    patch_account = gateway_client.patch(
        f"/v1/tenants/{slurm_names['tenant']}", json={"slurm_account": "other"}, headers=admin
    )
    assert_problem(patch_account, 400, "slurm_account")
    patch_default = gateway_client.patch(
        f"/v1/tenants/{slurm_names['tenant']}", json={"default_qos": "sgw_gw_not_listed"}, headers=admin
    )
    assert_problem(patch_default, 422, "default_qos")
    bad_member_name = gateway_client.put(
        f"/v1/tenants/{slurm_names['tenant']}/members/a;b", json={"unix_user": "alice"}, headers=admin
    )
    assert_problem(bad_member_name, 400, "user")
