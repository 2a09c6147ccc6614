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
# NAME_MAX of Linux filesystems.
MAX_SEGMENT_BYTES = 255
# Names the gateway keeps for itself in every namespace (job outputs are written under jobs/).
RESERVED_FIRST_SEGMENTS = frozenset({".uploads"})
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Still-encoded traversal or separators: a client that double-encodes is refused, not guessed at.
_ENCODED_SPECIALS = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


def relative_path_problem(raw: str, *, what: str, base: str, max_bytes: int = MAX_PATH_BYTES) -> str | None:
    """Why ``raw`` cannot be a user-given path relative to ``base`` (None: it can).

    The checks every such path gets (stored files, stage-in destinations, output patterns):
    not empty, not absolute, no control characters (C0, DEL, C1), no backslashes, valid
    Unicode, at most ``max_bytes``, and no empty, ``.`` or ``..`` segments or over-long ones.
    ``what`` names the thing in the message ("path", "input path", "output pattern").
    """
    try:
        size = len(raw.encode())
    except UnicodeEncodeError:
        return f"the {what} is not valid Unicode"
    segments = raw.split("/")
    problems = (
        (not raw, f"the {what} is empty; name a file such as `data/input.csv`"),
        (raw.startswith("/"), f"absolute paths are not allowed; give a {what} relative to {base}"),
        (
            _CONTROL_CHARACTERS.search(raw) is not None,
            f"the {what} contains a control character; use printable characters only",
        ),
        ("\\" in raw, "backslashes are not allowed in paths; separate directories with `/`"),
        (size > max_bytes, f"the {what} is longer than {max_bytes} bytes"),
        (
            any(segment in ("", ".", "..") for segment in segments),
            "empty, `.` and `..` path segments are not allowed",
        ),
        (
            any(len(segment.encode()) > MAX_SEGMENT_BYTES for segment in segments),
            f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes",
        ),
    )
    return next((message for failed, message in problems if failed), None)


def normalize_object_path(raw: str) -> str:
    """``raw`` checked and in canonical form (NFC).

    Raises InvalidObjectPath for what relative_path_problem refuses, still-percent-encoded
    ``.``/``/``/``\\``/NUL and reserved names.
    """
    path = unicodedata.normalize("NFC", raw)
    problem = relative_path_problem(path, what="path", base="your namespace")
    if problem is not None:
        raise InvalidObjectPath(problem)
    if _ENCODED_SPECIALS.search(path):
        raise InvalidObjectPath(
            "the path contains percent-encoded `.`, `/`, `\\` or NUL; send it decoded once"
        )
    first = path.split("/")[0]
    if first in RESERVED_FIRST_SEGMENTS:
        raise InvalidObjectPath(f"`{first}/` is reserved by the gateway; choose another directory")
    return path


def normalize_prefix(raw: str) -> str:
    """A listing prefix: empty (everything) or a normalised path prefix, kept with its trailing "/"."""
    if raw == "":
        return ""
    trailing = raw.endswith("/")
    path = normalize_object_path(raw[:-1] if trailing else raw)
    return f"{path}/" if trailing else path
