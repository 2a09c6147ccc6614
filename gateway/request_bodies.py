"""Reading a request body as it arrives, for routes that stream it into storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request
from litestar.exceptions import InternalServerException

from gateway.domain_errors import IncompleteBody


async def request_body_chunks(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The body's non-empty chunks; IncompleteBody when the client hangs up part-way."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except InternalServerException as exc:
        # Litestar reports a client that hung up mid-body as a server error; it is not one.
        raise IncompleteBody(
            "the client disconnected before sending the whole body; nothing was stored"
        ) from exc
