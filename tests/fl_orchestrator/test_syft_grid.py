"""SyftGrid end to end over real SyftBox folders: a researcher and three data owners.

Every party has its own ``syft_core`` client on one shared data dir (a perfect sync);
the data owners answer through ``create_events_watcher`` handlers running in threads,
the way a ClientApp would (decode, reply with ``Message(..., reply_to=msg)``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _support import (
    APP,
    DATA_OWNERS,
    PLAIN,
    RESEARCHER,
    EventsRunner,
    OwnerLog,
    flower_handler,
    make_syft_client,
    wait_until,
)
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

import syft_flwr.ids as ids_module
from syft_flwr._flwr_compat import Run
from syft_flwr.client import SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.errors import NodeIdCollisionError
from syft_flwr.events import create_events_watcher
from syft_flwr.ids import node_id_for
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

try:
    from flwr.supercore.task_identity import TaskIdentity
except ImportError:  # pragma: no cover
    TaskIdentity = None  # type: ignore[assignment,misc]

EP = "messages"
SILENT = "silent@example.org"
MiB = 1024 * 1024


@dataclass
class Network:
    root: Path
    runner: EventsRunner
    researcher: SyftCoreClient
    owners: dict[str, SyftCoreClient] = field(default_factory=dict)
    logs: dict[str, OwnerLog] = field(default_factory=dict)
    events: dict[str, TransportEvents] = field(default_factory=dict)
    grids: list[SyftGrid] = field(default_factory=list)

    def owner(self, email: str) -> SyftCoreClient:
        if email not in self.owners:
            self.owners[email] = make_syft_client(self.root, email)
            self.logs[email] = OwnerLog(email)
        return self.owners[email]

    def serve(
        self,
        email: str,
        *,
        handler: Callable[[bytes], Any] | None = None,
        fail: bool = False,
        settings: Settings | None = PLAIN,
    ) -> TransportEvents:
        client = self.owner(email)
        kwargs: dict[str, Any] = {}
        if settings is not None:
            kwargs["settings"] = settings
        ev = create_events_watcher(APP, client, poll_interval=0.25, **kwargs)
        assert isinstance(ev, TransportEvents)
        ev.drain_timeout = 0.0
        ev.on_request(EP, handler or flower_handler(email, self.logs[email], fail=fail))
        self.runner.start(ev)
        self.events[email] = ev
        return ev

    def prepare_only(self, email: str) -> None:
        """The owner has started once (permissions + schema) but does not answer now."""
        t = self.owner(email).make_transport()
        t.prepare(APP, EP, [RESEARCHER])
        t.close()

    def grid(
        self,
        datasites: list[str] | None = None,
        *,
        run_id: int | None = 42,
        **kwargs: Any,
    ) -> SyftGrid:
        if "policy" not in kwargs:
            kwargs.setdefault("settings", PLAIN)
        g = SyftGrid(
            APP,
            datasites=list(datasites if datasites is not None else DATA_OWNERS),
            client=self.researcher,
            **kwargs,
        )
        self.grids.append(g)
        if run_id is not None:
            g.set_run(run_id)
        return g

    def folder(self, owner: str) -> Path:
        return (
            self.researcher.datasites
            / owner
            / "app_data"
            / APP
            / "rpc"
            / EP
            / RESEARCHER
        )

    def close(self) -> None:
        self.runner.stop_all()
        for g in self.grids:
            g.close()
            g.transport.close()


@pytest.fixture
def net(syft_root: Path) -> Iterator[Network]:
    n = Network(syft_root, EventsRunner(), make_syft_client(syft_root, RESEARCHER))
    for email in DATA_OWNERS:
        n.serve(email)
    yield n
    n.close()


def train_messages(
    grid: SyftGrid, round_: int, token: str = "", **kw: Any
) -> list[Message]:
    return [
        grid.create_message(
            RecordDict(
                {"config": ConfigRecord({"round": round_, "token": token or str(nid)})}
            ),
            "train",
            nid,
            f"round_{round_}",
            **kw,
        )
        for nid in grid.get_node_ids()
    ]


def message_to(grid: SyftGrid, email: str, **config: Any) -> Message:
    return grid.create_message(
        RecordDict({"config": ConfigRecord(config or {"x": 1})}),
        "train",
        grid.node_id_of(email),
        "g",
    )


def check_reply(grid: SyftGrid, request: Message, reply: Message) -> None:
    """The reply answers exactly this request, from exactly its destination."""
    assert not reply.has_error(), reply.error
    assert reply.metadata.reply_to_message_id == request.metadata.message_id
    assert reply.metadata.src_node_id == request.metadata.dst_node_id
    assert reply.metadata.dst_node_id == 1
    assert reply.metadata.run_id == request.metadata.run_id
    echo = reply.content.config_records["echo"]
    assert echo["owner"] == grid.email_of(request.metadata.dst_node_id)
    assert echo["request_type"] == request.metadata.message_type
    for key, value in request.content.config_records["config"].items():
        assert echo[f"in_{key}"] == value


# -- round trips -----------------------------------------------------------------------


def test_100_round_trips_all_correct(net: Network) -> None:
    grid = net.grid()
    for r in range(100):
        msgs = train_messages(grid, r, token=uuid.uuid4().hex)
        replies = grid.send_and_receive(msgs, timeout=30)
        assert len(replies) == 3
        by_request = {m.metadata.message_id: m for m in msgs}
        assert {rep.metadata.reply_to_message_id for rep in replies} == set(by_request)
        for rep in replies:
            check_reply(grid, by_request[rep.metadata.reply_to_message_id], rep)
    for email in DATA_OWNERS:
        rounds = [
            m.content.config_records["config"]["round"]
            for m in net.logs[email].snapshot()
        ]
        assert rounds == list(range(100))
    # Completed exchanges are cleaned up on both sides.
    wait_until(
        lambda: all(not any(net.folder(e).iterdir()) for e in DATA_OWNERS),
        timeout=5,
        message="exchange folders empty",
    )


def test_default_grid_is_encrypted_end_to_end(syft_root: Path) -> None:
    n = Network(syft_root, EventsRunner(), make_syft_client(syft_root, RESEARCHER))
    try:
        for email in DATA_OWNERS:
            n.serve(
                email, settings=None
            )  # Settings.from_env(): encryption on by default
        seen: list[bytes] = []
        stop = threading.Event()

        def spy() -> None:  # everything that ever sits on disk in the exchange folders
            while not stop.is_set():
                for e in DATA_OWNERS:
                    for p in (
                        n.folder(e).glob("*.request") if n.folder(e).exists() else []
                    ):
                        try:
                            seen.append(p.read_bytes())
                        except OSError:
                            pass
                time.sleep(0.001)

        t = threading.Thread(target=spy)
        t.start()
        grid = SyftGrid(APP, list(DATA_OWNERS), n.researcher)  # no settings, no policy
        n.grids.append(grid)
        grid.set_run(5)
        marker = "very-private-value-" + uuid.uuid4().hex
        msgs = train_messages(grid, 1, token=marker)
        replies = grid.send_and_receive(msgs, timeout=30)
        stop.set()
        t.join()
        assert len(replies) == 3 and not any(r.has_error() for r in replies)
        assert seen, "the spy never saw a request file"
        assert all(marker.encode() not in data for data in seen)
        assert all(b'"encryption":{"alg"' in data for data in seen)
    finally:
        n.close()


class MaxFileSizeMonitor:
    """Records the largest file ever seen under a folder: a polling scan + watchdog."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.max_size = 0
        self.max_path = ""
        self.scans = 0
        self.events = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._observer = Observer()
        outer = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                outer.events += 1
                for p in (event.src_path, getattr(event, "dest_path", "")):
                    if p:
                        outer._record(os.fsdecode(p))

        self._observer.schedule(Handler(), str(root), recursive=True)

    def _record(self, path: str) -> None:
        try:
            size = os.stat(path).st_size
        except OSError:
            return
        with self._lock:
            if size > self.max_size:
                self.max_size, self.max_path = size, path

    def _poll(self) -> None:
        while not self._stop.is_set():
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    self._record(os.path.join(dirpath, name))
            self.scans += 1
            time.sleep(0.0005)

    def __enter__(self) -> MaxFileSizeMonitor:
        self._observer.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._observer.stop()
        self._observer.join(5)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
