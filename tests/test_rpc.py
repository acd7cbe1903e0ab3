"""Request/response files: layout, write order, reading, refusals, cleanup, watches."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from syft_flwr.config import Settings
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    MessageNotFound,
    PermissionDenied,
    PlaintextRefused,
    TransportError,
    UnknownSenderError,
)
from syft_flwr.transports.base import RpcPath
from syft_flwr.transports.memory import MemoryHub, MemoryTransport
from syft_flwr.wire.envelope import BodyCodec, Head, PlainCodec, SealContext
from syft_flwr.wire.mailbox import (
    Incoming,
    PlaintextPolicy,
    SyftFlwrRpc,
    attachment_chunk_name,
)

DS = "ds@example.org"
DO = "do1@example.org"
APP = "flwr/app"
EP = "messages"
FOLDER = f"{DO}/app_data/{APP}/rpc/{EP}/{DS}"
SMALL = Settings(encryption_enabled=False, chunk_size=4096, inline_limit=256)


class RecordingTransport(MemoryTransport):
    """Records the order of writes."""

    def __init__(self, hub: MemoryHub, identity: str) -> None:
        super().__init__(hub, identity)
        self.puts: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.puts.append(key)
        super().put(key, data)


def _pair(
    settings: Settings = SMALL, hub: MemoryHub | None = None
) -> tuple[MemoryHub, SyftFlwrRpc, SyftFlwrRpc]:
    hub = hub or MemoryHub()
    ds = SyftFlwrRpc(
        RecordingTransport(hub, DS), APP, settings=settings, policy=PlaintextPolicy()
    )
    do = SyftFlwrRpc(
        MemoryTransport(hub, DO), APP, settings=settings, policy=PlaintextPolicy()
    )
    return hub, ds, do


def _later() -> float:
    return time.time() + 600


def test_layout_and_url() -> None:
    _, ds, _ = _pair()
    assert ds.identity == DS
    assert ds.url(DO, "/messages/") == f"syft://{DO}/app_data/{APP}/rpc/messages"
    assert ds.folder(DO, EP, DS) == FOLDER
    assert ds.endpoint_prefix(DO, EP) == f"{DO}/app_data/{APP}/rpc/{EP}"
    assert ds.head_key(DO, EP, DS, "m", "response") == f"{FOLDER}/m.response"
    assert SyftFlwrRpc(MemoryTransport(MemoryHub(), DS), "/flwr/app/").app_name == APP


def test_small_request_round_trip() -> None:
    hub, ds, do = _pair()
    # the recipient's domain is case-insensitive (its local part is not)
    mid = ds.send_request(
        "do1@EXAMPLE.org", f"/{EP}", b"small body", expires_at=_later()
    )
    assert set(hub.snapshot()) == {f"{FOLDER}/{mid}.request"}
    inc = do.read(f"{FOLDER}/{mid}.request")
    assert isinstance(inc, Incoming)
    assert inc.id == mid and inc.sender == DS and inc.body == b"small body"
    assert inc.path == RpcPath(
        owner=DO, app=APP, endpoint=EP, peer=DS, name=f"{mid}.request"
    )
    assert inc.head.url == f"syft://{DO}/app_data/{APP}/rpc/{EP}"


def test_explicit_message_id_and_headers() -> None:
    _, ds, do = _pair()
    mid = ds.send_request(
        DO, EP, b"x", expires_at=_later(), message_id="abc", headers={"k": "v"}
    )
    assert mid == "abc"
    assert do.read(f"{FOLDER}/abc.request").head.headers["k"] == "v"


def test_large_request_is_chunked_and_written_chunks_first() -> None:
    hub, ds, do = _pair()
    body = bytes(range(256)) * 72  # 18432 bytes -> 5 chunks of <= 4096
    mid = ds.send_request(DO, EP, body, expires_at=_later())
    puts = ds.transport.puts  # type: ignore[attr-defined]
    assert puts[-1] == f"{FOLDER}/{mid}.request"
    assert puts[:-1] == [f"{FOLDER}/{mid}.request.{i:06d}.chunk" for i in range(5)]
    assert all(len(v) <= 4096 for v in hub.snapshot().values())
    assert do.read(f"{FOLDER}/{mid}.request").body == body


def test_chunk_size_is_capped_by_the_transport() -> None:
    hub = MemoryHub(max_file_size=2048)
    rpc = SyftFlwrRpc(
        MemoryTransport(hub, DS), APP, settings=Settings(encryption_enabled=False)
    )
    assert rpc.chunk_size == 2048
    big = SyftFlwrRpc(MemoryTransport(MemoryHub(), DS), APP, settings=SMALL)
    assert big.chunk_size == 4096


@pytest.mark.parametrize(
    ("settings", "max_file_size", "body_size"),
    [
        (Settings(encryption_enabled=False, chunk_size=1024), 1024, 512),
        (
            Settings(encryption_enabled=False, chunk_size=4096, inline_limit=4096),
            4096,
            4096,
        ),
        (Settings(encryption_enabled=False), 16 * 1024, 16 * 1024),
    ],
    ids=[
        "min-chunk-size",
        "inline-limit-equals-chunk-size",
        "transport-limit-below-inline",
    ],
)
def test_no_file_exceeds_the_chunk_size_at_inline_boundary(
    settings: Settings, max_file_size: int, body_size: int
) -> None:
    hub = MemoryHub(max_file_size=max_file_size)
    ds = SyftFlwrRpc(
        MemoryTransport(hub, DS), APP, settings=settings, policy=PlaintextPolicy()
    )
    ds.send_request(DO, EP, b"x" * body_size, expires_at=_later())
    assert hub.largest_file <= min(settings.chunk_size, max_file_size)


def test_response_round_trip_and_response_for() -> None:
    _, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"q", expires_at=_later())
    assert ds.response_for(DO, EP, mid) is None
    inc = do.read(f"{FOLDER}/{mid}.request")
    do.send_response(inc, body=b"answer" * 100, status_code=200)
    got = ds.response_for(DO, EP, mid)
    assert got is not None
    assert got.body == b"answer" * 100
    assert got.sender == DO
    assert got.head.status_code == 200
    assert got.head.kind == "response"
    assert got.head.expires == inc.head.expires


def test_response_to_an_unreadable_request_by_path() -> None:
    hub, ds, do = _pair()
    path = RpcPath.parse(f"{FOLDER}/zzz.request")
    assert path is not None
    do.send_response(path, status_code=400, body=b"malformed")
    got = ds.response_for(DO, EP, "zzz")
    assert got is not None and got.head.status_code == 400 and got.body == b"malformed"
    # The expiry defaults to about an hour from now.
    assert 3000 < got.head.expires_at - time.time() < 4000


def test_read_of_another_app_is_not_found() -> None:
    _, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"x", expires_at=_later())
    other = SyftFlwrRpc(do.transport, "other", settings=SMALL, policy=PlaintextPolicy())
    with pytest.raises(MessageNotFound):
        other.read(f"{FOLDER}/{mid}.request")
    with pytest.raises(MessageNotFound):
        do.read("not/an/rpc/key")
    with pytest.raises(MessageNotFound):
        do.read(f"{FOLDER}/missing.request")


def _forge(hub: MemoryHub, key: str, **changes: Any) -> None:
    doc = json.loads(hub.snapshot()[key])
    doc.update(changes)
    MemoryTransport(hub, DS).put(key, json.dumps(doc).encode())


def test_sender_must_match_its_folder() -> None:
    hub, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"x", expires_at=_later())
    key = f"{FOLDER}/{mid}.request"
    _forge(hub, key, sender="mallory@example.org")
    with pytest.raises(UnknownSenderError, match="mallory"):
        do.read(key)


def test_response_sender_must_be_the_folder_owner() -> None:
    hub, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"x", expires_at=_later())
    do.send_response(do.read(f"{FOLDER}/{mid}.request"), body=b"r")
    _forge(hub, f"{FOLDER}/{mid}.response", sender=DS)
    with pytest.raises(UnknownSenderError):
        ds.response_for(DO, EP, mid)


def test_file_name_must_match_the_id() -> None:
    hub, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"x", expires_at=_later())
    data = hub.snapshot()[f"{FOLDER}/{mid}.request"]
    MemoryTransport(hub, DS).put(f"{FOLDER}/copy.request", data)
    with pytest.raises(UnknownSenderError, match="different id"):
        do.read(f"{FOLDER}/copy.request")


def test_kind_must_match_the_file_name() -> None:
    hub, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"x", expires_at=_later())
    data = hub.snapshot()[f"{FOLDER}/{mid}.request"]
    MemoryTransport(hub, DO).put(f"{FOLDER}/{mid}.response", data)
    with pytest.raises(EnvelopeError):
        ds.response_for(DO, EP, mid)


def test_partial_head_and_missing_chunk_are_incomplete() -> None:
    hub, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"y" * 10_000, expires_at=_later())
    key = f"{FOLDER}/{mid}.request"
    head = hub.snapshot()[key]
    chunk = f"{FOLDER}/{mid}.request.000001.chunk"
    saved = hub.snapshot()[chunk]
    do.transport.delete(chunk)
    with pytest.raises(IncompleteMessage):
        do.read(key)
    ds.transport.put(chunk, saved)
    ds.transport.put(key, head[: len(head) // 2])
    with pytest.raises(IncompleteMessage):
        do.read(key)
    ds.transport.put(key, head)
    assert do.read(key).body == b"y" * 10_000


class _RequiredPlain(PlaintextPolicy):
    required = True  # type: ignore[assignment]


def test_plaintext_is_refused_when_encryption_is_required() -> None:
    hub, ds, _ = _pair()
    mid = ds.send_request(DO, EP, b"x", expires_at=_later())
    strict = SyftFlwrRpc(
        MemoryTransport(hub, DO), APP, settings=SMALL, policy=_RequiredPlain()
    )
    with pytest.raises(PlaintextRefused, match="not encrypted") as info:
        strict.read(f"{FOLDER}/{mid}.request")
    assert isinstance(info.value, EncryptionError)


class _FakeSeal(BodyCodec):
    algorithm = "fake"

    def __init__(self, seen: list[SealContext] | None = None) -> None:
        self.seen = seen if seen is not None else []

    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        self.seen.append(ctx)
        return {"alg": "fake", "ek": "AAAA"}, [bytes(p)[::-1] for p in parts]

    def open(
        self, ctx: SealContext, header: Mapping[str, Any] | None, parts: Sequence[bytes]
    ) -> bytes:
        self.seen.append(ctx)
        return b"".join(p[::-1] for p in parts)


class _FakePolicy:
    required = True

    def __init__(self) -> None:
        self.contexts: list[SealContext] = []
        self.sealed: list[SealContext] = []  # what the codec was given

    def for_sending(self, ctx: SealContext) -> BodyCodec:
        self.contexts.append(ctx)
        return _FakeSeal(self.sealed)

    def for_receiving(self, ctx: SealContext, head: Head) -> BodyCodec:
        self.contexts.append(ctx)
        return _FakeSeal(self.sealed)


def test_policy_sees_the_right_contexts_and_plaintext_side_refuses_sealed() -> None:
    hub = MemoryHub()
    sp, rp = _FakePolicy(), _FakePolicy()
    ds = SyftFlwrRpc(MemoryTransport(hub, DS), APP, settings=SMALL, policy=sp)
    do = SyftFlwrRpc(MemoryTransport(hub, DO), APP, settings=SMALL, policy=rp)
    mid = ds.send_request(DO, EP, b"secret" * 100, expires_at=_later())
    # Nothing on disk is the plaintext.
    assert all(b"secret" not in v for v in hub.snapshot().values())
    inc = do.read(f"{FOLDER}/{mid}.request")
    assert inc.body == b"secret" * 100 and inc.head.encrypted
    sent, received = sp.contexts[0], rp.contexts[0]
    # The policy picks keys by the addressing fields; the codec seals and opens
    # with the head's signed fields too (the same bytes on both sides).
    assert sent == replace(received, head=b"")
    assert sp.sealed == rp.sealed == [received]
    assert received.head == inc.head.signed_fields and b'"status' not in received.head
    assert (sent.sender, sent.recipient, sent.kind, sent.app, sent.endpoint) == (
        DS,
        DO,
        "request",
        APP,
        EP,
    )
    plain = SyftFlwrRpc(
        MemoryTransport(hub, DO), APP, settings=SMALL, policy=PlaintextPolicy()
    )
    with pytest.raises(EncryptionError, match="encryption is off"):
        plain.read(f"{FOLDER}/{mid}.request")


def test_delete_withdraw_and_finish() -> None:
    hub, ds, do = _pair()
    keep = ds.send_request(DO, EP, b"k" * 3000, expires_at=_later())
    mid = ds.send_request(DO, EP, b"z" * 3000, expires_at=_later())
    do.send_response(do.read(f"{FOLDER}/{mid}.request"), body=b"r" * 3000)
    assert any(k.startswith(f"{FOLDER}/{mid}.response.") for k in hub.snapshot())
    ds.withdraw(DO, EP, mid)
    left = set(hub.snapshot())
    assert not any(k.startswith(f"{FOLDER}/{mid}.request") for k in left)
    assert f"{FOLDER}/{mid}.response" in left
    ds.finish(DO, EP, mid)
    assert not any(mid in k for k in hub.snapshot())
    # The other message is untouched.
    assert do.read(f"{FOLDER}/{keep}.request").body == b"k" * 3000
    ds.finish(DO, EP, mid)  # idempotent


def test_pending_request_keys() -> None:
    _, ds, do = _pair()
    a = ds.send_request(DO, EP, b"a" * 3000, expires_at=_later())
    b = ds.send_request(DO, EP, b"b", expires_at=_later())
    assert do.pending_request_keys(EP) == sorted(
        [f"{FOLDER}/{a}.request", f"{FOLDER}/{b}.request"]
    )
    do.send_response(do.read(f"{FOLDER}/{a}.request"), body=b"")
    assert do.pending_request_keys(EP) == [f"{FOLDER}/{b}.request"]
    assert do.pending_request_keys("other") == []


def test_watch_requests_maps_chunks_to_their_head() -> None:
    _, ds, do = _pair()
    seen: list[str] = []
    do.watch_requests(EP, seen.append)
    mid = ds.send_request(DO, EP, b"c" * 10_000, expires_at=_later())
    head = f"{FOLDER}/{mid}.request"
    assert seen and set(seen) == {head}
    assert len(seen) == 4  # 3 chunks + the head
    # Responses next to requests do not trigger it.
    do.send_response(do.read(head), body=b"r")
    assert set(seen) == {head} and len(seen) == 4


def test_watch_responses_reports_message_ids() -> None:
    _, ds, do = _pair()
    ids: list[str] = []
    w = ds.watch_responses(DO, EP, ids.append)
    mid = ds.send_request(DO, EP, b"q", expires_at=_later())
    assert ids == []  # the request itself is not a response
    do.send_response(do.read(f"{FOLDER}/{mid}.request"), body=b"r" * 3000)
    assert ids and set(ids) == {mid}
    w.cancel()
    mid2 = ds.send_request(DO, EP, b"q", expires_at=_later())
    do.send_response(do.read(f"{FOLDER}/{mid2}.request"), body=b"r")
    assert mid2 not in ids


def test_clock_sets_created() -> None:
    hub = MemoryHub()
    ds = SyftFlwrRpc(
        MemoryTransport(hub, DS),
        APP,
        settings=SMALL,
        policy=PlaintextPolicy(),
        clock=lambda: 0.0,
    )
    mid = ds.send_request(DO, EP, b"x", expires_at=60.0)
    head = json.loads(hub.snapshot()[f"{FOLDER}/{mid}.request"])
    assert head["created"] == "1970-01-01T00:00:00+00:00"
    assert head["expires"] == "1970-01-01T00:01:00+00:00"


def test_transport_errors_surface() -> None:
    hub = MemoryHub(max_file_size=1024)
    ds = SyftFlwrRpc(
        MemoryTransport(hub, DS), APP, settings=SMALL, policy=PlaintextPolicy()
    )
    ds.transport.close()
    with pytest.raises(TransportError):
        ds.send_request(DO, EP, b"x", expires_at=_later())


def test_plain_codec_is_default_policy() -> None:
    rpc = SyftFlwrRpc(MemoryTransport(MemoryHub(), DS), APP, settings=SMALL)
    assert isinstance(rpc.policy, PlaintextPolicy)
    ctx = SealContext("m", DS, DO, APP, EP, "request", "x")
    assert isinstance(rpc.policy.for_sending(ctx), PlainCodec)


def test_clear_refusals_are_written_but_never_trusted_when_encryption_is_required() -> (
    None
):
    hub = MemoryHub()
    strict_ds = SyftFlwrRpc(
        MemoryTransport(hub, DS), APP, settings=SMALL, policy=_RequiredPlain()
    )
    do = SyftFlwrRpc(
        MemoryTransport(hub, DO), APP, settings=SMALL, policy=PlaintextPolicy()
    )
    path = RpcPath.parse(f"{FOLDER}/r1.request")
    assert path is not None
    with pytest.raises(ValueError, match="refusals"):
        do.send_response(
            path, request_id="r1", status_code=200, body=b"data", plaintext=True
        )
    # A refusal in clear may be written (it carries a reason, never data), but
    # with encryption on nothing proves who wrote it: it is refused, and the
    # reason it claims is quoted for the logs.
    do.send_response(path, request_id="r1", status_code=403, body=b"no", plaintext=True)
    with pytest.raises(PlaintextRefused, match="unauthenticated refusal.*'no'"):
        strict_ds.response_for(DO, EP, "r1")
    # ... but a plaintext success is refused.
    path2 = RpcPath.parse(f"{FOLDER}/r2.request")
    assert path2 is not None
    do.send_response(path2, request_id="r2", status_code=200, body=b"data")
    with pytest.raises(PlaintextRefused):
        strict_ds.response_for(DO, EP, "r2")


# -- envelope v2: attachments; v1 still read ---------------------------------------------


def _framed(parts: list[bytes]) -> bytes:
    from syft_flwr.wire import frames

    slots = [frames.PartSlot("r", f"k{i}", len(p)) for i, p in enumerate(parts)]
    return frames.pack(slots, b"\x0askeleton", parts)


def test_large_parts_travel_as_attachments_next_to_the_message() -> None:
    from syft_flwr.wire.frames import FramedBody

    hub, ds, do = _pair()
    parts = [bytes(range(256)) * 40, b"\x07" * 9000]  # 10240 and 9000 bytes
    mid = ds.send_request(DO, EP, _framed(parts), expires_at=_later())
    names = sorted(k.rsplit("/", 1)[1] for k in hub.snapshot())
    a0 = [n for n in names if ".request.a0." in n]
    a1 = [n for n in names if ".request.a1." in n]
    assert len(a0) == 3 and len(a1) == 3  # 4096-byte chunks
    assert f"{mid}.request" in names
    # The head is written last and the body it carries is small.
    puts = ds.transport.puts  # type: ignore[attr-defined]
    assert puts[-1] == f"{FOLDER}/{mid}.request"
    inc = do.read(f"{FOLDER}/{mid}.request")
    assert isinstance(inc.body, FramedBody)
    assert list(inc.body.parts) == parts
    assert inc.size == len(_framed(parts))
    assert [r.size for r in inc.attachments] == [10240, 9000]
    # Deleting the message deletes its attachments.
    ds.withdraw(DO, EP, mid)
    assert hub.snapshot() == {}


def test_a_missing_or_altered_attachment_chunk_is_not_ready_yet() -> None:
    hub, ds, do = _pair()
    mid = ds.send_request(DO, EP, _framed([b"z" * 10000]), expires_at=_later())
    key = f"{FOLDER}/{mid}.request.a0.000001.chunk"
    data = hub.snapshot()[key]
    ds.transport.delete(key)
    with pytest.raises(IncompleteMessage, match="chunk 1 of attachment"):
        do.read(f"{FOLDER}/{mid}.request")
    ds.transport.put(key, data[:-1] + b"!")
    with pytest.raises(IncompleteMessage, match="does not match its digest"):
        do.read(f"{FOLDER}/{mid}.request")
    ds.transport.put(key, data)
    assert do.read(f"{FOLDER}/{mid}.request").body.parts[0] == b"z" * 10000  # type: ignore[attr-defined]


def test_a_version_1_message_is_still_read() -> None:
    # What syft_flwr before envelope v2 wrote: the same head with v = 1, a
    # protobuf body in chunks, no attachments. Plaintext (encryption off): no
    # version signs anything there, so older ones are read as before.
    hub, ds, do = _pair()
    body = bytes(range(256)) * 40
    mid = ds.send_request(DO, EP, body, expires_at=_later())
    key = f"{FOLDER}/{mid}.request"
    doc = json.loads(hub.snapshot()[key])
    assert doc["syft_flwr"]["v"] == 3
    doc["syft_flwr"]["v"] = 1
    doc["headers"]["x-syft-flwr-envelope"] = "1"
    ds.transport.put(key, json.dumps(doc).encode())
    inc = do.read(key)
    assert inc.head.version == 1 and inc.body == body and inc.attachments == ()


class _Recorder:
    """A progress reporter that keeps every transfer handle."""

    def __init__(self) -> None:
        from syft_flwr import progress

        self.handles: list[progress.TransferHandle] = []
        self._base = progress.Reporter()

    def transfer(self, peer, direction, total_bytes):  # noqa: ANN001, ANN201
        h = self._base.transfer(peer, direction, total_bytes)
        self.handles.append(h)
        return h

    def wait(self, what, total, timeout):  # noqa: ANN001, ANN201
        return self._base.wait(what, total, timeout)

    def close(self) -> None:
        pass


def test_attachments_report_transfer_progress_but_not_while_still_syncing() -> None:
    from syft_flwr import progress

    hub, ds, do = _pair()
    rec = _Recorder()
    with progress.use_reporter(rec):  # type: ignore[arg-type]
        mid = ds.send_request(DO, EP, _framed([b"q" * 10000]), expires_at=_later())
        sent = [h for h in rec.handles if h.direction == "send"]
        assert [(h.peer, h.total_bytes, h.completed) for h in sent] == [
            (DO, 10000, 10000)
        ]
        last = f"{FOLDER}/{mid}.request.a0.000002.chunk"
        data = hub.snapshot()[last]
        ds.transport.delete(last)
        with pytest.raises(IncompleteMessage):
            do.read(f"{FOLDER}/{mid}.request")
        assert not [h for h in rec.handles if h.direction == "receive"]
        ds.transport.put(last, data)
        do.read(f"{FOLDER}/{mid}.request")
    got = [h for h in rec.handles if h.direction == "receive"]
    assert [(h.peer, h.total_bytes, h.completed) for h in got] == [(DS, 10000, 10000)]


def test_keep_attachments_links_the_chunks_and_leaves_the_message_whole(
    tmp_path: Path,
) -> None:
    import os

    from syft_flwr.transports.syftbox import SyftBoxTransport
    from syft_flwr.wire.blobs import read_local_blob

    root = tmp_path / "datasites"
    ds = SyftFlwrRpc(SyftBoxTransport(root, DS), APP, settings=SMALL)
    do = SyftFlwrRpc(SyftBoxTransport(root, DO), APP, settings=SMALL)
    parts = [bytes(range(256)) * 40]
    mid = ds.send_request(DO, EP, _framed(parts), expires_at=_later())
    inc = do.read(f"{FOLDER}/{mid}.request")
    kept = tmp_path / "kept"
    stems = do.keep_attachments(inc, kept)
    assert stems == [f"{mid}.a0"]
    # Linked, not moved: a file renamed out of a watched folder holds up
    # watchdog's event queue for half a second; a link raises no such event.
    for i in range(inc.attachments[0].count):
        shared = root / FOLDER / attachment_chunk_name(mid, "request", 0, i)
        private = kept / f"{mid}.a0.{i:06d}.chunk"
        assert os.stat(shared).st_ino == os.stat(private).st_ino
    assert do.read(f"{FOLDER}/{mid}.request").body.parts == inc.body.parts  # type: ignore[attr-defined]
    ds.withdraw(DO, EP, mid)  # the exchange goes; the kept copy stays
    assert read_local_blob(kept, inc.attachments[0], stems[0]) == parts[0]
    ds.transport.close()
    do.transport.close()


class ListingTransport(MemoryTransport):
    """Counts folder listings."""

    def __init__(self, hub: MemoryHub, identity: str) -> None:
        super().__init__(hub, identity)
        self.listed: list[str] = []

    def list(self, prefix: str) -> list[str]:
        self.listed.append(prefix)
        return super().list(prefix)


def _listing_pair() -> tuple[MemoryHub, SyftFlwrRpc, SyftFlwrRpc]:
    hub = MemoryHub()
    ds = SyftFlwrRpc(
        ListingTransport(hub, DS), APP, settings=SMALL, policy=PlaintextPolicy()
    )
    do = SyftFlwrRpc(
        ListingTransport(hub, DO), APP, settings=SMALL, policy=PlaintextPolicy()
    )
    return hub, ds, do


@pytest.mark.parametrize("size", [10, 3000])  # inline, chunked
def test_finishing_an_exchange_read_or_written_here_lists_no_folder(size: int) -> None:
    hub, ds, do = _listing_pair()
    mid = ds.send_request(DO, EP, b"q" * size, expires_at=_later())
    do.send_response(do.read(f"{FOLDER}/{mid}.request"), body=b"r" * size)
    reply = ds.response_for(DO, EP, mid, check_rejected=False)
    assert reply is not None and reply.body == b"r" * size
    if size > SMALL.inline_limit:
        assert sum(mid in k for k in hub.snapshot()) > 2  # chunks on both sides
    ds.finish(DO, EP, mid, response=reply)
    assert not any(mid in k for k in hub.snapshot())  # chunks included
    assert ds.transport.listed == []  # type: ignore[attr-defined]


def test_a_data_owner_deletes_its_own_reply_without_listing() -> None:
    hub, ds, do = _listing_pair()
    mid = ds.send_request(DO, EP, b"q", expires_at=_later())
    do.send_response(do.read(f"{FOLDER}/{mid}.request"), body=b"r" * 3000)
    do.delete_message(FOLDER, mid, "response")
    assert not any(k.startswith(f"{FOLDER}/{mid}.response") for k in hub.snapshot())
    assert do.transport.listed == []  # type: ignore[attr-defined]


def test_a_message_not_known_here_is_found_by_listing() -> None:
    """Written by an earlier process (or another device): its chunks are listed."""
    hub, ds, do = _listing_pair()
    mid = ds.send_request(DO, EP, b"q" * 3000, expires_at=_later())
    later = SyftFlwrRpc(
        ListingTransport(hub, DS), APP, settings=SMALL, policy=PlaintextPolicy()
    )
    later.withdraw(DO, EP, mid)
    assert not any(mid in k for k in hub.snapshot())
    assert later.transport.listed == [FOLDER]  # type: ignore[attr-defined]
    # a reply read from another folder does not name this one's files
    mid2 = ds.send_request(DO, EP, b"q" * 3000, expires_at=_later())
    other = do.read(f"{FOLDER}/{mid2}.request")
    later.delete_message(f"{FOLDER}x", mid2, "request", read=other)
    assert later.transport.listed == [FOLDER, f"{FOLDER}x"]  # type: ignore[attr-defined]


def test_remembered_writes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import syft_flwr.wire.writer as writer_module

    monkeypatch.setattr(writer_module, "MAX_REMEMBERED_WRITES", 3)
    hub, ds, _ = _listing_pair()
    mids = [ds.send_request(DO, EP, b"q", expires_at=_later()) for _ in range(5)]
    assert len(ds._writer.written) == 3
    ds.withdraw(DO, EP, mids[0])  # forgotten: found by listing
    ds.withdraw(DO, EP, mids[4])  # remembered: no listing
    assert ds.transport.listed == [FOLDER]  # type: ignore[attr-defined]
    assert not any(m in k for k in hub.snapshot() for m in (mids[0], mids[4]))


def test_a_rejected_request_is_reported_by_response_for() -> None:
    hub = MemoryHub(reject=lambda writer, key: key.endswith(".request"))
    ds = SyftFlwrRpc(
        MemoryTransport(hub, DS), APP, settings=SMALL, policy=PlaintextPolicy()
    )
    mid = ds.send_request(DO, EP, b"q", expires_at=_later())
    assert ds.response_for(DO, EP, mid, check_rejected=False) is None
    with pytest.raises(PermissionDenied, match="refused request"):
        ds.response_for(DO, EP, mid)


def test_read_with_a_parsed_head_checks_its_kind_and_parses_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import syft_flwr.wire.reader as rpc_module
    from syft_flwr.wire.envelope import parse_head

    _, ds, do = _pair()
    mid = ds.send_request(DO, EP, b"q" * 3000, expires_at=_later())
    key = f"{FOLDER}/{mid}.request"
    head = parse_head(do.read_head_bytes(key), expected_kind="request")
    calls: list[bytes] = []
    monkeypatch.setattr(
        rpc_module, "parse_head", lambda data, **kw: calls.append(data) or head
    )
    assert do.read(key, head=head).body == b"q" * 3000
    assert calls == []
    with pytest.raises(EnvelopeError, match="expected a response"):
        do.read(f"{FOLDER}/{mid}.response", head=head)
