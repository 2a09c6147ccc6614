"""Tenants and their members: validation, access rules, storage and Slurm provisioning.

Every write re-applies the tenant's whole Slurm setup (account, QOS, user associations) with
``provision_account``, which is idempotent: a failed provisioning leaves the tenant stored with
``provisioning_error`` set, and any later write (or a retried identical create) repairs it.
Blocking (database, Slurm commands): call these methods from a worker thread.
"""

from __future__ import annotations

import pwd
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from gateway.authorization import require_role, require_tenant_role
from gateway.domain_errors import Conflict, InvalidField, NotFound
from gateway.principal import Principal
from gateway.storage_models import Tenant, TenantMember
from slurm.account_provisioning import AccountSpecError, SlurmAccountSpec, provision_account
from slurm.command_runner import CommandRunner
from slurm.errors import SlurmError
from slurm.partition_names import list_partition_names

SLURM_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
# Slurm's own root account holds every other; a tenant must never be mapped onto it.
RESERVED_ACCOUNTS = frozenset({"root"})
MAX_ERROR_CHARS = 500
# s3://bucket/ or s3://bucket/some/prefix/: S3 bucket naming rules, and a trailing "/" so that a
# prefix never matches a sibling that merely starts with the same letters (data/ vs database/).
S3_PREFIX = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/((?:[^/]+/)*)")
# SlurmAccountSpec field -> the tenant API field a caller must fix.
_SPEC_FIELDS = {
    "account": "slurm_account",
    "qos": "allowed_qos",
    "default_qos": "default_qos",
    "users": "unix_user",
}


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """What an admin asks for when creating a tenant."""

    id: str
    slurm_account: str
    allowed_qos: Sequence[str]
    default_qos: str | None
    allowed_partitions: Sequence[str]
    # UNSET: the gateway's default quota; None: unlimited.
    storage_quota_bytes: int | msgspec.UnsetType | None = msgspec.UNSET
    s3_input_prefixes: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class TenantChanges:
    """A partial update; ``msgspec.UNSET`` keeps the current value."""

    allowed_qos: Sequence[str] | msgspec.UnsetType = msgspec.UNSET
    default_qos: str | msgspec.UnsetType | None = msgspec.UNSET
    allowed_partitions: Sequence[str] | msgspec.UnsetType = msgspec.UNSET
    storage_quota_bytes: int | msgspec.UnsetType | None = msgspec.UNSET
    s3_input_prefixes: Sequence[str] | msgspec.UnsetType = msgspec.UNSET


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TenantService:
    """Tenant administration on behalf of an authenticated Principal."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        runner: CommandRunner,
        *,
        clock: Callable[[], datetime] = _utcnow,
        default_quota_bytes: int | None = None,
        storage_s3_root: str | None = None,
    ) -> None:
        """``runner`` runs the Slurm client commands (sinfo, sacctmgr). New tenants get
        ``default_quota_bytes``; ``storage_s3_root`` (bucket/prefix of the gateway's own S3
        storage) may not overlap any tenant's S3 input prefix."""
        self._session_factory = session_factory
        self._runner = runner
        self._clock = clock
        self._default_quota_bytes = default_quota_bytes
        self._storage_s3_root = storage_s3_root

    def create(self, principal: Principal, settings: TenantSettings) -> tuple[Tenant, bool]:
        """Store and provision a new tenant (admin only); returns (tenant, created).

        Repeating a create with identical settings re-provisions and returns created=False;
        different settings for an existing id or an account already used raise Conflict.
        """
        require_role(principal, "admin")
        _check_slurm_name("id", settings.id)
        _check_slurm_name("slurm_account", settings.slurm_account)
        if settings.slurm_account in RESERVED_ACCOUNTS:
            raise InvalidField(
                "slurm_account", f"{settings.slurm_account!r} is reserved; choose another name"
            )
        allowed_qos = _unique(settings.allowed_qos)
        partitions = _unique(settings.allowed_partitions)
        _check_default_qos(settings.default_qos, allowed_qos)
        quota = (
            self._default_quota_bytes
            if isinstance(settings.storage_quota_bytes, msgspec.UnsetType)
            else settings.storage_quota_bytes
        )
        s3_prefixes = self._checked_s3_prefixes(settings.s3_input_prefixes)
        with self._session_factory() as session:
            existing = _load(session, settings.id)
            if existing is not None:
                if _same_settings(
                    existing, settings.slurm_account, allowed_qos, settings.default_qos, partitions
                ) and (existing.storage_quota_bytes, existing.s3_input_prefixes) == (quota, s3_prefixes):
                    self._provision(session, existing)
                    return existing, False
                raise Conflict(
                    f"tenant {settings.id!r} already exists with other settings; use PATCH to change it"
                )
            self._check_partitions(partitions)
            now = self._clock()
            tenant = Tenant(
                id=settings.id,
                slurm_account=settings.slurm_account,
                allowed_qos=allowed_qos,
                default_qos=settings.default_qos,
                allowed_partitions=partitions,
                storage_quota_bytes=quota,
                storage_used_bytes=0,
                storage_reserved_bytes=0,
                s3_input_prefixes=s3_prefixes,
                created_at=now,
                updated_at=now,
                members=[],
            )
            session.add(tenant)
            try:
                session.commit()
            except IntegrityError as exc:
                raise Conflict(
                    f"tenant {settings.id!r} or Slurm account {settings.slurm_account!r} is already in use"
                ) from exc
            self._provision(session, tenant)
            return tenant, True

    def update(self, principal: Principal, tenant_id: str, changes: TenantChanges) -> Tenant:
        """Change a tenant's QOS, partitions or storage settings (admin only) and re-provision it.

        A quota below the bytes already stored is accepted: it refuses new writes, never deletes.
        """
        require_tenant_role(principal, tenant_id, "admin")
        with self._session_factory() as session:
            tenant = _load_or_404(session, tenant_id)
            allowed_qos = (
                tenant.allowed_qos
                if isinstance(changes.allowed_qos, msgspec.UnsetType)
                else _unique(changes.allowed_qos)
            )
            default_qos = (
                tenant.default_qos
                if isinstance(changes.default_qos, msgspec.UnsetType)
                else changes.default_qos
            )
            _check_default_qos(default_qos, allowed_qos)
            if not isinstance(changes.allowed_partitions, msgspec.UnsetType):
                partitions = _unique(changes.allowed_partitions)
                if partitions != tenant.allowed_partitions:
                    self._check_partitions(partitions)
                tenant.allowed_partitions = partitions
            if not isinstance(changes.s3_input_prefixes, msgspec.UnsetType):
                tenant.s3_input_prefixes = self._checked_s3_prefixes(changes.s3_input_prefixes)
            if not isinstance(changes.storage_quota_bytes, msgspec.UnsetType):
                tenant.storage_quota_bytes = changes.storage_quota_bytes
            tenant.allowed_qos = allowed_qos
            tenant.default_qos = default_qos
            tenant.updated_at = self._clock()
            session.commit()
            self._provision(session, tenant)
            return tenant

    def get(self, principal: Principal, tenant_id: str) -> Tenant:
        """One tenant, for an admin or that tenant's tenant-admin."""
        require_tenant_role(principal, tenant_id, "admin", "tenant-admin")
        with self._session_factory() as session:
            return _load_or_404(session, tenant_id)

    def list_all(self, principal: Principal) -> list[Tenant]:
        """Every tenant, ordered by id (admin only)."""
        require_role(principal, "admin")
        with self._session_factory() as session:
            statement = select(Tenant).options(selectinload(Tenant.members)).order_by(Tenant.id)
            return list(session.scalars(statement))

    def put_member(self, principal: Principal, tenant_id: str, user: str, unix_user: str) -> TenantMember:
        """Add a member, or change the Unix user of an existing one; re-provisions associations."""
        require_tenant_role(principal, tenant_id, "admin", "tenant-admin")
        _check_unix_user(unix_user)
        with self._session_factory() as session:
            tenant = _load_or_404(session, tenant_id)
            member = next((member for member in tenant.members if member.user == user), None)
            if member is None:
                member = TenantMember(user=user, unix_user=unix_user, created_at=self._clock())
                tenant.members.append(member)
            else:
                member.unix_user = unix_user
            tenant.updated_at = self._clock()
            session.commit()
            self._provision(session, tenant)
            return member

    def remove_member(self, principal: Principal, tenant_id: str, user: str) -> None:
        """Remove a member; its Unix user keeps its Slurm association while another member uses it."""
        require_tenant_role(principal, tenant_id, "admin", "tenant-admin")
        with self._session_factory() as session:
            tenant = _load_or_404(session, tenant_id)
            member = next((member for member in tenant.members if member.user == user), None)
            if member is None:
                raise NotFound(f"user {user!r} is not a member of tenant {tenant_id!r}")
            tenant.members.remove(member)
            tenant.updated_at = self._clock()
            session.commit()
            self._provision(session, tenant)

    def _checked_s3_prefixes(self, prefixes: Sequence[str]) -> list[str]:
        checked = _unique(prefixes)
        for prefix in checked:
            _check_s3_prefix(prefix)
            if self._storage_s3_root is not None and _s3_paths_overlap(
                prefix.removeprefix("s3://"), f"{self._storage_s3_root.rstrip('/')}/"
            ):
                raise InvalidField(
                    "s3_input_prefixes",
                    f"{prefix!r} overlaps the gateway's own storage; name the tenant's data",
                )
        return checked

    def _check_partitions(self, partitions: Sequence[str]) -> None:
        known = list_partition_names(self._runner)
        unknown = [partition for partition in partitions if partition not in known]
        if unknown:
            raise InvalidField(
                "allowed_partitions",
                f"unknown partition {unknown[0]!r}; the cluster has: {', '.join(sorted(known))}",
            )

    def _provision(self, session: Session, tenant: Tenant) -> None:
        spec = SlurmAccountSpec(
            account=tenant.slurm_account,
            qos=tuple(tenant.allowed_qos),
            default_qos=tenant.default_qos,
            users=tuple(sorted({member.unix_user for member in tenant.members})),
        )
        try:
            provision_account(self._runner, spec)
        except SlurmError as exc:
            tenant.provisioning_error = str(exc)[:MAX_ERROR_CHARS]
            session.commit()
            if isinstance(exc, AccountSpecError):
                raise InvalidField(_SPEC_FIELDS.get(exc.field, exc.field), exc.message) from exc
            raise
        tenant.provisioned_at = self._clock()
        tenant.provisioning_error = None
        session.commit()


