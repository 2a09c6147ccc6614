"""Tenant object paths: what is accepted, in which canonical form, and what is refused."""

from __future__ import annotations

import unicodedata

import pytest

from staging.object_paths import MAX_PATH_BYTES, normalize_object_path, normalize_prefix
from staging.storage_errors import InvalidObjectPath


@pytest.mark.parametrize(
    "path",
    ["a", "data/train.csv", "jobs/j1/out/result.json", "a b/c-d_e.f", "café/€.txt", ".hidden", "a..b", "..a"],
)
def test_ordinary_paths_are_kept(path: str) -> None:
    assert normalize_object_path(path) == path


def test_paths_are_stored_in_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "café.txt")
    assert decomposed != "café.txt"
    assert normalize_object_path(decomposed) == "café.txt"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("../x", "`..`"),
        ("a/../../b", "`..`"),
        ("a/./b", "`..`"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("/etc/passwd", "absolute"),
        ("%2e%2e/x", "percent-encoded"),
        ("%2E%2E/x", "percent-encoded"),
        ("a%2F..%2Fb", "percent-encoded"),
        ("a%5cb", "percent-encoded"),
        ("a%00", "percent-encoded"),
        ("a\\b", "backslash"),
        ("a\nb", "control"),
        ("a\x00b", "control"),
        ("a\x7fb", "control"),
        ("a\x85b", "control"),
        ("\tx", "control"),
        (".uploads/x", "reserved"),
        ("x" * 256, "segment"),
        ("/".join(["x" * 200] * 6), "longer than"),
        ("x" * 2000, "longer than"),
    ],
)
def test_unusable_paths_are_refused_with_a_reason(path: str, reason: str) -> None:
    with pytest.raises(InvalidObjectPath) as refused:
        normalize_object_path(path)
    assert reason in refused.value.message


def test_the_longest_allowed_path_fits_exactly() -> None:
    longest = "/".join(["x" * 200] * 5) + "/" + "y" * (MAX_PATH_BYTES - 1005)
    assert len(longest.encode()) == MAX_PATH_BYTES
    assert normalize_object_path(longest) == longest
    with pytest.raises(InvalidObjectPath):
        normalize_object_path(longest + "y")


def test_multibyte_names_count_bytes_not_characters() -> None:
    with pytest.raises(InvalidObjectPath, match="segment"):
        normalize_object_path("€" * 86)  # 258 bytes in 86 characters
    assert normalize_object_path("€" * 85) == "€" * 85


@pytest.mark.parametrize(
    ("prefix", "normalized"),
    [("", ""), ("data", "data"), ("data/", "data/"), ("a/b/", "a/b/"), ("café/", "café/")],
)
def test_prefixes_keep_their_trailing_slash(prefix: str, normalized: str) -> None:
    assert normalize_prefix(prefix) == normalized


@pytest.mark.parametrize("prefix", ["/", "../", "a//", "/abs/", "a/../", ".uploads/", "a\n/"])
def test_unusable_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidObjectPath):
        normalize_prefix(prefix)
