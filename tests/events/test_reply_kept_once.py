"""A data owner keeps a large reply without writing it twice (issue 10).

The ledger keeps a reply with attachments by giving the sealed chunks it just
wrote a second name (a hard link) in its private ``replies/`` folder; only the
references and content keys are written again. Real SyftBox folders, watchdog
and encryption; the researcher is a :class:`SyftFlwrRpc` in the test thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from _support import APP, EventsRunner, wait_until
from flwr.app import Array, ArrayRecord, Message, Metadata, RecordDict

from syft_flwr.client import SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy
from syft_flwr.data_owner.ledger import Ledger
from syft_flwr.events import TransportEvents
from syft_flwr.serde import bytes_to_flower_message, split_message
from syft_flwr.transports.syftbox import SyftBoxTransport
from syft_flwr.wire import frames
from syft_flwr.wire.mailbox import Incoming, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"
#: 3.2 MB: an attachment of four 1 MiB chunks.
VALUES = 800_000
ENCRYPTED = Settings(encryption_enabled=True, poll_interval=0.25, chunk_size=1 << 20)


def big_reply() -> bytes:
    """A framed Flower reply whose array (3.2 MB) becomes an attachment."""
    weights = np.arange(VALUES, dtype=np.float32)
    md = Metadata(
        run_id=1,
        message_id="reply-1",
        src_node_id=2,
        dst_node_id=1,
        reply_to_message_id="req-1",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type="train",
    )
    msg = Message(
        metadata=md, content=RecordDict({"m": ArrayRecord({"w": Array(weights)})})
    )
    return split_message(msg).framed()


def weights_of(body: bytes) -> np.ndarray:
    msg = bytes_to_flower_message(body)
    return msg.content.array_records["m"]["w"].numpy()


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, body: bytes) -> bytes:
        self.calls += 1
        return big_reply()


class NoLinks(SyftBoxTransport):
    """Local folders on which a hard link is not possible (another disk)."""

    def link_out(self, key: str, dest: Path) -> bool:
        return False


@pytest.fixture
def do_client(make_client: Callable[[str], SyftCoreClient]) -> SyftCoreClient:
    return make_client(DO)


@pytest.fixture
def researcher(
    make_client: Callable[[str], SyftCoreClient],
) -> Iterator[SyftFlwrRpc]:
    client = make_client(DS)
    transport = client.make_transport()
    yield SyftFlwrRpc(
        transport,
        APP,
        settings=ENCRYPTED,
        policy=default_policy(client, transport, ENCRYPTED),
    )
    transport.close()


def serve(
    client: SyftCoreClient, handler: Counter, **kwargs: object
) -> TransportEvents:
    ev = TransportEvents(APP, client, settings=ENCRYPTED, poll_interval=0.25, **kwargs)  # type: ignore[arg-type]
    ev.drain_timeout = 0.0
    ev.on_request(EP, handler)
    return ev


def wait_response(rpc: SyftFlwrRpc, mid: str) -> Incoming:
    return wait_until(
        lambda: rpc.response_for(DO, EP, mid), timeout=20, message=f"reply {mid}"
    )


def replies_dir(client: SyftCoreClient) -> Path:
    return client.state_dir(APP) / Ledger.REPLIES


def kept_chunks(client: SyftCoreClient, mid: str) -> list[Path]:
    return sorted(replies_dir(client).glob(f"{mid}.a0.*.chunk"))


def outbox_chunks(client: SyftCoreClient, mid: str) -> list[Path]:
    folder = client.datasites / DO / "app_data" / APP / "rpc" / EP / DS
    return sorted(folder.glob(f"{mid}.response.a0.*.chunk"))


def test_a_large_reply_is_kept_by_linking_its_sealed_chunks(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    handler = Counter()
    events_runner.start(serve(do_client, handler))
    mid = researcher.send_request(DO, EP, b"train", expires_at=_later())
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 200 and resp.head.encrypted
    np.testing.assert_array_equal(
        weights_of(resp.body), np.arange(VALUES, dtype=np.float32)
    )

    kept, sent = kept_chunks(do_client, mid), outbox_chunks(do_client, mid)
    assert len(kept) == len(sent) >= 3
    for k, s in zip(kept, sent, strict=True):
        # the same file under two names: the reply was written once
        assert os.stat(k).st_ino == os.stat(s).st_ino
        assert os.stat(k).st_nlink == 2
    # what the ledger wrote itself: references and keys, not the array
    reply_file = replies_dir(do_client) / f"{mid}.reply"
    assert reply_file.stat().st_size < 64 * 1024
    data = reply_file.read_bytes()
    # tagged (b"\xffSK1", whom it answers), status, then the attached record
    assert data[:4] == b"\xffSK1"
    start = 6 + int.from_bytes(data[4:6], "big") + 2
    assert data[start : start + 5] == b"\x00SFA\x01"


def test_a_restarted_data_owner_resends_the_linked_reply(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    handler = Counter()
    first = serve(do_client, handler)
    events_runner.start(first)
    mid = researcher.send_request(DO, EP, b"train", expires_at=_later())
    before = wait_response(researcher, mid)
    events_runner.stop(first)
    first.transport.close()
    # The researcher lost the reply files; the request is still there.
    for p in outbox_chunks(do_client, mid):
        p.unlink()
    researcher.transport.delete(researcher.head_key(DO, EP, DS, mid, "response"))
    assert kept_chunks(do_client, mid), "the ledger's names outlive the sent files"

    events_runner.start(serve(do_client, handler))
    again = wait_response(researcher, mid)
    assert again.head.status_code == 200
    np.testing.assert_array_equal(weights_of(again.body), weights_of(before.body))
    assert handler.calls == 1  # from the ledger, the ClientApp did not run again


def test_an_altered_kept_chunk_is_refused_not_resent(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Counter()
    first = serve(do_client, handler)
    events_runner.start(first)
    mid = researcher.send_request(DO, EP, b"train", expires_at=_later())
    wait_response(researcher, mid)
    events_runner.stop(first)
    first.transport.close()
    for p in outbox_chunks(do_client, mid):
        p.unlink()  # the kept names stay, alone now
    researcher.transport.delete(researcher.head_key(DO, EP, DS, mid, "response"))
    victim = kept_chunks(do_client, mid)[1]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))

    caplog.set_level(logging.WARNING)
    events_runner.start(serve(do_client, handler))
    resp = wait_response(researcher, mid)
    # never re-sent altered, never run again: the researcher is told why
    assert resp.head.status_code == 409
    assert handler.calls == 1
    assert any("cannot be read back" in r.getMessage() for r in caplog.records)


def test_without_links_the_reply_is_stored_whole(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    handler = Counter()
    transport = NoLinks(do_client.datasites, DO)
    events_runner.start(serve(do_client, handler, transport=transport))
    mid = researcher.send_request(DO, EP, b"train", expires_at=_later())
    assert wait_response(researcher, mid).head.status_code == 200
    assert kept_chunks(do_client, mid) == []
    reply_file = replies_dir(do_client) / f"{mid}.reply"
    assert reply_file.stat().st_size > VALUES * 4  # the plaintext copy
    ledger = Ledger(do_client.state_dir(APP))
    stored = ledger.stored_reply(mid)
    assert stored is not None and stored[0] == 200
    np.testing.assert_array_equal(
        weights_of(frames.inline(stored[1])), np.arange(VALUES, dtype=np.float32)
    )
    transport.close()


def test_dropping_a_linked_reply_removes_its_chunks(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    events_runner.start(serve(do_client, Counter()))
    mid = researcher.send_request(DO, EP, b"train", expires_at=_later())
    wait_response(researcher, mid)
    ledger = Ledger(do_client.state_dir(APP))
    assert kept_chunks(do_client, mid)
    ledger.drop_reply(mid)
    assert kept_chunks(do_client, mid) == []
    assert not (replies_dir(do_client) / f"{mid}.reply").exists()
    assert ledger.stored_reply(mid) is None


def test_orphan_kept_chunks_are_swept(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    folder = tmp_path / Ledger.REPLIES
    stray = folder / "gone.a0.000000.chunk"
    stray.write_bytes(b"x")
    old = os.stat(stray).st_mtime - 7200
    os.utime(stray, (old, old))
    ledger.trim()
    assert not stray.exists()


def test_store_sealed_refuses_without_a_folder_or_attachments(tmp_path: Path) -> None:
    def link(folder: Path, stem: str) -> bool:
        raise AssertionError("nothing to link")

    assert (
        Ledger(None).store_sealed("m", 200, b"\x00SFA\x01...", link, 1e12, size=0)
        is False
    )
    assert (
        Ledger(tmp_path).store_sealed("m", 200, b"plain", link, 1e12, size=0) is False
    )
    assert Ledger(tmp_path).stored_reply("m") is None


def _later() -> float:
    return time.time() + 600


def test_a_linked_reply_whose_head_cannot_be_written_is_kept_and_retried(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import shutil

    caplog.set_level(logging.INFO, logger="syft_flwr")
    handler = Counter()
    mid = "blocked-large-reply-1"
    folder = do_client.datasites / DO / "app_data" / APP / "rpc" / EP / DS
    events_runner.start(serve(do_client, handler))  # publishes its keys
    (folder / f"{mid}.response").mkdir(parents=True)  # the head cannot be written
    researcher.send_request(DO, EP, b"train", expires_at=_later(), message_id=mid)
    wait_until(lambda: "it is kept and retried" in caplog.text, timeout=20)
    # Kept already (linked before the head), durably now.
    assert kept_chunks(do_client, mid)
    shutil.rmtree(folder / f"{mid}.response")
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 200
    np.testing.assert_array_equal(
        weights_of(resp.body), np.arange(VALUES, dtype=np.float32)
    )
    assert handler.calls == 1
