"""Attachments (blobs): sealed chunk by chunk, checked on the way in, no second buffer."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest

from syft_flwr.errors import DecryptionError, EnvelopeError, IncompleteMessage
from syft_flwr.wire.blobs import (
    BLOB_ALG,
    BlobRef,
    pack_attached,
    read_blob,
    refs_from_json,
    unpack_attached,
    write_blob,
)

CHUNK = 1000


def _store(
    data: bytes, *, encrypt: bool = True, blob_id: str = "b1"
) -> tuple[BlobRef, dict[int, bytes]]:
    files: dict[int, bytes] = {}

    def put(i: int, chunk: bytes) -> None:
        files[i] = bytes(chunk)

    ref = write_blob(data, put, blob_id=blob_id, chunk_payload=CHUNK, encrypt=encrypt)
    return ref, files


def _reader(files: dict[int, bytes]):  # noqa: ANN202
    def read(i: int, limit: int) -> bytes:
        if i not in files:
            raise FileNotFoundError(i)
        return files[i][:limit]

    return read


@pytest.mark.parametrize("encrypt", [True, False])
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7])
def test_round_trip(encrypt: bool, size: int) -> None:
    data = os.urandom(size)
    ref, files = _store(data, encrypt=encrypt)
    assert ref.size == size and ref.count == len(files) == max(1, -(-size // CHUNK))
    assert (ref.key is not None) == encrypt
    assert read_blob(ref, _reader(files)) == data
    for i, stored in files.items():
        assert len(stored) == ref.stored_size(i)
        assert hashlib.sha256(stored).hexdigest() == ref.sha256[i]
        if encrypt and len(stored) > 32:
            assert stored[:-16] not in data  # ciphertext, not the plaintext


def test_each_blob_gets_a_fresh_key() -> None:
    data = os.urandom(3 * CHUNK)
    a, fa = _store(data)
    b, fb = _store(data)
    assert a.key != b.key and fa[0] != fb[0]


def test_missing_or_partial_chunk_is_not_ready_yet() -> None:
    ref, files = _store(os.urandom(3 * CHUNK))
    partial = dict(files)
    del partial[2]
    with pytest.raises(IncompleteMessage, match="chunk 2 .* not available yet"):
        read_blob(ref, _reader(partial))
    partial[2] = files[2][:10]  # a sync client still writing it
    with pytest.raises(IncompleteMessage, match="does not match its digest"):
        read_blob(ref, _reader(partial))


def test_tampered_chunk_with_matching_digest_is_refused() -> None:
    # Whoever wrote the reference (and so the digests) can only be the sender;
    # a chunk that matches its digest but does not open is refused outright.
    data = os.urandom(2 * CHUNK)
    ref, files = _store(data)
    bad = bytearray(files[1])
    bad[5] ^= 1
    files[1] = bytes(bad)
    forged = BlobRef(
        ref.id,
        ref.size,
        ref.chunk,
        (ref.sha256[0], hashlib.sha256(files[1]).hexdigest()),
        ref.key,
    )
    with pytest.raises(DecryptionError, match="chunk 1 of 2 of attachment b1 failed"):
        read_blob(forged, _reader(files))


def test_reordered_swapped_and_foreign_chunks_are_refused() -> None:
    ref, files = _store(os.urandom(2 * CHUNK))
    other, ofiles = _store(os.urandom(2 * CHUNK), blob_id="b2")
    # Reordered: chunk 1's bytes at index 0 (digests re-signed by a forger).
    swapped = {0: files[1], 1: files[0]}
    forged = BlobRef(
        ref.id,
        ref.size,
        ref.chunk,
        tuple(hashlib.sha256(swapped[i]).hexdigest() for i in (0, 1)),
        ref.key,
    )
    with pytest.raises(DecryptionError, match="failed authentication"):
        read_blob(forged, _reader(swapped))
    # Foreign: the same key but another blob id (chunks bound to "b2").
    foreign = BlobRef("b1", other.size, other.chunk, other.sha256, other.key)
    with pytest.raises(DecryptionError, match="failed authentication"):
        read_blob(foreign, _reader(ofiles))
    # Truncated: the reference says 1 chunk fewer: sizes disagree.
    with pytest.raises(EnvelopeError, match="lists 1 digests"):
        BlobRef.from_json(
            {**ref.to_json(), "sha256": list(ref.sha256[:1])}, max_size=10**9
        )


def test_without_the_key_the_blob_cannot_be_opened() -> None:
    # What a data owner that was not addressed has: the files, not the key.
    data = os.urandom(2 * CHUNK)
    ref, files = _store(data)
    guess = BlobRef(ref.id, ref.size, ref.chunk, ref.sha256, os.urandom(32))
    with pytest.raises(DecryptionError):
        read_blob(guess, _reader(files))
    # Taken for plaintext, the ciphertext never passes as the data.
    nokey = BlobRef(ref.id, ref.size, ref.chunk, ref.sha256, None)
    with pytest.raises(IncompleteMessage, match="does not match its digest"):
        read_blob(nokey, _reader(files))


def test_reference_json_is_checked_strictly() -> None:
    ref, _ = _store(os.urandom(CHUNK + 1))
    doc = ref.to_json()
    assert doc["alg"] == BLOB_ALG
    assert BlobRef.from_json(doc, max_size=10**9) == ref
    bad_cases = [
        {**doc, "extra": 1},
        {**doc, "id": "../x"},
        {**doc, "id": "a\nb"},
        {**doc, "size": -1},
        {**doc, "size": True},
        {**doc, "size": 10**10},
        {**doc, "sha256": ["zz" * 32, doc["sha256"][1]]},
        {**doc, "alg": "rot13"},
        {**doc, "key": "!!"},
        {**doc, "key": "AAAA"},
        {**doc, "shared": "../../etc"},
        [],
    ]
    for bad in bad_cases:
        with pytest.raises(EnvelopeError):
            BlobRef.from_json(bad, max_size=10**9)


def test_attached_body_round_trip_and_limits() -> None:
    ref, _ = _store(os.urandom(3000))
    body = pack_attached([ref], b"inner-bytes")
    refs, inner = unpack_attached(body, max_total=10**6)
    assert refs == [ref] and bytes(inner) == b"inner-bytes"
    # A body without attachments comes back whole.
    refs, inner = unpack_attached(b"\x0aplain protobuf", max_total=10**6)
    assert refs == [] and bytes(inner) == b"\x0aplain protobuf"
    with pytest.raises(EnvelopeError, match="exceed"):
        unpack_attached(body, max_total=100)
    with pytest.raises(EnvelopeError, match="too long or truncated"):
        unpack_attached(body[:12], max_total=10**6)
    with pytest.raises(EnvelopeError):
        refs_from_json([{"id": "x"}], max_total=10)


def test_reading_needs_no_second_buffer() -> None:
    size = 8 * 1024 * 1024
    files: dict[int, bytes] = {}
    ref = write_blob(
        os.urandom(size),
        lambda i, c: files.__setitem__(i, bytes(c)),
        blob_id="big",
        chunk_payload=256 * 1024,
        encrypt=True,
    )
    tracemalloc.start()
    try:
        out = read_blob(ref, _reader(files))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) == size
    # The result plus about one chunk: no join buffer, no copy of the whole.
    assert peak < size + 4 * 256 * 1024, peak


def test_a_reply_attachment_may_leave_out_digests_but_still_refuses_tampering() -> None:
    data = os.urandom(3 * CHUNK)
    files: dict[int, bytes] = {}
    ref = write_blob(
        data,
        lambda i, c: files.__setitem__(i, bytes(c)),
        blob_id="r",
        chunk_payload=CHUNK,
        encrypt=True,
        digests=False,
    )
    assert ref.sha256 == () and ref.count == 3
    assert "sha256" not in ref.to_json()
    assert BlobRef.from_json(ref.to_json(), max_size=10**9) == ref
    assert read_blob(ref, _reader(files)) == data
    bad = bytearray(files[2])
    bad[0] ^= 1
    files[2] = bytes(bad)
    with pytest.raises(DecryptionError, match="chunk 2 of 3 of attachment r failed"):
        read_blob(ref, _reader(files))
    files[2] = files[2][:-1]  # short: still syncing
    with pytest.raises(IncompleteMessage):
        read_blob(ref, _reader(files))


def test_digests_are_required_for_plaintext_and_shared_attachments() -> None:
    plain, _ = _store(os.urandom(10), encrypt=False)
    doc = plain.to_json()
    del doc["sha256"]
    with pytest.raises(EnvelopeError, match="no chunk digests"):
        BlobRef.from_json(doc, max_size=10**9)
    # Several recipients hold a shared blob's key: digests are always written.
    files: dict[int, bytes] = {}
    shared = write_blob(
        b"x" * 10,
        lambda i, c: files.__setitem__(i, bytes(c)),
        blob_id="s",
        chunk_payload=CHUNK,
        encrypt=True,
        shared="g1-abc",
        digests=False,
    )
    assert len(shared.sha256) == 1
    doc = shared.to_json()
    del doc["sha256"]
    with pytest.raises(EnvelopeError, match="no chunk digests"):
        BlobRef.from_json(doc, max_size=10**9)


def test_an_announced_size_costs_no_memory_until_its_chunks_exist() -> None:
    # A reference claiming 512 MiB whose chunks were never written: refused as
    # "not ready yet" without allocating the buffer.
    size = 512 * 1024 * 1024
    ref = BlobRef("huge", size, CHUNK * 1000, ("0" * 64,) * -(-size // (CHUNK * 1000)))
    tracemalloc.start()
    try:
        with pytest.raises(IncompleteMessage, match="not available yet"):
            read_blob(ref, _reader({}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak
