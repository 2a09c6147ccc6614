"""Where inputs may be staged to, which output patterns are usable, and what the patterns select."""

from __future__ import annotations

import pytest

from staging.output_checkpoints import OutputFile
from staging.stage_in import InvalidStagePath, validate_input_path
from staging.stage_out import select_outputs, validate_output_pattern


@pytest.mark.parametrize(
    "path",
    [
        "input.csv",
        "data/train/part-0001.parquet",
        "données/été.txt",
        "outputs.txt",  # only the exact reserved names are refused
        "data/outputs/x",  # ... and only as the first segment
        "data/slurm-1.out",
        "my slurm-log",
        ".config/settings.toml",
        "x" * 255,
    ],
)
def test_input_paths_inside_the_working_dir_are_accepted_unchanged(path: str) -> None:
    assert validate_input_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../escape", "`..`"),
        ("data/../../escape", "`..`"),
        ("data/..", "`..`"),
        ("./input", "`.`"),
        ("data//input", "empty"),
        ("data/", "empty"),
        ("data\\input", "backslash"),
        ("data/in\nput", "control character"),
        ("data/in\x00put", "control character"),
        ("in\x1bput", "control character"),
        ("in\x85put", "control character"),
        ("in\x7fput", "control character"),
        ("bad\udcffname", "not valid Unicode"),
        ("outputs/main/model.bin", "used by the gateway"),
        ("outputs", "used by the gateway"),
        (".attempts/main/a1/out/x", "used by the gateway"),
        (".heartbeat/main.a1", "used by the gateway"),
        ("slurm-42.out", "used by the gateway"),
        (".sgw-partial-abc", "reserved by the gateway"),
        ("data/.sgw-partial-abc", "reserved by the gateway"),
        (".sgwanything", "reserved by the gateway"),
        ("x" * 256, "longer than 255 bytes"),
        ("/".join(["d" * 200] * 6), "longer than 1024 bytes"),
    ],
)
def test_input_paths_outside_or_reserved_are_refused(path: str, reason: str) -> None:
    with pytest.raises(InvalidStagePath) as caught:
        validate_input_path(path)
    assert reason in caught.value.message


@pytest.mark.parametrize(
    "pattern",
    ["model.bin", "*.csv", "results/**", "**/*.log", "logs/**/part-?.[ch]", "results/", "[!.]*", "**"],
)
def test_output_patterns_are_accepted_unchanged(pattern: str) -> None:
    assert validate_output_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "empty"),
        ("/abs/*.csv", "absolute"),
        ("../*.csv", "`..`"),
        ("results/../../x", "`..`"),
        ("./x", "`.`"),
        ("a//b", "empty"),
        ("results//", "empty"),
        ("a\\b", "backslash"),
        ("x\ny", "control character"),
        ("x\ty", "control character"),
        ("a**/b", "whole path segment"),
        ("results/**.csv", "whole path segment"),
        ("x" * 1025, "longer than 1024 bytes"),
    ],
)
def test_bad_output_patterns_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidStagePath) as caught:
        validate_output_pattern(pattern)
    assert reason in caught.value.message


def outputs(*paths: str) -> list[OutputFile]:
    return [OutputFile(path=path, sha256=f"{index:064x}", size=index) for index, path in enumerate(paths)]


FILES = outputs(
    "model.bin",
    "metrics.json",
    ".hidden",
    "results/a.csv",
    "results/b.csv",
    "results/deep/c.csv",
    "results/deep/deeper/d.csv",
    "logs/part-1.c",
    "logs/part-2.h",
    "logs/part-10.c",
    "logs/x/part-3.c",
)


def selected_paths(patterns: list[str], files: list[OutputFile] = FILES) -> list[str]:
    return [output.path for output in select_outputs(files, patterns).files]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("model.bin", ["model.bin"]),
        ("*.json", ["metrics.json"]),
        ("results/*.csv", ["results/a.csv", "results/b.csv"]),
        ("results/*", ["results/a.csv", "results/b.csv", "results/deep/c.csv", "results/deep/deeper/d.csv"]),
        ("*/*.csv", ["results/a.csv", "results/b.csv"]),
        (
            "results/**/*.csv",
            ["results/a.csv", "results/b.csv", "results/deep/c.csv", "results/deep/deeper/d.csv"],
        ),
        ("**/c.csv", ["results/deep/c.csv"]),
        ("**/deeper/*", ["results/deep/deeper/d.csv"]),
        ("logs/part-?.[ch]", ["logs/part-1.c", "logs/part-2.h"]),
        ("logs/part-[!1].?", ["logs/part-2.h"]),
        ("logs/**/part-*.c", ["logs/part-1.c", "logs/part-10.c", "logs/x/part-3.c"]),
        ("results/deep", ["results/deep/c.csv", "results/deep/deeper/d.csv"]),
        ("results/deep/", ["results/deep/c.csv", "results/deep/deeper/d.csv"]),
        ("*.bin/", []),
        ("*/", [p.path for p in FILES if "/" in p.path]),
        (".*", [".hidden"]),
    ],
)
def test_a_pattern_selects_matching_files_and_everything_below_matching_directories(
    pattern: str, expected: list[str]
) -> None:
    assert selected_paths([pattern]) == sorted(expected)


def test_wildcards_never_match_a_slash() -> None:
    files = outputs("a/b", "a-b", "ab")
    # "a?b" and "a[!x]b" would match "a/b" if the separator counted as a character.
    assert selected_paths(["a?b"], files) == ["a-b"]
    assert selected_paths(["a[!x]b"], files) == ["a-b"]
    assert selected_paths(["a*b"], files) == ["a-b", "ab"]


def test_a_double_star_alone_selects_everything() -> None:
    assert selected_paths(["**"]) == sorted(output.path for output in FILES)


def test_a_double_star_also_matches_no_segment_at_all() -> None:
    assert selected_paths(["**/model.bin"]) == ["model.bin"]
    assert selected_paths(["results/**/a.csv"]) == ["results/a.csv"]


def test_each_file_is_selected_once_sorted_by_path_whatever_the_patterns() -> None:
    selection = select_outputs(list(reversed(FILES)), ["results/*.csv", "results/**", "**/a.csv"])
    assert [output.path for output in selection.files] == [
        "results/a.csv",
        "results/b.csv",
        "results/deep/c.csv",
        "results/deep/deeper/d.csv",
    ]
    assert selection.unmatched == []


def test_selected_files_keep_their_manifest_digest_and_size() -> None:
    selection = select_outputs(FILES, ["model.bin"])
    assert selection.files == [FILES[0]]


def test_patterns_that_select_nothing_are_reported_in_the_order_given() -> None:
    selection = select_outputs(FILES, ["missing.txt", "model.bin", "results/*.parquet", "model.bin/"])
    assert [output.path for output in selection.files] == ["model.bin"]
    assert selection.unmatched == ["missing.txt", "results/*.parquet", "model.bin/"]


def test_no_outputs_leave_every_pattern_unmatched() -> None:
    selection = select_outputs([], ["**", "x"])
    assert selection.files == []
    assert selection.unmatched == ["**", "x"]


def test_matching_is_case_sensitive() -> None:
    assert selected_paths(["MODEL.BIN", "*.JSON"]) == []
