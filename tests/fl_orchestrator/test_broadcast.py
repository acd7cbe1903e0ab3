"""One push, many data owners: shared content is written once (issue 10).

A researcher and three data owners over real SyftBox folders (one shared data
dir, watchdog events), data owners answering in threads like ClientApps.
Encryption on: each request carries the shared blob's content key sealed for
its own recipient.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _support import (
    APP,
    DATA_OWNERS,
    RESEARCHER,
    EventsRunner,
    echo_reply,
    make_syft_client,
    wait_until,
)
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from syft_flwr.client import SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.errors import DecryptionError, EncryptionError
from syft_flwr.events import create_events_watcher
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.transports.base import Transport
from syft_flwr.wire.mailbox import SyftFlwrRpc

EP = "messages"
MiB = 1024 * 1024
ENC = Settings(encryption_enabled=True, poll_interval=0.25, chunk_size=MiB)
MODEL = 3 * MiB + 123  # four 1 MiB chunks


@dataclass
class Seen:
    """Digests of the arrays each data owner's ClientApp received."""

    arrays: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, owner: str, msg: Message) -> None:
        got = {
            f"{name}/{key}": hashlib.sha256(arr.data).hexdigest()
            for name, rec in msg.content.array_records.items()
            for key, arr in rec.items()
        }
        with self.lock:
            self.arrays.setdefault(owner, []).append(got)