def _load(session: Session, tenant_id: str) -> Tenant | None:
    statement = select(Tenant).options(selectinload(Tenant.members)).where(Tenant.id == tenant_id)
    return session.scalars(statement).one_or_none()


def _load_or_404(session: Session, tenant_id: str) -> Tenant:
    tenant = _load(session, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    return tenant


def _check_slurm_name(field: str, value: str) -> None:
    # The API schema checks this too; the domain must not trust every caller to have used it.
    if not SLURM_NAME.fullmatch(value):
        raise InvalidField(field, "use a lower-case letter, then up to 30 lower-case letters, digits or _")


def _check_default_qos(default_qos: str | None, allowed_qos: Sequence[str]) -> None:
    if default_qos is not None and default_qos not in allowed_qos:
        raise InvalidField("default_qos", f"{default_qos!r} is not in allowed_qos ({', '.join(allowed_qos)})")


def _check_unix_user(unix_user: str) -> None:
    try:
        entry = pwd.getpwnam(unix_user)
    except KeyError:
        raise InvalidField(
            "unix_user", f"no Unix user {unix_user!r} on the gateway host; create it first"
        ) from None
    if entry.pw_uid == 0:
        raise InvalidField("unix_user", "jobs cannot run as root; map the member to an unprivileged user")


def _check_s3_prefix(prefix: str) -> None:
    match = S3_PREFIX.fullmatch(prefix)
    problem = None
    if match is None:
        problem = "use s3://<bucket>/<prefix>/ (a bucket name, then a key prefix ending in /)"
    elif any(unicodedata.category(char).startswith("C") for char in prefix) or "\\" in prefix:
        problem = "control characters and backslashes are not allowed"
    elif any(segment in ("", ".", "..") for segment in match.group(2).split("/")[:-1]):
        problem = "empty, `.` and `..` segments are not allowed"
    if problem is not None:
        raise InvalidField("s3_input_prefixes", f"{prefix!r}: {problem}")


def _s3_paths_overlap(first: str, second: str) -> bool:
    # Both end in "/": one contains the other exactly when it is a string prefix of it.
    return first.startswith(second) or second.startswith(first)


def _unique(values: Iterable[str]) -> list[str]:
    # Order is kept (the first QOS reads as the main one); repeats are dropped.
    return list(dict.fromkeys(values))


def _same_settings(
    tenant: Tenant, slurm_account: str, allowed_qos: list[str], default_qos: str | None, partitions: list[str]
) -> bool:
    return (
        tenant.slurm_account == slurm_account
        and tenant.allowed_qos == allowed_qos
        and tenant.default_qos == default_qos
        and tenant.allowed_partitions == partitions
    )