def test_25_mb_message_crosses_in_chunks_no_file_ever_over_the_limit(
    syft_root: Path, encrypted: bool
) -> None:
    settings = Settings(
        encryption_enabled=encrypted, poll_interval=0.25, chunk_size=4 * MiB
    )
    n = Network(syft_root, EventsRunner(), make_syft_client(syft_root, RESEARCHER))
    try:
        n.serve(DATA_OWNERS[0], settings=settings)
        grid = n.grid([DATA_OWNERS[0]], settings=settings)
        rng = np.random.default_rng(0)
        weights = rng.standard_normal(25 * MiB // 4).astype(np.float32)  # 25 MiB
        msg = grid.create_message(
            RecordDict(
                {"arrays": ArrayRecord([weights]), "config": ConfigRecord({"r": 1})}
            ),
            "train",
            grid.get_node_ids()[0],
            "big",
        )
        with MaxFileSizeMonitor(syft_root / "SyftBox" / "datasites") as mon:
            replies = grid.send_and_receive([msg], timeout=120)
        assert len(replies) == 1
        check_reply(grid, msg, replies[0])
        back = replies[0].content.array_records["arrays"].to_numpy_ndarrays()[0]
        np.testing.assert_array_equal(back, weights)
        assert mon.scans > 10 and mon.events > 0
        # The monitor did see the chunk files (so it was looking) ...
        assert mon.max_size > 3 * MiB, (mon.max_size, mon.max_path)
        # ... and never anything bigger than a chunk, temp files included.
        assert mon.max_size <= 4 * MiB, (mon.max_size, mon.max_path)
    finally:
        n.close()


# -- owners that do not answer ------------------------------------------------------------


def test_silent_owner_times_out_others_are_returned_and_its_request_is_withdrawn(
    net: Network,
) -> None:
    net.prepare_only(SILENT)
    grid = net.grid([*DATA_OWNERS, SILENT])
    msgs = train_messages(grid, 1)
    silent_msg = next(
        m for m in msgs if m.metadata.dst_node_id == grid.node_id_of(SILENT)
    )
    t0 = time.monotonic()
    replies = grid.send_and_receive(msgs, timeout=1.5)
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 4.0
    assert len(replies) == 3
    assert grid.node_id_of(SILENT) not in {r.metadata.src_node_id for r in replies}
    by_request = {m.metadata.message_id: m for m in msgs}
    for rep in replies:
        check_reply(grid, by_request[rep.metadata.reply_to_message_id], rep)
    # The silent owner's request was written, then withdrawn at the timeout.
    folder = net.folder(SILENT)
    assert folder.is_dir()
    assert not list(folder.iterdir()), list(folder.iterdir())
    # A late pull of the withdrawn id returns nothing.
    assert grid.pull_messages([silent_msg.metadata.message_id]) == []


def test_waiting_for_replies_is_reported_to_the_progress_reporter(
    net: Network,
) -> None:
    """Who answered and who is awaited reach ``syft_flwr.progress`` while waiting."""
    from syft_flwr import progress

    seen: list[tuple[int, list[str], list[str]]] = []
    waits: list[progress.WaitHandle] = []

    class Recording(progress.NullReporter):
        def wait(self, what: str, total: int, timeout: float) -> progress.WaitHandle:
            handle = super().wait(what, total, timeout)
            handle.every = 0.2
            handle._on_update = lambda: seen.append(  # type: ignore[method-assign]
                (handle.count, handle.answered, handle.waiting)
            )
            waits.append(handle)
            return handle

    net.prepare_only(SILENT)
    grid = net.grid([*DATA_OWNERS, SILENT])
    with progress.use_reporter(Recording()):
        replies = grid.send_and_receive(train_messages(grid, 1), timeout=1.5)
    assert len(replies) == 3
    assert [(w.what, w.total, w.finished) for w in waits] == [("replies", 4, True)]
    count, answered, waiting = seen[-1]
    assert count == 3 and answered == sorted(DATA_OWNERS) and waiting == [SILENT]


def test_owner_that_never_started_gets_nothing_written_until_it_does(
    net: Network,
) -> None:
    late = "late@example.org"
    net.owner(late)
    grid = net.grid([late])
    msg = message_to(grid, late, x=7)
    out: list[list[Message]] = []
    t = threading.Thread(
        target=lambda: out.append(grid.send_and_receive([msg], timeout=20))
    )
    t.start()
    time.sleep(0.5)
    owner_datasite = net.researcher.datasites / late
    # Nothing was written into a datasite whose owner has no permissions yet.
    assert not list(owner_datasite.rglob("*.request"))
    net.serve(late)
    t.join(20)
    assert not t.is_alive()
    assert len(out[0]) == 1
    check_reply(grid, msg, out[0][0])


def test_owner_that_never_started_times_out_with_nothing_on_disk(net: Network) -> None:
    late = "late@example.org"
    net.owner(late)
    grid = net.grid([DATA_OWNERS[0], late])
    replies = grid.send_and_receive(train_messages(grid, 1), timeout=1.0)
    assert [grid.email_of(r.metadata.src_node_id) for r in replies] == [DATA_OWNERS[0]]
    assert not list((net.researcher.datasites / late).rglob("*.request"))


def test_a_steady_round_costs_the_researcher_no_listing(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rejection-marker check right after writing, no listing to clean up.

    (A request refused by sync is still reported by the later full passes:
    ``test_rejected_request_gives_node_unavailable``.)
    """
    from syft_flwr.transports.syftbox import SyftBoxTransport

    grid = net.grid(settings=PLAIN.with_(poll_interval=30))
    assert len(grid.send_and_receive(train_messages(grid, 0), timeout=30)) == 3
    calls: list[tuple[str, str]] = []
    real_list, real_rejected = SyftBoxTransport.list, SyftBoxTransport.is_rejected

    def spy_list(self: SyftBoxTransport, prefix: str) -> list[str]:
        calls.append(("list", self.identity))
        return real_list(self, prefix)

    def spy_rejected(self: SyftBoxTransport, key: str) -> bool:
        calls.append(("is_rejected", self.identity))
        return real_rejected(self, key)

    monkeypatch.setattr(SyftBoxTransport, "list", spy_list)
    monkeypatch.setattr(SyftBoxTransport, "is_rejected", spy_rejected)
    for r in (1, 2):
        replies = grid.send_and_receive(train_messages(grid, r), timeout=30)
        assert len(replies) == 3 and not any(x.has_error() for x in replies)
    assert [c for c in calls if c[1] == RESEARCHER] == []
    wait_until(
        lambda: all(not any(net.folder(e).iterdir()) for e in DATA_OWNERS),
        timeout=5,
        message="exchange folders empty",
    )


def test_rejected_request_gives_node_unavailable(net: Network) -> None:
    rejected = "strict@example.org"
    net.prepare_only(rejected)
    grid = net.grid([rejected])
    folder = net.folder(rejected)
    stop = threading.Event()

    def sync_client_that_refuses() -> None:
        while not stop.is_set():
            for p in folder.glob("*.request") if folder.exists() else []:
                if ".rejected." not in p.name:
                    os.replace(
                        p, p.with_name(p.name.replace(".request", ".rejected.request"))
                    )
            time.sleep(0.002)

    t = threading.Thread(target=sync_client_that_refuses)
    t.start()
    try:
        msg = message_to(grid, rejected)
        t0 = time.monotonic()
        replies = grid.send_and_receive([msg], timeout=20)
        assert time.monotonic() - t0 < 10
    finally:
        stop.set()
        t.join()
    assert len(replies) == 1
    reply = replies[0]
    assert reply.has_error()
    assert reply.error.code == ErrorCode.NODE_UNAVAILABLE
    assert rejected in reply.error.reason
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id


# -- errors --------------------------------------------------------------------------------


def test_a_raising_client_app_gives_a_flower_error_reply(syft_root: Path) -> None:
    n = Network(syft_root, EventsRunner(), make_syft_client(syft_root, RESEARCHER))
    try:
        n.serve(DATA_OWNERS[0])
        n.serve(DATA_OWNERS[1], fail=True)
        grid = n.grid(list(DATA_OWNERS[:2]))
        msgs = train_messages(grid, 1)
        replies = grid.send_and_receive(msgs, timeout=20)
        assert len(replies) == 2
        by_src = {grid.email_of(r.metadata.src_node_id): r for r in replies}
        assert not by_src[DATA_OWNERS[0]].has_error()
        bad = by_src[DATA_OWNERS[1]]
        assert bad.has_error() and not bad.has_content()
        assert bad.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        assert "RuntimeError" in bad.error.reason
        assert DATA_OWNERS[1] in bad.error.reason
        req = next(
            m for m in msgs if m.metadata.dst_node_id == bad.metadata.src_node_id
        )
        assert bad.metadata.reply_to_message_id == req.metadata.message_id
    finally:
        n.close()


def test_expired_instruction_gives_reply_message_unavailable(net: Network) -> None:
    grid = net.grid([DATA_OWNERS[0]])
    msg = grid.create_message(
        RecordDict({"config": ConfigRecord({"x": 1})}),
        "train",
        grid.node_id_of(DATA_OWNERS[0]),
        "g",
        ttl=0.001,
    )
    time.sleep(0.01)
    replies = grid.send_and_receive([msg], timeout=20)
    assert len(replies) == 1 and replies[0].has_error()
    assert replies[0].error.code == ErrorCode.REPLY_MESSAGE_UNAVAILABLE
    assert net.logs[DATA_OWNERS[0]].snapshot() == []


@pytest.mark.parametrize("bad", ["garbage", "wrong_reply_to"])
def test_unusable_replies_become_error_replies(syft_root: Path, bad: str) -> None:
    n = Network(syft_root, EventsRunner(), make_syft_client(syft_root, RESEARCHER))

    def handler(body: bytes) -> bytes:
        if bad == "garbage":
            return b"not a flower message"
        msg = bytes_to_flower_message(body)
        other = Message(metadata=msg.metadata, content=msg.content)
        other.metadata.__dict__["_message_id"] = "someone-else"
        return flower_message_to_bytes(Message(RecordDict(), reply_to=other))

    try:
        n.serve(DATA_OWNERS[0], handler=handler)
        grid = n.grid([DATA_OWNERS[0]])
        replies = grid.send_and_receive([message_to(grid, DATA_OWNERS[0])], timeout=20)
        assert len(replies) == 1 and replies[0].has_error()
        assert replies[0].error.code == ErrorCode.MESSAGE_UNAVAILABLE
    finally:
        n.close()


def test_node_id_collision_is_refused(
    syft_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ids_module.node_id_for
    # Two possible ids for three datasites: a collision is certain (pigeonhole).
    monkeypatch.setattr(ids_module, "node_id_for", lambda e: 2 + real(e) % 2)
    researcher = make_syft_client(syft_root, RESEARCHER)
    with pytest.raises(NodeIdCollisionError):
        SyftGrid(APP, list(DATA_OWNERS), researcher, settings=PLAIN)


def test_invalid_messages_are_refused(net: Network) -> None:
    grid = net.grid([DATA_OWNERS[0]])
    with pytest.raises(ValueError, match="unknown destination"):
        grid.push_messages([grid.create_message(RecordDict(), "train", 12345, "g")])
    ins = message_to(grid, DATA_OWNERS[0])
    reply = Message(RecordDict(), reply_to=ins)
    with pytest.raises(ValueError):
        grid.push_messages([reply])
    fresh = net.grid([DATA_OWNERS[0]], run_id=None)
    with pytest.raises(RuntimeError, match="set_run"):
        fresh.push_messages([ins])
    with pytest.raises(RuntimeError, match="set_run"):
        _ = fresh.run


# -- Grid API semantics -----------------------------------------------------------------------


def test_get_node_ids_is_deterministic_and_never_0_or_1(net: Network) -> None:
    a = net.grid()
    b = net.grid(list(reversed(DATA_OWNERS)))
    assert a.get_node_ids() == [node_id_for(e) for e in DATA_OWNERS]
    assert sorted(a.get_node_ids()) == sorted(b.get_node_ids())
    assert a.get_node_ids() == a.get_node_ids()
    assert all(isinstance(n, int) and n > 1 for n in a.get_node_ids())
    assert len(set(a.get_node_ids())) == 3
    for email in DATA_OWNERS:
        assert a.email_of(a.node_id_of(email)) == email
    local, domain = DATA_OWNERS[0].split("@")
    assert a.node_id_of(f"{local}@{domain.upper()}") == node_id_for(DATA_OWNERS[0])
    nodes = list(a.get_nodes())  # Flower's concrete helper over get_node_ids
    assert [nd.node_id for nd in nodes] == a.get_node_ids()
    assert a.get_client_email() == RESEARCHER


def test_push_returns_the_flower_message_ids(net: Network) -> None:
    grid = net.grid()
    msgs = train_messages(grid, 1)
    ids = list(grid.push_messages(msgs))
    assert ids == [m.metadata.message_id for m in msgs]
    assert len(set(ids)) == 3 and all(ids)
    for m in msgs:
        assert m.metadata.run_id == 42
        assert m.metadata.src_node_id == 1
    replies = wait_for_replies(grid, ids)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(ids)


def wait_for_replies(
    grid: SyftGrid, ids: list[str], timeout: float = 10
) -> list[Message]:
    got: list[Message] = []
    pending = set(ids)
    deadline = time.monotonic() + timeout
    while pending:
        assert time.monotonic() < deadline, f"no reply for {pending}"
        for r in grid.pull_messages(list(pending)):
            pending.discard(r.metadata.reply_to_message_id)
            got.append(r)
        time.sleep(0.005)
    return got


def test_pull_messages_never_blocks_and_matches_by_reply_to(net: Network) -> None:
    net.prepare_only(SILENT)
    grid = net.grid([*DATA_OWNERS, SILENT])
    silent_id = grid.push_messages([message_to(grid, SILENT)])[0]
    t0 = time.monotonic()
    assert grid.pull_messages([silent_id]) == []
    assert grid.pull_messages([]) == []
    assert grid.pull_messages(["no-such-id"]) == []
    assert time.monotonic() - t0 < 0.2

    msgs = train_messages(grid, 3)[:3]
    ids = list(grid.push_messages(msgs))
    replies = wait_for_replies(grid, [*ids, silent_id][:3])
    assert all(isinstance(r, Message) for r in replies)
    by_request = {m.metadata.message_id: m for m in msgs}
    for r in replies:
        check_reply(grid, by_request[r.metadata.reply_to_message_id], r)
    # A reply is handed out once.
    assert grid.pull_messages(ids) == []
    t0 = time.monotonic()
    assert grid.pull_messages([silent_id]) == []
    assert time.monotonic() - t0 < 0.2
    assert isinstance(grid.pull_messages([silent_id]), list)


def _collect(pull: Callable[[], list[Message]], n: int) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + 10
    while len(got) < n:
        assert time.monotonic() < deadline, f"{len(got)} of {n} replies"
        got.extend(pull())
        time.sleep(0.005)
    return got


def test_pull_messages_takes_flower_next_signature(net: Network) -> None:
    """Flower 1.43: ``pull_messages(reply_to_message_ids=None, *, message_ids=None)``."""
    net.prepare_only(SILENT)
    grid = net.grid([*DATA_OWNERS, SILENT])
    silent_id = grid.push_messages([message_to(grid, SILENT)])[0]

    # None (and no argument at all) means every reply that arrived for this grid.
    first = train_messages(grid, 3)[:2]
    first_ids = set(grid.push_messages(first))
    replies = _collect(grid.pull_messages, 2)
    assert {r.metadata.reply_to_message_id for r in replies} == first_ids
    assert grid.pull_messages(None) == []  # handed out once; the silent one waits

    # The new keyword name works.
    second = train_messages(grid, 3)[:1]
    second_id = grid.push_messages(second)[0]
    got = _collect(lambda: grid.pull_messages(reply_to_message_ids=[second_id]), 1)
    assert [r.metadata.reply_to_message_id for r in got] == [second_id]

    # The old keyword is a deprecated alias that still works.
    third_id = grid.push_messages(train_messages(grid, 3)[:1])[0]
    with pytest.warns(DeprecationWarning, match="reply_to_message_ids"):
        assert grid.pull_messages(message_ids=[silent_id]) == []
    with pytest.warns(DeprecationWarning):
        got = _collect(lambda: grid.pull_messages(message_ids=[third_id]), 1)
    assert [r.metadata.reply_to_message_id for r in got] == [third_id]

    with pytest.raises(TypeError, match="not both"):
        grid.pull_messages([third_id], message_ids=[third_id])


def test_timeout_argument_beats_env(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    net.prepare_only(SILENT)
    grid = net.grid([SILENT], policy=PlaintextPolicy())
    monkeypatch.setenv("SYFT_FLWR_MSG_TIMEOUT", "30")
    t0 = time.monotonic()
    assert grid.send_and_receive([message_to(grid, SILENT)], timeout=0.3) == []
    assert 0.3 <= time.monotonic() - t0 < 2.5


def test_env_timeout_is_read_at_call_time(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    net.prepare_only(SILENT)
    grid = net.grid([SILENT], policy=PlaintextPolicy())  # no explicit settings
    monkeypatch.setenv("SYFT_FLWR_MSG_TIMEOUT", "0.4")  # set after building the grid
    t0 = time.monotonic()
    assert grid.send_and_receive([message_to(grid, SILENT)]) == []
    assert 0.4 <= time.monotonic() - t0 < 2.5
    monkeypatch.setenv("SYFT_FLWR_MSG_TIMEOUT", "0.8")
    t0 = time.monotonic()
    assert grid.send_and_receive([message_to(grid, SILENT)]) == []
    assert 0.8 <= time.monotonic() - t0 < 3.0


def test_default_timeout_is_120_seconds(net: Network) -> None:
    net.prepare_only(SILENT)
    grid = net.grid([SILENT], policy=PlaintextPolicy())
    assert grid._get_timeout(None) == 120.0  # noqa: SLF001
    msg = message_to(grid, SILENT, x=3)
    out: list[list[Message]] = []
    t = threading.Thread(target=lambda: out.append(grid.send_and_receive([msg])))
    t.start()
    t.join(1.5)
    assert t.is_alive(), "send_and_receive gave up long before 120 s"
    net.serve(SILENT)  # the owner comes online: the pending request is answered
    t.join(20)
    assert not t.is_alive()
    assert len(out[0]) == 1
    check_reply(grid, msg, out[0][0])


def test_explicit_settings_timeout_is_used(net: Network) -> None:
    net.prepare_only(SILENT)
    grid = net.grid([SILENT], settings=PLAIN.with_(msg_timeout=0.3))
    t0 = time.monotonic()
    assert grid.send_and_receive([message_to(grid, SILENT)]) == []
    assert time.monotonic() - t0 < 2.5


def test_concurrent_send_and_receive_with_get_node_ids_in_a_loop(net: Network) -> None:
    grid = net.grid()
    errors: list[BaseException] = []
    stop = threading.Event()
    node_id_calls = 0

    def poll_nodes() -> None:
        nonlocal node_id_calls
        expected = grid.get_node_ids()
        while not stop.is_set():
            assert grid.get_node_ids() == expected
            node_id_calls += 1

    def worker(email: str, n: int) -> None:
        try:
            for i in range(n):
                msg = message_to(grid, email, worker=email, i=i)
                replies = grid.send_and_receive([msg], timeout=30)
                assert len(replies) == 1
                check_reply(grid, msg, replies[0])
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    poller = threading.Thread(target=poll_nodes)
    poller.start()
    # Three legacy-style proxies at once, one message each, plus two on the same owner.
    workers = [threading.Thread(target=worker, args=(e, 15)) for e in DATA_OWNERS]
    workers.append(threading.Thread(target=worker, args=(DATA_OWNERS[0], 15)))
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    stop.set()
    poller.join(5)
    assert not errors, errors[0]
    assert all(not w.is_alive() for w in workers)
    assert node_id_calls > 100
    assert len(net.logs[DATA_OWNERS[0]].snapshot()) == 30


def test_reply_on_disk_is_returned_within_half_a_second(net: Network) -> None:
    manual = "manual@example.org"
    net.prepare_only(manual)
    # A 30 s rescan: only the watch can make this fast.
    grid = net.grid([manual], settings=PLAIN.with_(poll_interval=30))
    owner = SyftFlwrRpc(
        net.owner(manual).make_transport(),
        APP,
        settings=PLAIN,
        policy=PlaintextPolicy(),
    )
    try:
        for _ in range(3):
            msg = message_to(grid, manual)
            returned_at: list[float] = []

            def call(
                msg: Message = msg, returned_at: list[float] = returned_at
            ) -> None:
                grid.send_and_receive([msg], timeout=20)
                returned_at.append(time.monotonic())

            t = threading.Thread(target=call)
            t.start()
            key = wait_until(
                lambda: next(iter(owner.pending_request_keys(EP)), None),
                timeout=10,
                interval=0.001,
                message="request on disk",
            )
            inc = owner.read(key)
            request = bytes_to_flower_message(inc.body)
            body = flower_message_to_bytes(Message(RecordDict(), reply_to=request))
            written_at = time.monotonic()
            owner.send_response(inc, body=body)  # chunks + atomic rename of the head
            t.join(20)
            assert returned_at, "send_and_receive did not return"
            latency = returned_at[0] - written_at
            assert latency < 0.5, f"reply took {latency:.3f} s to be noticed"
    finally:
        owner.transport.close()


# -- run, messages, stop signal ------------------------------------------------------------


def test_set_run_accepts_int_and_run_and_run_is_a_copy(net: Network) -> None:
    grid = net.grid(run_id=None)
    grid.set_run(7)
    assert grid.run.run_id == 7
    copy = grid.run
    copy.run_id = 999
    assert grid.run.run_id == 7
    assert grid.run is not grid.run
    assert isinstance(grid.run, Run)
    run = Run.create_empty(8)
    run.fab_id = "flwr/test"
    grid.set_run(run)
    assert grid.run.run_id == 8 and grid.run.fab_id == "flwr/test"
    assert grid.run is not run
    grid.set_run(run_id=9)  # the seed's keyword
    assert grid.run.run_id == 9


@pytest.mark.skipif(TaskIdentity is None, reason="flwr < 1.39 has no TaskIdentity")
def test_create_message_needs_no_task_identity_from_the_caller(net: Network) -> None:
    grid = net.grid(run_id=None)
    grid.set_run(11)
    # Someone (another library, a test) cleared Flower's process-wide identity.
    TaskIdentity._task_id = TaskIdentity._run_id = TaskIdentity._node_id = None  # noqa: SLF001
    msg = grid.create_message(
        RecordDict({"config": ConfigRecord({"a": 1})}),
        "train.custom",
        grid.get_node_ids()[0],
        "g",
        ttl=30,
    )
    md = msg.metadata
    assert (md.run_id, md.src_node_id, md.message_type, md.group_id, md.ttl) == (
        11,
        1,
        "train.custom",
        "g",
        30,
    )
    assert md.dst_node_id == grid.get_node_ids()[0]
    assert md.message_id == "" and md.reply_to_message_id == ""
    replies = grid.send_and_receive([msg], timeout=20)
    check_reply(grid, msg, replies[0])


def test_create_message_uses_this_grids_run(net: Network) -> None:
    a = net.grid(run_id=7)
    net.grid(run_id=8)
    msg = a.create_message(RecordDict(), "train", a.get_node_ids()[0], "g")
    assert msg.metadata.run_id == 7


def test_send_stop_signal(net: Network) -> None:
    grid = net.grid()
    sent = grid.send_stop_signal(group_id="final", reason="Example complete", wait=10)
    assert len(sent) == 3
    assert {m.metadata.dst_node_id for m in sent} == set(grid.get_node_ids())
    for m in sent:
        assert m.metadata.message_type == "system"
        assert m.metadata.group_id == "final"
        cfg = m.content.config_records["config"]
        assert cfg["action"] == "stop" and cfg["reason"] == "Example complete"
    for email in DATA_OWNERS:
        got = wait_until(
            lambda e=email: net.logs[e].snapshot(), message=f"stop at {email}"
        )
        assert [m.metadata.message_type for m in got] == ["system"]
        assert got[0].content.config_records["config"]["action"] == "stop"
        assert got[0].metadata.ttl == pytest.approx(60.0)


def test_send_stop_signal_without_run_and_fire_and_forget(net: Network) -> None:
    grid = net.grid(run_id=None)
    sent = grid.send_stop_signal("final")
    assert len(sent) == 3
    for email in DATA_OWNERS:
        got = wait_until(
            lambda e=email: net.logs[e].snapshot(), message=f"stop at {email}"
        )
        assert got[0].content.config_records["config"]["reason"] == "Training complete"


# -- regressions: bugs this suite found (fixed) ------------------------------------------------


class _SlowRLock:
    """An RLock whose acquisition by one chosen thread is delayed (widens a race window).

    Nothing else changes: any thread may be preempted at exactly this point.
    """

    def __init__(
        self, slow_thread: Callable[[], bool], entered: threading.Event
    ) -> None:
        self._lock = threading.RLock()
        self._slow_thread = slow_thread
        self._entered = entered

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._slow_thread():
            self._entered.set()
            time.sleep(0.3)
        return self._lock.acquire(blocking, timeout)

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def release(self) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:
        return self._lock._is_owned()  # type: ignore[attr-defined]  # noqa: SLF001

    def _release_save(self) -> Any:
        return self._lock._release_save()  # type: ignore[attr-defined]  # noqa: SLF001

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)  # type: ignore[attr-defined]  # noqa: SLF001


def test_first_push_to_a_second_owner_while_a_reply_event_is_dispatched_does_not_deadlock(
    net: Network,
) -> None:
    a, b = DATA_OWNERS[0], DATA_OWNERS[1]
    grid = net.grid([a, b])
    entered = threading.Event()
    # Only the watchdog observer thread (which dispatches events) is slowed down.
    slow = _SlowRLock(
        lambda: isinstance(threading.current_thread(), BaseObserver), entered
    )
    # Every lock the observer thread takes while dispatching: the inbox's (a reply
    # event), the roster's (a heartbeat) and the wake-up condition's.
    grid._inbox._lock = slow  # type: ignore[assignment]  # noqa: SLF001
    grid._roster._lock = slow  # type: ignore[assignment]  # noqa: SLF001
    grid._wake._cv = threading.Condition(slow)  # type: ignore[arg-type]  # noqa: SLF001
    # 1) a request to `a`, whose reply event will be dispatched by the observer thread.
    first = grid.push_messages([message_to(grid, a)])
    assert entered.wait(10), "the reply event of the first owner was not dispatched"
    # 2) while it is being dispatched, the first push to `b` schedules a new watch.
    done = threading.Event()

    def push_b() -> None:
        grid.push_messages([message_to(grid, b)])
        done.set()

    threading.Thread(target=push_b, daemon=True).start()
    deadlocked = not done.wait(3)
    if not deadlocked:
        wait_for_replies(grid, first)
    # On failure the observer thread stays blocked; it is a daemon of a dead grid.
    if deadlocked:
        net.grids.remove(grid)
    assert not deadlocked, "push_messages deadlocked against the watchdog observer"


def test_encryption_mismatch_is_reported_to_the_researcher(syft_root: Path) -> None:
    n = Network(syft_root, EventsRunner(), make_syft_client(syft_root, RESEARCHER))
    try:
        n.serve(
            DATA_OWNERS[0],
            settings=Settings(encryption_enabled=True, poll_interval=0.25),
        )
        grid = n.grid([DATA_OWNERS[0]])  # plaintext researcher, no keys
        replies = grid.send_and_receive([message_to(grid, DATA_OWNERS[0])], timeout=3)
        assert len(replies) == 1 and replies[0].has_error()
        assert "encrypt" in replies[0].error.reason.lower()
    finally:
        n.close()
