"""The one strict JSON reader for everything that comes from a shared folder.

``json.loads`` on untrusted bytes has three failure modes a shared folder can
trigger on purpose: deep nesting (``RecursionError``), non-finite numbers
(``1e999`` is ``inf``, and ``NaN`` is accepted by default) and huge integers.
:func:`loads` refuses all three, plus duplicate keys (two readers could take
different values) and anything over a byte limit, before any object is built.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from syft_flwr.errors import EnvelopeError, IncompleteMessage

__all__ = ["MAX_DEPTH", "loads"]

#: Deepest nesting a head needs is 4 (head -> syft_flwr -> chunks -> chunk).
MAX_DEPTH = 8
#: Integers in heads are sizes and status codes: 19 digits hold any int64.
MAX_INT_DIGITS = 19

# A complete JSON string (escapes included), unrolled so the regex engine runs
# through it in C without an alternation per character.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Every byte but the four brackets (deleted with bytes.translate, in C).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


def _check_depth(data: bytes, max_depth: int) -> None:
    # No more opening brackets than the limit (strings included): the nesting
    # cannot exceed it. Heads pass here (base64 has no brackets) in C.
    if data.count(b"{") + data.count(b"[") <= max_depth:
        return
    # Otherwise the brackets outside strings, in order, counted in Python.
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if brackets.count(b"{") + brackets.count(b"[") <= max_depth:
        return
    depth = 0
    for c in brackets:
        if c in _OPEN:
            depth += 1
            if depth > max_depth:
                raise EnvelopeError(f"JSON nested deeper than {max_depth} levels")
        else:
            depth -= 1


def _constant(name: str) -> Any:
    raise EnvelopeError(f"non-finite number {name} in JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise EnvelopeError(f"number {text[:40]!r} is not finite")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise EnvelopeError(f"integer with {len(text)} digits")
    return int(text)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise EnvelopeError(f"duplicate key {k!r} in JSON")
        out[k] = v
    return out


def loads(data: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON bytes under limits.

    Raises
    ------
    IncompleteMessage
        The bytes are not (yet) complete UTF-8 JSON: a partial write or sync.
    EnvelopeError
        Over ``max_bytes``, nested deeper than ``max_depth``, a non-finite or
        oversized number, or a duplicate key.
    """
    if len(data) > max_bytes:
        raise EnvelopeError(f"JSON of {len(data)} bytes exceeds {max_bytes}")
    _check_depth(data, max_depth)
    try:
        text = data.decode("utf-8")
        return json.loads(
            text,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
            object_pairs_hook=_no_duplicates,
        )
    except EnvelopeError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise IncompleteMessage(f"not complete JSON yet: {exc}") from exc
