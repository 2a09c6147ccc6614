"""gateway.staging_admission for tenants' own S3 sources (no stored file is looked up for them)."""

from __future__ import annotations

from typing import cast

import pytest
from sqlalchemy.orm import Session

from gateway.domain_errors import InvalidField
from gateway.job_schemas import InputSpec, JobSpec
from gateway.staging_admission import check_staging
from gateway.storage_models import Tenant

TENANT = Tenant(id="t1", slurm_account="t1", s3_input_prefixes=["s3://own-data/raw/"])
NO_SESSION = cast(Session, None)


def spec_with_source(source: str) -> JobSpec:
    return JobSpec(name="j", command=["true"], inputs=[InputSpec(path="in.bin", source=source)])


def test_an_object_under_the_tenants_prefix_is_accepted() -> None:
    check_staging(
        NO_SESSION, TENANT, [("", spec_with_source("s3://own-data/raw/a/b.bin"))], s3_sources_allowed=True
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("s3://own-data/raw/../other/x", "`..`"),
        ("s3://own-data/raw/a\nb", "control character"),
        ("s3://own-data/raw//x", "empty"),
        ("s3://own-data/", "empty"),
        ("s3:///raw/x", "no bucket"),
        ("s3://own-data/cooked/x", "outside your tenant's S3 prefixes"),
        ("s3://own-data/raw-not/x", "outside your tenant's S3 prefixes"),
    ],
)
def test_unsafe_or_foreign_urls_are_refused_naming_the_field(source: str, message: str) -> None:
    with pytest.raises(InvalidField) as refused:
        check_staging(NO_SESSION, TENANT, [("steps[1].", spec_with_source(source))], s3_sources_allowed=True)
    assert refused.value.field == "steps[1].inputs[0].source"
    assert message in refused.value.message


def test_s3_sources_need_s3_storage() -> None:
    with pytest.raises(InvalidField, match="cannot read s3:// URLs"):
        check_staging(
            NO_SESSION, TENANT, [("", spec_with_source("s3://own-data/raw/x"))], s3_sources_allowed=False
        )
