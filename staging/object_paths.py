"""Tenant object paths: what a user may name a stored file (pure; no I/O).

A path is relative to the tenant's namespace, "/"-separated, e.g. ``datasets/train.csv``. The
checks run on the path exactly as the HTTP layer decoded it: a second round of percent-decoding
is never applied, so ``%2e%2e`` stays a literal (and refused) name rather than turning into
``..`` somewhere further down.
"""

from __future__ import annotations

import re
import unicodedata

from staging.storage_errors import InvalidObjectPath

MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
# Names the gateway keeps for itself in every namespace (job outputs are written under jobs/).
RESERVED_FIRST_SEGMENTS = frozenset({".uploads"})
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Still-encoded traversal or separators: a client that double-encodes is refused, not guessed at.
_ENCODED_SPECIALS = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


def normalize_object_path(raw: str) -> str:
    """``raw`` checked and in canonical form (NFC).

    Raises InvalidObjectPath for empty paths, absolute paths, ``.``/``..`` or empty segments,
    backslashes, control characters, still-percent-encoded ``.``/``/``/``\\``/NUL, reserved
    names and over-long paths.
    """
    if not raw:
        raise InvalidObjectPath("the path is empty; name a file such as `data/input.csv`")
    if raw.startswith("/"):
        raise InvalidObjectPath("absolute paths are not allowed; give a path relative to your namespace")
    path = unicodedata.normalize("NFC", raw)
    if _CONTROL_CHARACTERS.search(path):
        raise InvalidObjectPath("the path contains a control character; use printable characters only")
    if "\\" in path:
        raise InvalidObjectPath("backslashes are not allowed in paths; separate directories with `/`")
    if _ENCODED_SPECIALS.search(path):
        raise InvalidObjectPath(
            "the path contains percent-encoded `.`, `/`, `\\` or NUL; send it decoded once"
        )
    segments = path.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidObjectPath("empty, `.` and `..` path segments are not allowed")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidObjectPath(f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidObjectPath(f"the path is longer than {MAX_PATH_BYTES} bytes")
    if segments[0] in RESERVED_FIRST_SEGMENTS:
        raise InvalidObjectPath(f"`{segments[0]}/` is reserved by the gateway; choose another directory")
    return path


def normalize_prefix(raw: str) -> str:
    """A listing prefix: empty (everything) or a normalised path prefix, kept with its trailing "/"."""
    if raw == "":
        return ""
    trailing = raw.endswith("/")
    path = normalize_object_path(raw[:-1] if trailing else raw)
    return f"{path}/" if trailing else path