class CountingTransport:
    """Wraps the researcher's transport's ``put`` to count what it writes."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.puts: list[tuple[str, int]] = []
        original = transport.put

        def put(key: str, data: bytes) -> None:
            self.puts.append((key, len(data)))
            original(key, data)

        transport.put = put  # type: ignore[method-assign]

    def written(self, part: str) -> int:
        return sum(n for k, n in self.puts if part in k)


@dataclass
class Net:
    root: Path
    runner: EventsRunner
    seen: Seen
    researcher: SyftCoreClient
    grids: list[SyftGrid] = field(default_factory=list)

    def grid(
        self, datasites: tuple[str, ...] = DATA_OWNERS
    ) -> tuple[SyftGrid, CountingTransport]:
        counter = CountingTransport(self.researcher.make_transport())
        g = SyftGrid(
            APP,
            list(datasites),
            self.researcher,
            transport=counter.transport,
            settings=ENC,
        )
        g.set_run(7)
        self.grids.append(g)
        return g, counter

    def blobs_dir(self) -> Path:
        return (
            self.root
            / "SyftBox"
            / "datasites"
            / RESEARCHER
            / "app_data"
            / APP
            / "blobs"
        )

    def shared_files(self) -> list[Path]:
        d = self.blobs_dir()
        return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def _handler(owner: str, seen: Seen):  # noqa: ANN202
    def handle(body: bytes) -> bytes:
        msg = bytes_to_flower_message(body)
        seen.add(owner, msg)
        return flower_message_to_bytes(echo_reply(msg, owner))

    return handle


@pytest.fixture
def net(syft_root: Path) -> Iterator[Net]:
    n = Net(syft_root, EventsRunner(), Seen(), make_syft_client(syft_root, RESEARCHER))
    for email in DATA_OWNERS:
        ev = create_events_watcher(
            APP, make_syft_client(syft_root, email), poll_interval=0.25, settings=ENC
        )
        assert isinstance(ev, TransportEvents)
        ev.drain_timeout = 0.0
        ev.on_request(EP, _handler(email, n.seen))
        n.runner.start(ev)
    yield n
    n.runner.stop_all()
    for g in n.grids:
        g.close()
        g.transport.close()


def _model(seed: int, size: int = MODEL) -> Array:
    rng = np.random.default_rng(seed)
    return Array(rng.integers(0, 255, size, dtype=np.uint8))


def _broadcast(grid: SyftGrid, record: RecordDict) -> list[Message]:
    return [
        grid.create_message(record, "train", nid, "round_1")
        for nid in grid.get_node_ids()
    ]


def test_identical_content_is_written_once(net: Net) -> None:
    grid, counter = net.grid()
    model = _model(1)
    record = RecordDict(
        {"arrays": ArrayRecord({"w": model}), "config": ConfigRecord({"lr": 0.1})}
    )
    replies = grid.send_and_receive(_broadcast(grid, record), timeout=30)
    assert len(replies) == 3 and not any(r.has_error() for r in replies)
    # The model went to disk once, in the shared folder: 4 chunk files.
    shared = [
        (k, n) for k, n in counter.puts if "/blobs/" in k and k.endswith(".chunk")
    ]
    assert len(shared) == 4
    assert sum(n for _, n in shared) == len(model.data) + 4 * 16  # + GCM tags
    # The requests themselves are small: no model bytes next to them.
    assert counter.written("/rpc/") < 64 * 1024
    total = sum(n for _, n in counter.puts)
    assert total < 1.05 * MODEL
    # Every data owner's ClientApp got the exact model...
    want = hashlib.sha256(model.data).hexdigest()
    assert {o: s[0]["arrays/w"] for o, s in net.seen.arrays.items()} == {
        o: want for o in DATA_OWNERS
    }
    # ...and each reply brought it back (the echo) byte for byte.
    for r in replies:
        assert r.content["arrays"]["w"].data == model.data
    # Everyone answered: the shared folder is gone.
    wait_until(
        lambda: not net.shared_files(), timeout=5, message="shared blobs removed"
    )


def test_mixed_content_shares_only_what_is_shared(net: Net) -> None:
    grid, counter = net.grid()
    shared = ArrayRecord({"w": _model(2)})
    messages = []
    own: dict[str, bytes] = {}
    for i, nid in enumerate(grid.get_node_ids()):
        mine = _model(10 + i, 2 * MiB)
        own[grid.email_of(nid)] = mine.data
        content = RecordDict(
            {
                "global": shared,
                "personal": ArrayRecord({"p": mine}),
                "config": ConfigRecord({"node": i}),
            }
        )
        messages.append(grid.create_message(content, "train", nid, "r"))
    replies = grid.send_and_receive(messages, timeout=30)
    assert len(replies) == 3 and not any(r.has_error() for r in replies)
    shared_bytes = counter.written("/blobs/")
    assert (
        MODEL <= shared_bytes < MODEL + 64 * 1024
    )  # written once (+ permission files)
    # Each personal array went once, next to its own request.
    for email in DATA_OWNERS:
        assert 2 * MiB <= counter.written(f"{email}/app_data") < 2 * MiB + 64 * 1024
        got = net.seen.arrays[email][0]
        assert got["global/w"] == hashlib.sha256(shared["w"].data).hexdigest()
        assert got["personal/p"] == hashlib.sha256(own[email]).hexdigest()


def test_shared_blob_removed_after_timeout_and_expiry(
    net: Net, syft_root: Path
) -> None:
    silent = "silent@example.org"
    SyftFlwrRpc(
        make_syft_client(syft_root, silent).make_transport(), APP
    ).transport.prepare(APP, EP, [RESEARCHER])
    grid, _ = net.grid((*DATA_OWNERS, silent))
    record = RecordDict({"arrays": ArrayRecord({"w": _model(3)})})
    replies = grid.send_and_receive(_broadcast(grid, record), timeout=3)
    assert len(replies) == 3  # the silent one timed out and was withdrawn
    assert not net.shared_files()  # ...and the shared model went with it
    # A crashed run leaves a folder behind; the next grid sweeps it once expired.
    rpc = grid.rpc
    group = rpc.new_shared_group(DATA_OWNERS, expires_at=rpc.clock() - 1)
    rpc.put_shared(group, b"x" * 10)
    keep = rpc.new_shared_group(DATA_OWNERS, expires_at=rpc.clock() + 3600)
    rpc.put_shared(keep, b"y" * 10)
    grid2, _ = net.grid()
    grid2.send_and_receive(_broadcast(grid2, record), timeout=30)
    names = {p.parent.name for p in net.shared_files()}
    assert group not in names and keep in names


def test_a_data_owner_not_addressed_cannot_open_the_shared_model(
    net: Net, syft_root: Path
) -> None:
    # The researcher addresses do1 and do2 only; do3 can read the files, not the key.
    grid, _ = net.grid()
    outsider = make_syft_client(syft_root, "outsider@example.org")
    outsider_rpc = SyftFlwrRpc(outsider.make_transport(), APP, settings=ENC)
    from syft_flwr.crypto.policy import default_policy

    outsider_rpc.policy = default_policy(outsider, outsider_rpc.transport, ENC)
    model = _model(4)
    msgs = [
        m
        for m in _broadcast(grid, RecordDict({"arrays": ArrayRecord({"w": model})}))
        if grid.email_of(m.metadata.dst_node_id) != DATA_OWNERS[2]
    ]
    captured: dict[str, Any] = {}
    net.runner.stop_all()  # data owners offline: the files stay put
    grid.push_messages(msgs)
    files = net.shared_files()
    chunks = [p for p in files if p.suffix == ".chunk"]
    assert chunks, files
    perms = (files[0].parent / "syftperm.yaml").read_text()
    assert DATA_OWNERS[0] in perms and DATA_OWNERS[1] in perms
    assert DATA_OWNERS[2] not in perms
    assert all(model.data[:64] not in p.read_bytes() for p in chunks)
    # The outsider reads do1's request file: sealed to do1, it does not open.
    req = next(
        (syft_root / "SyftBox" / "datasites" / DATA_OWNERS[0]).rglob("*.request")
    )
    key = str(req.relative_to(syft_root / "SyftBox" / "datasites"))
    with pytest.raises((DecryptionError, EncryptionError)):
        captured["x"] = outsider_rpc.read(key)
    assert "x" not in captured
    outsider_rpc.transport.close()


def _journaled_grid(net: Net, tmp_path: Path) -> tuple[Any, Any]:
    """A grid over ``net`` recording into a fresh resume journal."""
    from syft_flwr.researcher.journal import Journal

    journal = Journal(tmp_path / "resume", "key")
    journal.begin(7)
    grid, _ = net.grid()
    grid.journal = journal
    return grid, journal


def test_resume_journal_keeps_large_replies_without_writing_them_again(
    net: Net, tmp_path: Path
) -> None:
    from syft_flwr.researcher.journal import Journal, request_fingerprint

    journal = Journal(tmp_path / "resume", "key")
    journal.begin(7)
    grid, counter = net.grid()
    grid.journal = journal
    model = _model(5)
    msgs = _broadcast(grid, RecordDict({"arrays": ArrayRecord({"w": model})}))
    fps = [request_fingerprint(m) for m in msgs]
    replies = grid.send_and_receive(msgs, timeout=30)
    assert len(replies) == 3 and not any(r.has_error() for r in replies)
    journal.flush()  # records are written off the ServerApp's path
    # The replies' sealed chunks were moved into the journal, not written again:
    # the researcher wrote the model once (shared) and small files only.
    kept = sorted(journal.parts_dir.glob("*.chunk"))
    assert len(kept) == 3 * 4
    exchange = sorted(journal.folder.glob("*.exchange"))
    assert len(exchange) == 1 and exchange[0].stat().st_size < 64 * 1024
    assert sum(n for _, n in counter.puts) < 1.05 * len(model.data)
    # A resumed run replays them byte for byte.
    again = Journal(tmp_path / "resume", "key")
    bodies = again.replay(fps)
    assert bodies is not None
    for body in bodies:
        assert body is not None
        assert bytes_to_flower_message(body).content["arrays"]["w"].data == model.data


def test_journal_refuses_a_kept_chunk_that_was_altered(
    net: Net, tmp_path: Path
) -> None:
    from syft_flwr.errors import CheckpointError

    grid, journal = _journaled_grid(net, tmp_path)
    record = RecordDict({"arrays": ArrayRecord({"w": _model(6)})})
    assert len(grid.send_and_receive(_broadcast(grid, record), timeout=30)) == 3
    journal.flush()
    victim = sorted(journal.parts_dir.glob("*.chunk"))[0]
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        type(journal)(tmp_path / "resume", "key")


def test_previous_replies_leave_memory_and_read_back_exactly(
    net: Net, tmp_path: Path
) -> None:
    from syft_flwr.errors import CheckpointError
    from syft_flwr.serde import SpillableArray

    grid, journal = _journaled_grid(net, tmp_path)
    model = _model(7)
    first = grid.send_and_receive(
        _broadcast(grid, RecordDict({"arrays": ArrayRecord({"w": model})})), timeout=30
    )
    arrays = [r.content["arrays"]["w"] for r in first]
    assert all(isinstance(a, SpillableArray) and not a.spilled for a in arrays)
    # FedAvg-style, each reply is read once (numpy() copies it) and then no
    # longer held; the others stay until they are read. A second read gets
    # the same bytes back from the journal.
    assert np.array_equal(arrays[0].numpy(), model.numpy())
    assert arrays[0].spilled and not any(a.spilled for a in arrays[1:])
    assert arrays[0].data == model.data and arrays[0].spilled
    # The next call: Flower's loop still references `first`, but their bytes
    # are on disk (the journal) and leave memory...
    grid.send_and_receive(
        _broadcast(grid, RecordDict({"config": ConfigRecord({"x": 1})})), timeout=30
    )
    assert all(a.spilled for a in arrays)
    # ...while reading them still gives the exact bytes (checked and decrypted again).
    assert all(a.data == model.data for a in arrays)
    assert np.array_equal(arrays[0].numpy(), model.numpy())
    # Bytes assigned by hand are the array's own: kept, not released.
    arrays[1].data = bytes(len(model.data))
    assert arrays[1].data == bytes(len(model.data)) and not arrays[1].spilled
    # Once the run is over and its journal removed, the reason is plain.
    journal.finish()
    with pytest.raises(CheckpointError, match="kept only while their run lasts"):
        _ = arrays[0].data


def test_a_failed_shared_upload_falls_back_to_copies_and_leaves_nothing(
    net: Net,
) -> None:
    from syft_flwr.errors import TransportError

    grid, counter = net.grid()
    original = counter.transport.put

    def put(key: str, data: bytes) -> None:
        if "/blobs/" in key and key.endswith("000002.chunk"):
            raise TransportError("disk full (test)")
        original(key, data)

    counter.transport.put = put  # type: ignore[method-assign]
    model = _model(8)
    replies = grid.send_and_receive(
        _broadcast(grid, RecordDict({"arrays": ArrayRecord({"w": model})})), timeout=30
    )
    assert len(replies) == 3 and not any(r.has_error() for r in replies)
    assert all(r.content["arrays"]["w"].data == model.data for r in replies)
    # Each request carried its own copy instead, and the half-written shared
    # folder was removed at once.
    for email in DATA_OWNERS:
        assert counter.written(f"{email}/app_data") >= len(model.data)
    assert not [p for p in net.shared_files() if p.suffix == ".chunk"]


def test_a_request_with_large_arrays_names_its_content_hash(net: Net) -> None:
    from syft_flwr.review.guard import PROJECT_RECORD, take_project_hash
    from syft_flwr.wire import frames

    grid, _ = net.grid()
    grid.project_hash = "ab" * 32
    record = RecordDict(
        {"arrays": ArrayRecord({"w": _model(10)}), "config": ConfigRecord({"lr": 0.1})}
    )
    msg = _broadcast(grid, record)[0]
    split = grid._split(msg)
    # The hash the data owner would compute: without the project record,
    # which it takes out before the ClientApp (and its reply cache) see it.
    seen = bytes_to_flower_message(split.inline())
    assert take_project_hash(seen) == "ab" * 32
    assert frames.content_id(split.prefix) == seen.content.object_id
    assert PROJECT_RECORD not in msg.content  # the strategy's record is untouched
    # A message without large arrays stays plain protobuf (nothing named).
    small = grid._split(_broadcast(grid, RecordDict({"c": ConfigRecord({"x": 1})}))[0])
    assert not small.parts and frames.content_id(small.prefix) is None
