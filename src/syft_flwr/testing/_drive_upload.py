"""Resumable uploads of the fake Drive server: a session and its Content-Range rules.

Drive's rules, as a client meets them: ``Content-Range: bytes first-last/total``
(``*`` for a part not known yet), a status query ``bytes */total`` with no
body, non-final chunks in multiples of :data:`CHUNK_GRANULARITY`, bytes
already received skipped, a gap refused until the client re-reads the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syft_flwr.testing._drive_errors import DriveApiError

__all__ = ["CHUNK_GRANULARITY", "UploadSession", "append_chunk", "parse_content_range"]

#: Non-final resumable chunks must be multiples of this many bytes.
CHUNK_GRANULARITY = 256 * 1024


@dataclass
class UploadSession:
    """A resumable upload in progress (``uploadType=resumable``)."""

    id: str
    user: str
    file_id: str | None  # the target of files.update, None for files.create
    metadata: dict[str, Any]
    mime_type: str
    total: int | None
    params: dict[str, str]
    data: bytearray = field(default_factory=bytearray)
    result_id: str | None = None


def parse_content_range(
    content_range: str, body: bytes
) -> tuple[int | None, int | None, int | None]:
    """``bytes first-last/total`` (``*`` for an unknown part) as numbers.

    ``first`` and ``last`` are ``None`` for a status query (``bytes */N``, no body).
    """
    spec = content_range.strip()
    if not spec.startswith("bytes "):
        raise DriveApiError(400, "badRequest", f"Invalid Content-Range: {spec}")
    span, _, total_text = spec[6:].partition("/")
    try:
        total = None if total_text.strip() == "*" else int(total_text)
        if span.strip() == "*":
            if body:
                raise ValueError(span)
            return None, None, total
        a, _, b = span.partition("-")
        return int(a), int(b), total
    except ValueError as exc:
        raise DriveApiError(
            400, "badRequest", f"Invalid Content-Range: {spec}"
        ) from exc


def append_chunk(session: UploadSession, first: int, body: bytes) -> bool:
    """Append what ``body`` (starting at byte ``first``) adds; True once complete.

    A chunk starting past what was received is a gap: nothing is taken (the
    client re-reads the range and resends); bytes already received are skipped.
    """
    received = len(session.data)
    if first > received:
        return False
    tail = body[received - first :]
    new_size = received + len(tail)
    if session.total is not None and new_size > session.total:
        raise DriveApiError(400, "badRequest", "More bytes than the declared size.")
    final = session.total is not None and new_size == session.total
    if not final and len(body) % CHUNK_GRANULARITY:
        raise DriveApiError(
            400,
            "badRequest",
            f"Invalid chunk size {len(body)}: non-final chunks must be "
            f"multiples of {CHUNK_GRANULARITY} bytes.",
        )
    session.data.extend(tail)
    return final
