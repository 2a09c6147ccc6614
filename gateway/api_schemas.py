"""msgspec Structs that define the HTTP API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from gateway.accounting_schemas import BudgetFigures, ProjectedUseView, UseTermView


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
    # The job's current state, when that state is why the request was refused (409).
    state: str | None = None
    # Storage quota refusals (413): bytes used, held by uploads in progress, the limit, and asked for.
    used_bytes: int | None = None
    reserved_bytes: int | None = None
    limit_bytes: int | None = None
    requested_bytes: int | None = None
    # Digest refusals (422): what the client said the bytes hash to, and what they hash to.
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    # Budget refusals (402): the period, the budget, each term of the projected use, their sum,
    # the fraction of the budget that refuses, and which budget kinds it reaches.
    period: str | None = None
    budget: BudgetFigures | None = None
    terms: list[UseTermView] | None = None
    projected: ProjectedUseView | None = None
    refusal_threshold: str | None = None
    exceeded: list[str] | None = None


# --- tenants -------------------------------------------------------------------

SLURM_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,30}$"
# Gateway user names are token subjects: e-mail-like names are common, shell metacharacters are not.
GATEWAY_USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"

SlurmName = Annotated[
    str,
    msgspec.Meta(
        pattern=SLURM_NAME_PATTERN,
        description="lower-case letter, then up to 30 lower-case letters, digits or underscores",
    ),
]
PartitionName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
UnixUserName = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="an existing Unix user on the cluster")
]
QosList = Annotated[list[SlurmName], msgspec.Meta(min_length=1, max_length=32)]
PartitionList = Annotated[list[PartitionName], msgspec.Meta(min_length=1, max_length=32)]
QuotaBytes = Annotated[int, msgspec.Meta(ge=0, description="storage quota in bytes; null: unlimited")]
S3InputPrefix = Annotated[
    str,
    msgspec.Meta(
        min_length=6,
        max_length=1024,
        description="s3://bucket/prefix/ (ending in /): the tenant's own data that jobs may stage in",
    ),
]
S3InputPrefixList = Annotated[list[S3InputPrefix], msgspec.Meta(max_length=32)]


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A new tenant: its Slurm account and the QOS and partitions its jobs may use."""

    id: SlurmName
    slurm_account: SlurmName
    allowed_qos: QosList
    default_qos: SlurmName | None = None
    allowed_partitions: PartitionList
    # Absent: storage.default_tenant_quota_bytes; null: unlimited.
    storage_quota_bytes: QuotaBytes | msgspec.UnsetType | None = msgspec.UNSET
    s3_input_prefixes: S3InputPrefixList = msgspec.field(default_factory=list)


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Fields to change; absent fields keep their value. Provisioning is re-applied either way."""

    allowed_qos: QosList | msgspec.UnsetType = msgspec.UNSET
    default_qos: SlurmName | msgspec.UnsetType | None = msgspec.UNSET
    allowed_partitions: PartitionList | msgspec.UnsetType = msgspec.UNSET
    storage_quota_bytes: QuotaBytes | msgspec.UnsetType | None = msgspec.UNSET
    s3_input_prefixes: S3InputPrefixList | msgspec.UnsetType = msgspec.UNSET


class TenantMemberPut(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The Unix user a gateway user's jobs run as."""

    unix_user: UnixUserName


class TenantMemberView(msgspec.Struct, frozen=True, kw_only=True):
    """A member of a tenant."""

    user: str
    unix_user: str
    created_at: datetime


class TenantView(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant as stored, with its Slurm provisioning status."""

    id: str
    slurm_account: str
    allowed_qos: list[str]
    default_qos: str | None
    allowed_partitions: list[str]
    members: list[TenantMemberView]
    created_at: datetime
    updated_at: datetime
    provisioned_at: datetime | None
    provisioning_error: str | None
    # Object storage: the quota (None: unlimited), bytes in files and bytes held by uploads.
    storage_quota_bytes: int | None
    storage_used_bytes: int
    storage_reserved_bytes: int
    s3_input_prefixes: list[str]


class TenantList(msgspec.Struct, frozen=True, kw_only=True):
    """Every tenant, ordered by id."""

    tenants: list[TenantView]
