import pytest

from staging.multipart_uploads import (
    MAX_PART_BYTES,
    MAX_PARTS,
    MIB,
    MIN_PART_BYTES,
    PartPlanError,
    PlannedPart,
    StoredPart,
    choose_part_bytes,
    missing_parts,
    part_count,
    plan_parts,
)


def test_parts_cover_the_file_with_a_short_last_part() -> None:
    size = 10 * MIB + 1024
    assert plan_parts(size, 5 * MIB) == [
        PlannedPart(number=1, offset=0, size=5 * MIB),
        PlannedPart(number=2, offset=5 * MIB, size=5 * MIB),
        PlannedPart(number=3, offset=10 * MIB, size=1024),
    ]


def test_an_exact_multiple_has_no_empty_trailing_part() -> None:
    parts = plan_parts(10 * MIB, 5 * MIB)
    assert [part.size for part in parts] == [5 * MIB, 5 * MIB]


def test_an_empty_file_is_one_empty_part() -> None:
    assert plan_parts(0, 5 * MIB) == [PlannedPart(number=1, offset=0, size=0)]
    assert part_count(0, 5 * MIB) == 1


@pytest.mark.parametrize("requested", [MIN_PART_BYTES - 1, MAX_PART_BYTES + 1])
def test_requested_part_size_outside_s3_limits_is_refused(requested: int) -> None:
    with pytest.raises(PartPlanError, match="between"):
        choose_part_bytes(100 * MIB, requested=requested, default=64 * MIB)


def test_requested_part_size_needing_too_many_parts_is_refused_with_the_smallest_that_fits() -> None:
    size = MAX_PARTS * MIN_PART_BYTES + 1
    with pytest.raises(PartPlanError, match=f"use at least {6 * MIB}"):
        choose_part_bytes(size, requested=MIN_PART_BYTES, default=64 * MIB)


def test_requested_part_size_within_limits_is_kept() -> None:
    assert choose_part_bytes(100 * MIB, requested=7 * MIB, default=64 * MIB) == 7 * MIB


def test_default_part_size_grows_in_whole_mib_for_huge_files() -> None:
    size = 1024**4  # 1 TiB: 16384 parts of 64 MiB
    part_bytes = choose_part_bytes(size, requested=None, default=64 * MIB)
    assert part_bytes % MIB == 0
    assert part_count(size, part_bytes) <= MAX_PARTS
    assert part_count(size, part_bytes - MIB) > MAX_PARTS


def test_default_part_size_is_used_when_it_fits() -> None:
    assert choose_part_bytes(100 * MIB, requested=None, default=64 * MIB) == 64 * MIB


def test_missing_parts_include_absent_and_wrongly_sized_ones() -> None:
    plan = plan_parts(10 * MIB + 1024, 5 * MIB)
    stored = {1: StoredPart(number=1, size=5 * MIB), 3: StoredPart(number=3, size=1000)}
    assert missing_parts(plan, stored) == [2, 3]
    assert missing_parts(plan, {part.number: StoredPart(part.number, part.size) for part in plan}) == []
