"""The on-disk envelope: inline vs chunks, integrity, partial files, versions, times."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from syft_flwr.errors import ChunkIntegrityError, EnvelopeError, IncompleteMessage
from syft_flwr.wire.envelope import (
    ENVELOPE_VERSION,
    BodyCodec,
    PlainCodec,
    SealContext,
    chunk_name,
    decode_body,
    encode_message,
    format_time,
    head_name,
    parse_head,
    parse_time,
)

SENDER = "ds@example.org"
RECIPIENT = "do1@example.org"
EXPIRES = "2099-01-01T00:00:00+00:00"
URL = f"syft://{RECIPIENT}/app_data/flwr/app/rpc/messages"
#: Large enough for a 100-byte inline body plus the head's JSON.
CHUNK = 4096


def _ctx(
    kind: str = "request", mid: str = "11111111-2222-3333-4444-555555555555"
) -> SealContext:
    return SealContext(
        message_id=mid,
        sender=SENDER,
        recipient=RECIPIENT,
        app="flwr/app",
        endpoint="messages",
        kind=kind,  # type: ignore[arg-type]
        expires=EXPIRES,
    )


def _encode(
    body: bytes,
    *,
    chunk_size: int = CHUNK,
    inline_limit: int = 100,
    codec: BodyCodec | None = None,
    kind: str = "request",
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    return encode_message(
        ctx=_ctx(kind),
        url=URL,
        body=body,
        created="2026-01-01T12:00:00+00:00",
        codec=codec or PlainCodec(),
        chunk_size=chunk_size,
        inline_limit=inline_limit,
        status_code=status_code,
        headers=headers,
    )


def _decode(
    head_bytes: bytes,
    chunks: Sequence[tuple[str, bytes]],
    codec: BodyCodec | None = None,
) -> bytes:
    store = dict(chunks)

    def read(name: str) -> bytes:
        try:
            return store[name]
        except KeyError:
            raise FileNotFoundError(name) from None

    head = parse_head(head_bytes)
    return decode_body(head, _ctx(head.kind), codec or PlainCodec(), read)


class TaggingCodec(BodyCodec):
    """Grows every part by ``overhead`` bytes, like an AEAD tag."""

    algorithm = "test-tag"
    overhead = 16

    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        return {"alg": self.algorithm}, [bytes(p) + b"T" * self.overhead for p in parts]

    def open(
        self, ctx: SealContext, header: Mapping[str, Any] | None, parts: Sequence[bytes]
    ) -> bytes:
        assert header == {"alg": self.algorithm}
        for p in parts:
            assert p.endswith(b"T" * self.overhead)
        return b"".join(p[: -self.overhead] for p in parts)


# -- names ----------------------------------------------------------------------------


def test_names() -> None:
    assert head_name("abc", "request") == "abc.request"
    assert head_name("abc", "response") == "abc.response"
    assert chunk_name("abc", "request", 0) == "abc.request.000000.chunk"
    assert chunk_name("abc", "response", 12) == "abc.response.000012.chunk"
    # A chunk never looks like a head to syft-rpc tools.
    assert not chunk_name("abc", "request", 3).endswith((".request", ".response"))


# -- inline vs chunks ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 99, 100])
def test_bodies_up_to_inline_limit_travel_inline(size: int) -> None:
    body = bytes(range(256)) * (size // 256 + 1)
    body = body[:size]
    head, chunks = _encode(body, inline_limit=100)
    assert chunks == []
    doc = json.loads(head)
    assert doc["syft_flwr"]["storage"] == "inline"
    assert doc["syft_flwr"]["chunks"] == []
    assert doc["syft_flwr"]["size"] == size
    assert base64.b64decode(doc["body"]) == body
    assert _decode(head, chunks) == body


@pytest.mark.parametrize(
    ("size", "n_chunks"),
    [
        (101, 1),
        (CHUNK, 1),
        (CHUNK + 1, 2),
        (2 * CHUNK, 2),
        (2 * CHUNK + 1, 3),
        (10 * CHUNK + 5, 11),
    ],
)
def test_bodies_over_inline_limit_go_to_chunks(size: int, n_chunks: int) -> None:
    body = hashlib.sha256(b"seed").digest() * (size // 32 + 1)
    body = body[:size]
    head, chunks = _encode(body, inline_limit=100)
    doc = json.loads(head)
    meta = doc["syft_flwr"]
    assert meta["storage"] == "chunks"
    assert doc["body"] == ""
    assert len(chunks) == n_chunks == len(meta["chunks"])
    mid = doc["id"]
    assert [name for name, _ in chunks] == [
        f"{mid}.request.{i:06d}.chunk" for i in range(n_chunks)
    ]
    for (_, data), info in zip(chunks, meta["chunks"], strict=True):
        assert len(data) <= CHUNK
        assert info["size"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert b"".join(d for _, d in chunks) == body
    assert _decode(head, chunks) == body


@pytest.mark.parametrize(
    "size", [101, CHUNK - 16, CHUNK - 15, CHUNK, 5 * CHUNK, 64 * 1024]
)
def test_every_chunk_fits_chunk_size_including_codec_overhead(size: int) -> None:
    codec = TaggingCodec()
    body = b"\xab" * size
    head, chunks = _encode(body, inline_limit=100, codec=codec)
    assert chunks, "expected a chunked body"
    assert all(len(data) <= CHUNK for _, data in chunks)
    # Planned around the overhead: full chunks are exactly chunk_size on disk.
    assert all(len(data) == CHUNK for _, data in chunks[:-1])
    assert len(head) <= CHUNK
    meta = json.loads(head)["syft_flwr"]
    assert meta["encryption"] == {"alg": "test-tag"}
    assert meta["size"] == size
    assert _decode(head, chunks, codec) == body


@pytest.mark.parametrize("chunk_size", [1024, 2048, 3000, CHUNK, 64 * 1024])
@pytest.mark.parametrize("inline_limit", [0, 100, 1024, 64 * 1024])
def test_no_file_exceeds_chunk_size_even_at_the_inline_limit(
    chunk_size: int, inline_limit: int
) -> None:
    """Every file fits ``chunk_size``, or the message is refused; never a bigger file."""
    encoded = 0
    for size in {0, 1, inline_limit, inline_limit + 1, 3 * chunk_size}:
        for codec in (PlainCodec(), TaggingCodec()):
            body = b"\x5a" * size
            try:
                head, chunks = _encode(
                    body, chunk_size=chunk_size, inline_limit=inline_limit, codec=codec
                )
            except EnvelopeError as exc:
                # Only when the chunk list itself cannot fit in one head: a body
                # that fits in one chunk is always sent.
                assert "chunk size" in str(exc)
                assert size > chunk_size
                continue
            encoded += 1
            assert len(head) <= chunk_size, (size, len(head))
            assert all(len(d) <= chunk_size for _, d in chunks)
            assert _decode(head, chunks, codec) == body
    assert encoded >= 6


def test_a_chunk_list_too_long_for_one_head_is_refused_with_a_hint() -> None:
    with pytest.raises(EnvelopeError, match="SYFT_FLWR_CHUNK_SIZE"):
        _encode(b"x" * 100 * 1024, chunk_size=1024)


def test_head_carries_syft_rpc_fields_and_status() -> None:
    req, _ = _encode(b"x", headers={"x-extra": "1"})
    doc = json.loads(req)
    for key in (
        "id",
        "sender",
        "url",
        "headers",
        "body",
        "created",
        "expires",
        "method",
    ):
        assert key in doc
    assert doc["method"] == "POST"
    assert "status_code" not in doc
    assert doc["sender"] == SENDER and doc["url"] == URL and doc["expires"] == EXPIRES
    assert doc["headers"]["content-type"] == "application/vnd.flower.message+protobuf"
    assert doc["headers"]["x-syft-flwr-envelope"] == str(ENVELOPE_VERSION)
    assert doc["headers"]["x-extra"] == "1"
    assert doc["syft_flwr"]["v"] == ENVELOPE_VERSION
    assert doc["syft_flwr"]["kind"] == "request"

    resp, _ = _encode(b"x", kind="response", status_code=419)
    rdoc = json.loads(resp)
    assert rdoc["status_code"] == 419 and "method" not in rdoc
    head = parse_head(resp, expected_kind="response")
    assert head.kind == "response" and head.status_code == 419

    ok, _ = _encode(b"x", kind="response")
    assert json.loads(ok)["status_code"] == 200


def test_parse_head_fields() -> None:
    raw, _ = _encode(b"hello", headers={"X-K": "v"})
    head = parse_head(raw, expected_kind="request")
    assert head.id == _ctx().message_id
    assert head.sender == SENDER
    assert head.url == URL
    assert head.expires == EXPIRES
    assert head.created == "2026-01-01T12:00:00+00:00"
    assert head.storage == "inline"
    assert head.inline_body == b"hello"
    assert head.size == 5
    assert head.encrypted is False
    assert head.method == "POST"
    assert head.version == ENVELOPE_VERSION
    assert head.headers["X-K"] == "v"
    assert head.expires_at == parse_time(EXPIRES)


def test_sender_domain_is_folded_local_part_kept_on_parse() -> None:
    raw, _ = _encode(b"x")
    doc = json.loads(raw)
    doc["sender"] = "ds@Example.ORG"
    assert parse_head(json.dumps(doc).encode()).sender == SENDER
    doc["sender"] = "DS@Example.ORG"
    assert parse_head(json.dumps(doc).encode()).sender == "DS@example.org"


# -- integrity -------------------------------------------------------------------------


def test_chunk_sha_mismatch_is_incomplete() -> None:
    body = b"z" * 3000
    head, chunks = _encode(body, chunk_size=1024)
    name, data = chunks[1]
    tampered = [*chunks[:1], (name, b"Y" + data[1:]), *chunks[2:]]
    with pytest.raises(IncompleteMessage, match="does not match"):
        _decode(head, tampered)


def test_short_chunk_is_incomplete() -> None:
    head, chunks = _encode(b"z" * 3000, chunk_size=1024)
    name, data = chunks[0]
    with pytest.raises(IncompleteMessage):
        _decode(head, [(name, data[:-10]), *chunks[1:]])


def test_missing_chunk_is_incomplete() -> None:
    head, chunks = _encode(b"z" * 3000, chunk_size=1024)
    with pytest.raises(IncompleteMessage, match="not available"):
        _decode(head, chunks[:-1])


def test_reader_raising_incomplete_is_passed_through() -> None:
    head, _ = _encode(b"z" * 3000)

    def read(name: str) -> bytes:
        raise IncompleteMessage(name)

    with pytest.raises(IncompleteMessage):
        decode_body(parse_head(head), _ctx(), PlainCodec(), read)


def test_announced_size_mismatch_is_chunk_integrity_error() -> None:
    raw, _ = _encode(b"hello")
    doc = json.loads(raw)
    doc["syft_flwr"]["size"] = 6
    # sizes that disagree are refused by the strict reader, before any body read
    with pytest.raises(ChunkIntegrityError, match="5 bytes for a 6-byte"):
        parse_head(json.dumps(doc).encode())
    # and by decode_body too, for a head built by hand
    head = parse_head(raw)
    head = dataclasses.replace(head, size=6)
    with pytest.raises(ChunkIntegrityError):
        decode_body(head, _ctx(), PlainCodec(), lambda n: b"")
    assert not issubclass(ChunkIntegrityError, IncompleteMessage)
    assert issubclass(ChunkIntegrityError, EnvelopeError)


# -- partial and malformed heads ----------------------------------------------------------


def test_partial_json_is_incomplete() -> None:
    raw, _ = _encode(b"x" * 50)
    for cut in (0, 1, len(raw) // 3, len(raw) // 2, len(raw) - 1):
        with pytest.raises(IncompleteMessage):
            parse_head(raw[:cut])


def test_non_utf8_bytes_are_incomplete() -> None:
    with pytest.raises(IncompleteMessage):
        parse_head(b"\xff\xfe{\x00")


def _doc() -> dict[str, Any]:
    raw, _ = _encode(b"hello")
    return json.loads(raw)


def _mutate(path: tuple[str, ...], value: Any) -> bytes:
    doc = _doc()
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc).encode()


_DELETE = object()


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"a string"',
        b"42",
        b"null",
        _mutate(("id",), _DELETE),
        _mutate(("sender",), _DELETE),
        _mutate(("expires",), _DELETE),
        _mutate(("url",), _DELETE),
        _mutate(("syft_flwr",), 5),
        _mutate(("syft_flwr", "storage"), "cloud"),
        _mutate(("syft_flwr", "kind"), "notice"),
        _mutate(("syft_flwr", "storage"), "chunks"),  # but no chunks listed
        _mutate(("syft_flwr", "chunks"), [{"size": 3}]),
        _mutate(("syft_flwr", "chunks"), [{"size": "big", "sha256": "x"}]),
        _mutate(("syft_flwr", "encryption"), "aes"),
        _mutate(("syft_flwr", "v"), "one"),
        _mutate(("headers",), ["not", "a", "dict"]),
        _mutate(("body",), "***not base64***"),
    ],
)
def test_malformed_complete_json_is_envelope_error(raw: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_head(raw)
    assert not isinstance(info.value, IncompleteMessage)


def test_wrong_kind_is_envelope_error() -> None:
    raw, _ = _encode(b"x", kind="response")
    with pytest.raises(EnvelopeError, match="expected a request"):
        parse_head(raw, expected_kind="request")


def test_newer_version_asks_for_an_upgrade() -> None:
    raw = _mutate(("syft_flwr", "v"), ENVELOPE_VERSION + 1)
    with pytest.raises(EnvelopeError, match="upgrade syft_flwr") as info:
        parse_head(raw)
    assert not isinstance(info.value, IncompleteMessage)
    assert str(ENVELOPE_VERSION + 1) in str(info.value)


# -- plain syft-rpc messages ----------------------------------------------------------------


def test_plain_syft_rpc_request_parses() -> None:
    doc = {
        "id": "abc",
        "sender": SENDER,
        "url": URL,
        "method": "POST",
        "headers": {},
        "body": base64.b64encode(b"legacy body").decode(),
        "created": "2026-01-01T00:00:00+00:00",
        "expires": "2099-01-01T00:00:00Z",
    }
    head = parse_head(json.dumps(doc).encode(), expected_kind="request")
    assert head.kind == "request"
    assert head.version == 0
    assert head.storage == "inline"
    assert head.encrypted is False
    assert head.inline_body == b"legacy body"
    assert decode_body(head, _ctx(), PlainCodec(), lambda n: b"") == b"legacy body"


def test_plain_syft_rpc_response_parses() -> None:
    doc = {
        "id": "abc",
        "sender": RECIPIENT,
        "url": URL,
        "headers": {},
        "body": "",
        "created": "2026-01-01T00:00:00+00:00",
        "expires": "2099-01-01T00:00:00+00:00",
        "status_code": 200,
    }
    head = parse_head(json.dumps(doc).encode())
    assert head.kind == "response"
    assert head.status_code == 200
    assert head.inline_body == b""


# -- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ts", [0.0, 1.5, 1767268800.123456, time.time()])
def test_time_round_trip(ts: float) -> None:
    text = format_time(ts)
    assert text.endswith("+00:00")
    assert abs(parse_time(text) - ts) < 1e-6


def test_time_formats_accepted() -> None:
    assert parse_time("2026-01-01T00:00:00Z") == parse_time("2026-01-01T00:00:00+00:00")
    # Naive timestamps are UTC.
    assert parse_time("2026-01-01T00:00:00") == parse_time("2026-01-01T00:00:00+00:00")
    assert parse_time("2026-01-01T02:00:00+02:00") == parse_time("2026-01-01T00:00:00Z")
    assert format_time(0) == "1970-01-01T00:00:00+00:00"


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-13-01T00:00:00"])
def test_bad_time_is_envelope_error(bad: str) -> None:
    with pytest.raises(EnvelopeError):
        parse_time(bad)
