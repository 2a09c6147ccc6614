"""Tenant administration endpoints: thin wrappers over gateway.tenants.TenantService."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from gateway.api_schemas import (
    GATEWAY_USER_PATTERN,
    SLURM_NAME_PATTERN,
    TenantCreate,
    TenantList,
    TenantMemberPut,
    TenantMemberView,
    TenantUpdate,
    TenantView,
)
from gateway.auth import AuthenticatedPrincipal
from gateway.slurm_driver import command_runner_from_config
from gateway.storage_models import Tenant, TenantMember
from gateway.tenants import TenantChanges, TenantService, TenantSettings

TenantId = Annotated[str, PathParameter(pattern=SLURM_NAME_PATTERN, description="tenant id")]
GatewayUser = Annotated[
    str, PathParameter(pattern=GATEWAY_USER_PATTERN, description="gateway user (token subject)")
]
Service = NamedDependency[TenantService]


def provide_tenant_service(state: State) -> TenantService:
    """A service over the app's database, the configured Slurm command runner and storage settings."""
    store = state.object_store
    return TenantService(
        state.session_factory,
        command_runner_from_config(state.config.slurm),
        default_quota_bytes=state.config.storage.default_tenant_quota_bytes,
        storage_s3_root=store.root if store.backend == "s3" else None,
    )


class TenantController(Controller):
    """``/v1/tenants``: admins manage tenants; tenant-admins read theirs and manage its members."""

    path = "/v1/tenants"
    tags = ["tenants"]  # noqa: RUF012 - Litestar reads it as a class attribute
    dependencies = {"tenant_service": Provide(provide_tenant_service, sync_to_thread=False)}  # noqa: RUF012

    @post(sync_to_thread=True, summary="Create a tenant and provision its Slurm account (admin)")
    def create_tenant(
        self, data: JSONBody[TenantCreate], principal: AuthenticatedPrincipal, tenant_service: Service
    ) -> Response[TenantView]:
        """201 with the new tenant; 200 when an identical tenant existed (provisioning re-applied)."""
        settings = TenantSettings(
            id=data.id,
            slurm_account=data.slurm_account,
            allowed_qos=data.allowed_qos,
            default_qos=data.default_qos,
            allowed_partitions=data.allowed_partitions,
            storage_quota_bytes=data.storage_quota_bytes,
            s3_input_prefixes=data.s3_input_prefixes,
        )
        tenant, created = tenant_service.create(principal, settings)
        return Response(tenant_view(tenant), status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get(sync_to_thread=True, summary="List every tenant (admin)")
    def list_tenants(self, principal: AuthenticatedPrincipal, tenant_service: Service) -> TenantList:
        """All tenants, ordered by id."""
        return TenantList(tenants=[tenant_view(tenant) for tenant in tenant_service.list_all(principal)])

    @get("/{tenant_id:str}", sync_to_thread=True, summary="Read a tenant (admin or its tenant-admin)")
    def get_tenant(
        self, tenant_id: TenantId, principal: AuthenticatedPrincipal, tenant_service: Service
    ) -> TenantView:
        """The tenant; 404 for tenants the caller may not see."""
        return tenant_view(tenant_service.get(principal, tenant_id))

    @patch("/{tenant_id:str}", sync_to_thread=True, summary="Change a tenant and re-provision it (admin)")
    def update_tenant(
        self,
        tenant_id: TenantId,
        data: JSONBody[TenantUpdate],
        principal: AuthenticatedPrincipal,
        tenant_service: Service,
    ) -> TenantView:
        """Absent fields keep their values; an empty body just re-applies provisioning."""
        changes = TenantChanges(
            allowed_qos=data.allowed_qos,
            default_qos=data.default_qos,
            allowed_partitions=data.allowed_partitions,
            storage_quota_bytes=data.storage_quota_bytes,
            s3_input_prefixes=data.s3_input_prefixes,
        )
        return tenant_view(tenant_service.update(principal, tenant_id, changes))

    @put(
        "/{tenant_id:str}/members/{user:str}",
        sync_to_thread=True,
        summary="Add or change a member (admin or tenant-admin)",
    )
    def put_member(
        self,
        tenant_id: TenantId,
        user: GatewayUser,
        data: JSONBody[TenantMemberPut],
        principal: AuthenticatedPrincipal,
        tenant_service: Service,
    ) -> TenantMemberView:
        """Maps the gateway user to a Unix user and associates it with the tenant's Slurm account."""
        return member_view(tenant_service.put_member(principal, tenant_id, user, data.unix_user))

    @delete(
        "/{tenant_id:str}/members/{user:str}",
        sync_to_thread=True,
        summary="Remove a member (admin or tenant-admin)",
    )
    def remove_member(
        self,
        tenant_id: TenantId,
        user: GatewayUser,
        principal: AuthenticatedPrincipal,
        tenant_service: Service,
    ) -> None:
        """204 once the member is gone."""
        tenant_service.remove_member(principal, tenant_id, user)


def tenant_view(tenant: Tenant) -> TenantView:
    """The API representation of a stored tenant."""
    return TenantView(
        id=tenant.id,
        slurm_account=tenant.slurm_account,
        allowed_qos=list(tenant.allowed_qos),
        default_qos=tenant.default_qos,
        allowed_partitions=list(tenant.allowed_partitions),
        members=[member_view(member) for member in tenant.members],
        created_at=_aware(tenant.created_at),
        updated_at=_aware(tenant.updated_at),
        provisioned_at=_aware(tenant.provisioned_at) if tenant.provisioned_at else None,
        provisioning_error=tenant.provisioning_error,
        storage_quota_bytes=tenant.storage_quota_bytes,
        storage_used_bytes=tenant.storage_used_bytes or 0,
        storage_reserved_bytes=tenant.storage_reserved_bytes or 0,
        s3_input_prefixes=list(tenant.s3_input_prefixes or []),
    )


def member_view(member: TenantMember) -> TenantMemberView:
    """The API representation of a tenant member."""
    return TenantMemberView(
        user=member.user, unix_user=member.unix_user, created_at=_aware(member.created_at)
    )


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; the gateway stores UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
