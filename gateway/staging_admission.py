"""Admission of a job's ``inputs`` and ``outputs``: every path, source and pattern checked up front.

A job is refused at submission (422 naming the field) rather than failed later when an input
names a file the tenant does not have, an S3 URL outside the tenant's own prefixes, or a path
that would leave the working directory. The bytes are staged later (gateway.job_stager); a file
replaced in between is staged as it is then, and checked against ``sha256`` if the spec gave one.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.domain_errors import InvalidField
from gateway.job_schemas import RunSpec
from gateway.storage_models import StoredFile, Tenant
from staging.object_paths import normalize_object_path, relative_path_problem
from staging.stage_in import InvalidStagePath, validate_input_path
from staging.stage_out import validate_output_pattern
from staging.storage_errors import InvalidObjectPath

S3_SCHEME = "s3://"


def check_staging(
    session: Session,
    tenant: Tenant,
    runs: Sequence[tuple[str, RunSpec]],
    *,
    s3_sources_allowed: bool,
) -> None:
    """Check the inputs and outputs of each run (``field prefix``, spec): a plain job is one run
    with prefix "", a multi-step job one per step ("steps[2]."). Steps share one working
    directory, so no two inputs anywhere in the job may have the same path.

    Raises InvalidField naming e.g. ``steps[1].inputs[0].source``.
    """
    destinations: dict[str, str] = {}
    for prefix, spec in runs:
        for index, item in enumerate(spec.inputs):
            field = f"{prefix}inputs[{index}]"
            path = _input_path(f"{field}.path", item.path)
            if path in destinations:
                raise InvalidField(f"{field}.path", f"{path!r} is already the path of {destinations[path]}")
            destinations[path] = field
            _check_source(session, tenant, f"{field}.source", item.source, s3_sources_allowed)
        for index, pattern in enumerate(spec.outputs):
            try:
                validate_output_pattern(pattern)
            except InvalidStagePath as exc:
                raise InvalidField(f"{prefix}outputs[{index}]", exc.message) from exc


def _input_path(field: str, raw: str) -> str:
    try:
        return validate_input_path(raw)
    except InvalidStagePath as exc:
        raise InvalidField(field, exc.message) from exc


def _check_source(
    session: Session, tenant: Tenant, field: str, source: str, s3_sources_allowed: bool
) -> None:
    if source.startswith(S3_SCHEME):
        _check_s3_source(tenant, field, source, s3_sources_allowed)
        return
    try:
        path = normalize_object_path(source)
    except InvalidObjectPath as exc:
        raise InvalidField(field, exc.message) from exc
    found = session.scalar(
        select(StoredFile.path).where(StoredFile.tenant_id == tenant.id, StoredFile.path == path)
    )
    if found is None:
        raise InvalidField(
            field,
            f"no file {path!r} in your namespace; upload it first (PUT /v1/files/{path}) or fix the name",
        )


def _check_s3_source(tenant: Tenant, field: str, url: str, s3_sources_allowed: bool) -> None:
    if not s3_sources_allowed:
        raise InvalidField(
            field,
            "this gateway stores files locally and cannot read s3:// URLs; upload the file to /v1/files",
        )
    bucket, _, key = url.removeprefix(S3_SCHEME).partition("/")
    problem = relative_path_problem(key, what="object key", base="the bucket") if bucket else "no bucket"
    if problem is not None:
        raise InvalidField(field, f"expected s3://bucket/key: {problem}")
    if not any(url.startswith(prefix) for prefix in tenant.s3_input_prefixes):
        allowed = ", ".join(tenant.s3_input_prefixes) or "none; an admin can add your buckets"
        raise InvalidField(field, f"{url} is outside your tenant's S3 prefixes ({allowed})")
