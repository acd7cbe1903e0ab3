"""The bad-input corpus, part 1: hostile and broken heads against the one strict reader.

Each case starts from a valid head and breaks one rule. The reader must refuse it
with :class:`EnvelopeError` (never another exception type, never a crash) and a
reason that names the problem, before any body byte is read.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from syft_flwr.errors import EnvelopeError, IncompleteMessage
from syft_flwr.wire import strict_json
from syft_flwr.wire.envelope import (
    MAX_HEAD_BYTES,
    PlainCodec,
    SealContext,
    encode_message,
    format_time,
    parse_head,
)

NOW = 1_790_000_000.0


def _valid(body: bytes = b"x" * 5000, chunk_size: int = 2048) -> dict[str, Any]:
    ctx = SealContext(
        message_id="0b8f2c1e-aaaa-4bbb-8ccc-123456789abc",
        sender="ds@example.org",
        recipient="do1@example.org",
        app="flwr/app",
        endpoint="messages",
        kind="request",
        expires=format_time(NOW + 600),
    )
    head, _ = encode_message(
        ctx=ctx,
        url="syft://do1@example.org/app_data/flwr/app/rpc/messages",
        body=body,
        created=format_time(NOW),
        codec=PlainCodec(),
        chunk_size=chunk_size,
        inline_limit=256,
    )
    return json.loads(head)


def _inline() -> dict[str, Any]:
    doc = _valid(b"small body", chunk_size=8192)
    assert doc["syft_flwr"]["storage"] == "inline"
    return doc


Mutation = Callable[[dict[str, Any]], Any]


def _set(
    path: str, value: Any, base: Callable[[], dict[str, Any]] = _valid
) -> Mutation:
    def mutate(_: dict[str, Any]) -> dict[str, Any]:
        doc = base()
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return doc

    return mutate


_DELETE = object()

#: (case name, mutation returning a doc or raw bytes, words the reason must contain)
CASES: list[tuple[str, Mutation, str]] = [
    ("id path traversal", _set("id", "../../etc/passwd"), "invalid message id"),
    ("id with newline", _set("id", "abc\ndef"), "invalid message id"),
    ("id with slash", _set("id", "a/b"), "invalid message id"),
    ("id unicode lookalike", _set("id", "ⅰd-1"), "invalid message id"),
    ("id fullwidth", _set("id", "ａｂｃ"), "invalid message id"),
    ("id empty", _set("id", ""), "invalid message id"),
    ("id dot-dot", _set("id", ".."), "invalid message id"),
    ("id leading dot", _set("id", ".hidden"), "invalid message id"),
    ("id too long", _set("id", "a" * 129), "invalid message id"),
    ("id is a number", _set("id", 12345), "invalid message id"),
    ("id with NUL", _set("id", "a\x00b"), "invalid message id"),
    ("id missing", _set("id", _DELETE), "misses field 'id'"),
    ("sender missing", _set("sender", _DELETE), "misses field 'sender'"),
    ("sender not an email", _set("sender", "nobody"), "not an email"),
    ("sender with slash", _set("sender", "a/b@c.org"), "not an email"),
    ("sender is a list", _set("sender", ["ds@example.org"]), "must be a string"),
    ("sender huge", _set("sender", "a" * 5000 + "@x.org"), "longer than"),
    ("url not a string", _set("url", 5), "must be a string"),
    ("url huge", _set("url", "syft://" + "a" * 5000), "longer than"),
    ("created not a time", _set("created", "yesterday"), "invalid timestamp"),
    ("expires year 99999", _set("expires", "99999-01-01T00:00:00"), "timestamp"),
    ("expires a number", _set("expires", 1e20), "must be a string"),
    ("unknown top field", _set("exec", "rm -rf /"), "unknown fields"),
    ("unknown meta field", _set("syft_flwr.path", "/etc"), "unknown fields"),
    ("newer version", _set("syft_flwr.v", 99), "upgrade syft_flwr"),
    ("version is a string", _set("syft_flwr.v", "1"), "must be an integer"),
    ("version is a bool", _set("syft_flwr.v", True), "must be an integer"),
    ("version negative", _set("syft_flwr.v", -1), "outside"),
    ("unknown kind", _set("syft_flwr.kind", "command"), "unknown kind"),
    ("kind disagrees", _set("syft_flwr.kind", "response"), "expected a request"),
    ("unknown storage", _set("syft_flwr.storage", "url"), "unknown storage"),
    ("size negative", _set("syft_flwr.size", -5), "outside"),
    ("size a float", _set("syft_flwr.size", 5000.0), "must be an integer"),
    ("size over the limit", _set("syft_flwr.size", 2**40), "outside"),
    ("size disagrees with chunks", _set("syft_flwr.size", 4000), "chunks hold"),
    ("chunks not a list", _set("syft_flwr.chunks", {"0": 1}), "lists no chunks"),
    ("chunks empty", _set("syft_flwr.chunks", []), "lists no chunks"),
    ("chunk without sha", _set("syft_flwr.chunks.0", {"size": 2048}), "exactly"),
    ("chunk extra field", _set("syft_flwr.chunks.0.path", "/x"), "exactly"),
    ("chunk sha not hex", _set("syft_flwr.chunks.0.sha256", "z" * 64), "sha256"),
    ("chunk sha upper", _set("syft_flwr.chunks.0.sha256", "A" * 64), "sha256"),
    ("chunk size zero", _set("syft_flwr.chunks.0.size", 0), "outside"),
    ("chunk size negative", _set("syft_flwr.chunks.0.size", -1), "outside"),
    ("chunk size huge", _set("syft_flwr.chunks.0.size", 2**62), "outside"),
    ("chunk sizes uneven", _set("syft_flwr.chunks.1.size", 10), "not a split"),
    ("chunked with inline body", _set("body", "QUJD"), "inline body too"),
    (
        "inline lists chunks",
        _set("syft_flwr.chunks", [{"size": 1, "sha256": "0" * 64}], _inline),
        "lists chunks",
    ),
    ("inline not base64", _set("body", "!!!not base64!!!", _inline), "not base64"),
    ("inline size disagrees", _set("syft_flwr.size", 99, _inline), "bytes for a 99"),
    ("body not a string", _set("body", 7, _inline), "must be a string"),
    ("headers not an object", _set("headers", ["a"]), "'headers' must be"),
    (
        "too many headers",
        _set("headers", {f"h{i}": "v" for i in range(100)}),
        "'headers' must be",
    ),
    ("header value not text", _set("headers.x", {"a": 1}), "not a short string"),
    ("status code out of range", _set("status_code", 999), "outside"),
    ("status code a string", _set("status_code", "200"), "must be an integer"),
    ("method too long", _set("method", "P" * 100), "short string"),
    ("encryption not an object", _set("syft_flwr.encryption", "x"), "not an object"),
    ("meta not an object", _set("syft_flwr", [1, 2]), "not an object"),
    ("head is a list", lambda d: [d], "not a JSON object"),
    ("head is a string", lambda d: "hello", "not a JSON object"),
    # numbers and nesting that crash json.loads callers
    (
        "1e999 size",
        lambda d: (
            json.dumps(_valid()).replace('"size": 5000', '"size": 1e999').encode()
        ),
        "not finite",
    ),
    ("NaN", lambda d: b'{"id": NaN}', "non-finite"),
    ("Infinity", lambda d: b'{"id": Infinity}', "non-finite"),
    ("-Infinity", lambda d: b'{"id": -Infinity}', "non-finite"),
    ("huge integer", lambda d: b'{"id": ' + b"9" * 5000 + b"}", "digits"),
    ("deep nesting", lambda d: b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (
        "deep nesting in headers",
        lambda d: (
            json.dumps(_valid())
            .replace('"headers": {', '"headers": {"a": ' + "[" * 50 + "]" * 50 + ", ")
            .encode()
        ),
        "nested deeper",
    ),
    ("duplicate key", lambda d: b'{"id": "a", "id": "b"}', "duplicate key"),
    (
        "300,000 chunks",
        _set("syft_flwr.chunks", [{"size": 1, "sha256": "0" * 64}] * 300_000),
        "exceeds",
    ),
    ("head over the size limit", lambda d: b" " * (MAX_HEAD_BYTES + 1), "exceeds"),
]


@pytest.mark.parametrize(("name", "mutate", "reason"), CASES, ids=[c[0] for c in CASES])
def test_hostile_head_is_refused_with_a_reason(
    name: str, mutate: Mutation, reason: str
) -> None:
    out = mutate(copy.deepcopy(_valid()))
    data = out if isinstance(out, bytes) else json.dumps(out).encode()
    with pytest.raises(EnvelopeError) as info:
        parse_head(data, expected_kind="request", max_message_bytes=2**31)
    assert not isinstance(info.value, IncompleteMessage), name
    assert reason in str(info.value), str(info.value)


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


def test_valid_heads_still_parse() -> None:
    for doc in (_valid(), _inline()):
        head = parse_head(json.dumps(doc).encode(), expected_kind="request")
        assert head.id == doc["id"] and head.size == doc["syft_flwr"]["size"]


@pytest.mark.parametrize(
    "data", [b"", b"{", b'{"id": "a"', b"\xff\xfe{}", b'{"id": "\xc3'], ids=repr
)
def test_partial_heads_are_not_ready_yet_not_refused(data: bytes) -> None:
    with pytest.raises(IncompleteMessage):
        parse_head(data)


def test_max_message_bytes_is_enforced_from_the_setting() -> None:
    doc = json.dumps(_valid()).encode()
    parse_head(doc, max_message_bytes=5000)
    with pytest.raises(EnvelopeError, match="outside"):
        parse_head(doc, max_message_bytes=4999)


def test_strict_json_refuses_before_building_objects() -> None:
    with pytest.raises(EnvelopeError, match="exceeds"):
        strict_json.loads(b"[]" * 10, max_bytes=5)
    assert strict_json.loads(b'{"a": [1, 2.5, "x"]}', max_bytes=100) == {
        "a": [1, 2.5, "x"]
    }
    # brackets inside strings do not count as nesting
    assert strict_json.loads(b'{"a": "[[[[[[[[[[[["}', max_bytes=100, max_depth=2)


@pytest.mark.parametrize(
    ("data", "deep"),
    [
        # more brackets than the limit, but side by side: not deep
        (b'{"a": [[1], [2], [3], [4]], "b": {"c": {}}}', False),
        # brackets inside strings, escaped quotes included, do not count
        (b'{"a": "\\"[[[[\\\\", "b": ["{{{{{{"]}', False),
        (b'[[[["x"]]]]', True),
        # a bracket after an escaped quote is still inside the string
        (b'{"a": "x\\"]]]]]]", "b": [[[["y"]]]]}', True),
        (b'{"a": "\\\\", "b": [[[[1]]]]}', True),  # the string ends after \\
    ],
)
def test_nesting_is_counted_outside_strings_only(data: bytes, deep: bool) -> None:
    assert json.loads(data) is not None  # all valid JSON
    if deep:
        with pytest.raises(EnvelopeError, match="nested deeper than 3"):
            strict_json.loads(data, max_bytes=1000, max_depth=3)
    else:
        assert strict_json.loads(data, max_bytes=1000, max_depth=3) == json.loads(data)


def test_an_unterminated_string_does_not_hide_nesting() -> None:
    # a partial write: the open string is not skipped, its brackets count
    with pytest.raises(EnvelopeError, match="nested deeper"):
        strict_json.loads(b'{"a": "[[[[[[', max_bytes=100, max_depth=3)
