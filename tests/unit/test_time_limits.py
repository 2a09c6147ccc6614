import pytest

from slurm.errors import JobSpecError
from slurm.time_limits import (
    MAX_TIME_LIMIT_MINUTES,
    check_time_limit_minutes,
    format_time_limit,
    parse_time_limit,
)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        # minutes
        ("5", 5),
        ("90", 90),
        ("0005", 5),
        # minutes:seconds (seconds round up, as in Slurm's time_str2mins)
        ("5:00", 5),
        ("5:01", 6),
        ("0:30", 1),
        ("0:90", 2),
        ("10:59", 11),
        # hours:minutes:seconds
        ("01:30:00", 90),
        ("1:30:00", 90),
        ("00:00:01", 1),
        ("00:00:60", 1),
        ("00:00:61", 2),
        ("1:90:00", 150),  # Slurm does not range-check components
        ("48:00:00", 2880),
        # days-hours
        ("1-0", 1440),
        ("2-3", 2 * 1440 + 180),
        # days-hours:minutes
        ("2-03:04", 2 * 1440 + 184),
        # days-hours:minutes:seconds
        ("2-03:04:00", 2 * 1440 + 184),
        ("2-03:04:05", 2 * 1440 + 185),
        ("0-00:00:01", 1),
        ("366-00:00:00", MAX_TIME_LIMIT_MINUTES),
    ],
)
def test_every_slurm_format_parses_to_minutes(text: str, minutes: int) -> None:
    assert parse_time_limit(text) == minutes


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "required"),
        ("UNLIMITED", "finite"),
        ("unlimited", "finite"),
        ("INFINITE", "finite"),
        ("Infinite", "finite"),
        ("-1", "finite"),
        ("0", "at least one minute"),
        ("0:00", "at least one minute"),
        ("0-0", "at least one minute"),
        ("00:00:00", "at least one minute"),
        ("-5", "not a Slurm time limit"),
        ("-0:30", "not a Slurm time limit"),
        ("+5", "not a Slurm time limit"),
        ("1.5", "not a Slurm time limit"),
        ("1h", "not a Slurm time limit"),
        ("1:2:3:4", "not a Slurm time limit"),
        ("1-2-3", "not a Slurm time limit"),
        ("1-2:3:4:5", "not a Slurm time limit"),
        ("1:", "not a Slurm time limit"),
        (":5", "not a Slurm time limit"),
        ("1-", "not a Slurm time limit"),
        ("-", "not a Slurm time limit"),
        ("1-:5", "not a Slurm time limit"),
        (" 5", "not a Slurm time limit"),
        ("5 ", "not a Slurm time limit"),
        ("5\n", "not a Slurm time limit"),
        ("5\x00", "not a Slurm time limit"),
        ("\u0665", "not a Slurm time limit"),  # ARABIC-INDIC DIGIT FIVE
        ("\uff15", "not a Slurm time limit"),  # FULLWIDTH DIGIT FIVE
        ("five", "not a Slurm time limit"),
        ("367-00:00:00", "at most"),
        ("527041", "at most"),
        ("99999999999", "at most"),
        ("4294967295", "at most"),
        ("9" * 33, "too long"),
    ],
)
def test_bad_time_limits_are_rejected_with_a_hint(text: str, fragment: str) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        parse_time_limit(text)
    assert excinfo.value.field == "time_limit"
    assert fragment in excinfo.value.message


def test_rejection_message_shows_the_accepted_formats() -> None:
    with pytest.raises(JobSpecError, match=r'"01:30:00"') as excinfo:
        parse_time_limit("soon")
    assert "D-HH:MM:SS" in excinfo.value.message


@pytest.mark.parametrize(
    ("minutes", "text"),
    [
        (1, "0-00:01:00"),
        (59, "0-00:59:00"),
        (60, "0-01:00:00"),
        (90, "0-01:30:00"),
        (1439, "0-23:59:00"),
        (1440, "1-00:00:00"),
        (2 * 1440 + 185, "2-03:05:00"),
        (MAX_TIME_LIMIT_MINUTES, "366-00:00:00"),
    ],
)
def test_format_time_limit_is_days_hours_minutes_seconds(minutes: int, text: str) -> None:
    assert format_time_limit(minutes) == text


@pytest.mark.parametrize("minutes", [1, 7, 61, 1439, 1441, 10_000, MAX_TIME_LIMIT_MINUTES])
def test_formatted_limits_parse_back(minutes: int) -> None:
    assert parse_time_limit(format_time_limit(minutes)) == minutes


@pytest.mark.parametrize("minutes", [0, -1, True, 1.5, "5"])
def test_format_time_limit_rejects_non_positive_or_non_integers(minutes: object) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        format_time_limit(minutes)  # type: ignore[arg-type]
    assert excinfo.value.field == "time_limit"


@pytest.mark.parametrize("minutes", [0, -5, MAX_TIME_LIMIT_MINUTES + 1, False])
def test_check_time_limit_minutes_bounds(minutes: int) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        check_time_limit_minutes(minutes)
    assert excinfo.value.field == "time_limit"


def test_check_time_limit_minutes_returns_valid_values() -> None:
    assert check_time_limit_minutes(1) == 1
    assert check_time_limit_minutes(MAX_TIME_LIMIT_MINUTES) == MAX_TIME_LIMIT_MINUTES
