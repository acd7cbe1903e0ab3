"""The transport contract, run against every backend.

Add a backend by adding a factory to ``BACKENDS``: it gets pytest's ``tmp_path`` and
returns a :class:`Backend` whose ``writer`` and ``reader`` are two identities that
see the same files (for SyftBox: one shared ``datasites`` folder, i.e. a perfect
sync). Backends that are slow to notice changes (polling) raise ``watch_timeout``.

A test that exposes a known bug of one backend is marked
``@pytest.mark.xfail_backend("name", reason="BUG: ...")`` (strict xfail for that
backend only; the marker is registered in ``tests/conftest.py``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _support import wait_until

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    TransportClosed,
)
from syft_flwr.transports.base import Transport
from syft_flwr.transports.memory import MemoryHub, MemoryTransport
from syft_flwr.transports.syftbox import SyftBoxTransport

WRITER = "ds@example.org"
READER = "do1@example.org"
FOLDER = f"{READER}/app_data/contract/rpc/messages/{WRITER}"


@dataclass
class Backend:
    name: str
    writer: Transport
    reader: Transport
    #: Simulate a write in progress (a temporary file) for ``key``; None if the
    #: backend has no temporary files.
    write_partial: Callable[[str, bytes], None] | None = None
    #: Seconds within which a watch callback must fire.
    watch_timeout: float = 10.0
    #: False for backends that store only keys the writer is a party of, in the
    #: RPC layout (Google Drive: every file lives in its writer's channel folder,
    #: and writing a third party's key is refused with PermissionDenied).
    free_keys: bool = True
    extra_close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        self.writer.close()
        self.reader.close()
        for fn in self.extra_close:
            fn()


def _memory(tmp_path: Path) -> Backend:
    hub = MemoryHub()
    return Backend("memory", MemoryTransport(hub, WRITER), MemoryTransport(hub, READER))


def _syftbox(tmp_path: Path) -> Backend:
    root = tmp_path / "SyftBox" / "datasites"
    writer = SyftBoxTransport(root, WRITER)
    reader = SyftBoxTransport(root, READER)

    def write_partial(key: str, data: bytes) -> None:
        path = writer.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp").write_bytes(data)

    return Backend("syftbox", writer, reader, write_partial=write_partial)


def _gdrive(tmp_path: Path) -> Backend:
    """Google Drive: the real googleapiclient against the loopback Drive server."""
    from syft_flwr.testing.drive_server import FakeDriveServer
    from syft_flwr.transports.gdrive import GDriveTransport

    server = FakeDriveServer().start()
    writer = GDriveTransport(WRITER, lambda: server.service(WRITER), poll_interval=0.5)
    reader = GDriveTransport(READER, lambda: server.service(READER), poll_interval=0.5)
    return Backend(
        "gdrive",
        writer,
        reader,
        watch_timeout=15.0,
        free_keys=False,
        extra_close=[server.stop],
    )


#: name -> factory(tmp_path).
BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": _memory,
    "syftbox": _syftbox,
    "gdrive": _gdrive,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    for marker in request.node.iter_markers("xfail_backend"):
        if marker.args and marker.args[0] == name:
            request.applymarker(
                pytest.mark.xfail(strict=True, reason=marker.kwargs.get("reason", ""))
            )
    b = BACKENDS[name](tmp_path)
    yield b
    b.close()


class Recorder:
    """A watch callback that records keys and lets tests wait for them."""

    def __init__(self, read_with: Transport | None = None) -> None:
        self.keys: list[str] = []
        self.contents: list[tuple[str, bytes | None]] = []
        self._cv = threading.Condition()
        self._read_with = read_with

    def __call__(self, key: str) -> None:
        content = None
        if self._read_with is not None:
            try:
                content = self._read_with.get(key)
            except Exception:  # noqa: BLE001 - deleted meanwhile: just record None
                content = None
        with self._cv:
            self.keys.append(key)
            self.contents.append((key, content))
            self._cv.notify_all()

    def wait_for(self, pred: Callable[[list[str]], bool], timeout: float) -> None:
        with self._cv:
            assert self._cv.wait_for(lambda: pred(self.keys), timeout), (
                f"watch did not fire as expected; saw {self.keys}"
            )

    def wait_key(self, key: str, timeout: float) -> None:
        self.wait_for(lambda keys: key in keys, timeout)

    def seen(self) -> list[str]:
        with self._cv:
            return list(self.keys)


# -- shared folders (one copy for several readers) ----------------------------------

SHARED_BASE = f"{WRITER}/app_data/contract/blobs"


def _shared_folder() -> str:
    return f"{SHARED_BASE}/g{int(time.time()) + 600}-{secrets.token_hex(8)}"


def _chunks(keys: list[str]) -> list[str]:
    return [k for k in keys if k.endswith(".chunk")]  # SyftBox adds permission files


def test_every_backend_can_share(backend: Backend) -> None:
    assert backend.writer.can_share is True


def test_shared_folder_round_trip(backend: Backend) -> None:
    folder = _shared_folder()
    keys = [f"{folder}/b.{i:06d}.chunk" for i in range(3)]
    data = [bytes([i]) * (1000 + i) for i in range(3)]
    backend.writer.share(folder, [READER])
    for key, blob in zip(keys, data, strict=True):
        backend.writer.put(key, blob)
    for key, blob in zip(keys, data, strict=True):
        assert backend.reader.read_limited(key, len(blob)) == blob
    assert _chunks(backend.writer.list(folder)) == keys
    assert _chunks(backend.writer.list(SHARED_BASE)) == keys
    assert _chunks(backend.reader.list(folder)) == keys
    backend.writer.delete_many(_chunks(backend.writer.list(folder)))
    backend.writer.delete_many(backend.writer.list(folder))
    assert backend.writer.list(SHARED_BASE) == []
    for key in keys:
        with pytest.raises(MessageNotFound):
            backend.reader.read_limited(key, 2000)


def test_a_shared_chunk_over_the_limit_is_refused(backend: Backend) -> None:
    from syft_flwr.errors import UnsafeFileError

    folder = _shared_folder()
    backend.writer.share(folder, [READER])
    backend.writer.put(f"{folder}/b.000000.chunk", b"x" * 100)
    with pytest.raises(UnsafeFileError):
        backend.reader.read_limited(f"{folder}/b.000000.chunk", 99)


def test_two_shared_folders_are_independent(backend: Backend) -> None:
    one, two = _shared_folder(), _shared_folder()
    for folder in (one, two):
        backend.writer.share(folder, [READER])
        backend.writer.put(f"{folder}/b.000000.chunk", folder.encode())
    backend.writer.delete_many(backend.writer.list(one))
    assert _chunks(backend.writer.list(SHARED_BASE)) == [f"{two}/b.000000.chunk"]
    assert backend.reader.read_limited(f"{two}/b.000000.chunk", 200) == two.encode()


def test_an_expired_shared_folder_left_empty_is_swept(backend: Backend) -> None:
    from syft_flwr.config import Settings
    from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

    rpc = SyftFlwrRpc(
        backend.writer, "contract", settings=Settings(), policy=PlaintextPolicy()
    )
    # The researcher died after creating the folder, before its first upload.
    gone = f"{SHARED_BASE}/g{int(time.time()) - 5}-{secrets.token_hex(8)}"
    live = _shared_folder()
    for folder in (gone, live):
        backend.writer.share(folder, [READER])
    keeps_folders = backend.name != "memory"  # memory has no folders, only files
    assert (gone in backend.writer.shared_folders(SHARED_BASE)) is keeps_folders
    # The next grid's sweep removes the expired one, folder and all.
    assert rpc.sweep_shared() == (1 if keeps_folders else 0)
    assert gone not in backend.writer.shared_folders(SHARED_BASE)
    assert (live in backend.writer.shared_folders(SHARED_BASE)) is keeps_folders
    rpc.delete_shared(live.rsplit("/", 1)[1])
    assert backend.writer.shared_folders(SHARED_BASE) == []


def test_link_out_gives_a_private_name_or_declines(
    backend: Backend, tmp_path: Path
) -> None:
    key = f"{FOLDER}/m.response.a0.000000.chunk"
    backend.writer.put(key, b"sealed bytes")
    dest = tmp_path / "private" / "kept.chunk"
    dest.parent.mkdir()
    if backend.writer.link_out(key, dest):
        assert dest.read_bytes() == b"sealed bytes"
        backend.writer.delete(key)  # the shared name goes, the private one stays
        assert dest.read_bytes() == b"sealed bytes"
    else:
        # Remote backends keep no local file: the caller writes its own copy.
        assert backend.name == "gdrive" or backend.name == "memory"
        assert not dest.exists()
        assert backend.reader.read_limited(key, 100) == b"sealed bytes"


# -- put / get / exists / delete ---------------------------------------------------


def test_put_get_round_trip_between_identities(backend: Backend) -> None:
    key = f"{FOLDER}/a.request"
    data = bytes(range(256)) * 10
    backend.writer.put(key, data)
    assert backend.writer.get(key) == data
    assert backend.reader.get(key) == data


def test_empty_and_binary_files(backend: Backend) -> None:
    backend.writer.put(f"{FOLDER}/empty", b"")
    backend.writer.put(f"{FOLDER}/bin", b"\x00\xff\x00\r\n\x1a")
    assert backend.reader.get(f"{FOLDER}/empty") == b""
    assert backend.reader.get(f"{FOLDER}/bin") == b"\x00\xff\x00\r\n\x1a"


def test_put_replaces(backend: Backend) -> None:
    key = f"{FOLDER}/a.request"
    backend.writer.put(key, b"first version, longer")
    backend.writer.put(key, b"second")
    assert backend.reader.get(key) == b"second"


def test_put_accepts_memoryview_and_bytearray(backend: Backend) -> None:
    backend.writer.put(f"{FOLDER}/mv", memoryview(b"abcdef")[1:4])  # type: ignore[arg-type]
    backend.writer.put(f"{FOLDER}/ba", bytearray(b"xyz"))  # type: ignore[arg-type]
    assert backend.reader.get(f"{FOLDER}/mv") == b"bcd"
    assert backend.reader.get(f"{FOLDER}/ba") == b"xyz"


def test_get_missing_raises_message_not_found(backend: Backend) -> None:
    with pytest.raises(MessageNotFound) as info:
        backend.reader.get(f"{FOLDER}/nope.request")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(MessageNotFound):
        backend.reader.get(f"{READER}/never/created/folder/x")


def test_read_limited_reads_up_to_the_limit_and_refuses_more(
    backend: Backend,
) -> None:
    from syft_flwr.errors import UnsafeFileError

    key = f"{FOLDER}/limited.request"
    backend.writer.put(key, b"x" * 1000)
    assert backend.reader.read_limited(key, 1000) == b"x" * 1000
    with pytest.raises(UnsafeFileError, match="999"):
        backend.reader.read_limited(key, 999)
    with pytest.raises(MessageNotFound):
        backend.reader.read_limited(f"{FOLDER}/absent.request", 10)


def test_exists(backend: Backend) -> None:
    key = f"{FOLDER}/x.response"
    assert backend.reader.exists(key) is False
    backend.writer.put(key, b"1")
    # Local backends see it at once; a polling backend within its notice time.
    if backend.free_keys:
        assert backend.reader.exists(key) is True
    else:
        wait_until(lambda: backend.reader.exists(key) is True, backend.watch_timeout)
    backend.writer.delete(key)
    assert backend.reader.exists(key) is False


def test_delete_is_idempotent(backend: Backend) -> None:
    key = f"{FOLDER}/x.request"
    backend.writer.put(key, b"1")
    backend.writer.delete(key)
    with pytest.raises(MessageNotFound):
        backend.reader.get(key)
    backend.writer.delete(key)  # already gone: no error
    backend.writer.delete(f"{FOLDER}/never-existed")


def test_delete_many(backend: Backend) -> None:
    keys = [f"{FOLDER}/k{i}" for i in range(5)]
    for k in keys:
        backend.writer.put(k, b"x")
    backend.writer.delete_many(keys[:3] + [f"{FOLDER}/missing"])
    assert backend.reader.list(FOLDER) == keys[3:]


@pytest.mark.parametrize(
    "bad", ["", "/abs/key", "a/../b", "a//b", "./a", "a/./b", "trailing/", "a\\b"]
)
def test_invalid_keys_are_refused(backend: Backend, bad: str) -> None:
    with pytest.raises(ConfigError):
        backend.writer.put(bad, b"x")


# -- list ---------------------------------------------------------------------------


def test_list_is_recursive_sorted_and_respects_the_prefix(backend: Backend) -> None:
    keys = [
        f"{FOLDER}/b.request",
        f"{FOLDER}/a.request",
        f"{FOLDER}/sub/deeper/c.chunk",
        f"{FOLDER}/sub/a",
    ]
    if not backend.free_keys:
        # By design this backend refuses keys the writer is not a party of.
        with pytest.raises(PermissionDenied):
            backend.writer.put(f"{FOLDER}-other/z", b"x")
        return
    for k in keys:
        backend.writer.put(k, b"x")
    # Same string prefix, different folder: never listed under FOLDER.
    backend.writer.put(f"{FOLDER}-other/z", b"x")
    backend.writer.put(f"{READER}/app_data/contract/rpc/messages/x.request", b"x")
    assert backend.reader.list(FOLDER) == sorted(keys)
    assert backend.reader.list(FOLDER + "/") == sorted(keys)
    assert backend.reader.list(f"{FOLDER}/sub") == sorted(keys[2:])
    parent = f"{READER}/app_data/contract/rpc/messages"
    assert set(backend.reader.list(parent)) == {
        *keys,
        f"{FOLDER}-other/z",
        f"{READER}/app_data/contract/rpc/messages/x.request",
    }


def test_list_of_missing_prefix_is_empty(backend: Backend) -> None:
    assert backend.reader.list(f"{READER}/app_data/nothing/here") == []


def test_list_never_lists_temporary_files(backend: Backend) -> None:
    if backend.write_partial is None:
        pytest.skip(f"{backend.name} has no temporary files")
    backend.writer.put(f"{FOLDER}/done.request", b"complete")
    backend.write_partial(f"{FOLDER}/inflight.request", b"half")
    backend.write_partial(f"{FOLDER}/done.request", b"newer, half written")
    assert backend.reader.list(FOLDER) == [f"{FOLDER}/done.request"]
    assert backend.reader.get(f"{FOLDER}/done.request") == b"complete"
    with pytest.raises(MessageNotFound):
        backend.reader.get(f"{FOLDER}/inflight.request")


def test_put_leaves_no_temporary_files(backend: Backend) -> None:
    for i in range(5):
        backend.writer.put(f"{FOLDER}/f{i}", b"x" * 1000)
    if isinstance(backend.writer, SyftBoxTransport):
        names = [p.name for p in backend.writer.path_of(FOLDER).iterdir()]
        assert sorted(names) == [f"f{i}" for i in range(5)]
    assert len(backend.reader.list(FOLDER)) == 5


# -- atomicity ---------------------------------------------------------------------------


def test_put_is_atomic_for_concurrent_readers(backend: Backend) -> None:
    key = f"{FOLDER}/model.chunk"
    size = 2 * 1024 * 1024
    versions = [bytes([v]) * size for v in range(4)]
    backend.writer.put(key, versions[0])
    allowed = set(versions)
    bad: list[int] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                data = backend.reader.get(key)
            except MessageNotFound:
                bad.append(-1)  # the key never disappears during a replace
                continue
            except RemoteServiceError as exc:
                # Drive: a file replaced during each of a read's tries is refused
                # whole ("kept changing"), never returned partial; read again.
                if "kept changing" not in str(exc):
                    bad.append(-2)
                continue
            reads += 1
            if data not in allowed:
                bad.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    try:
        deadline = time.monotonic() + 10
        i = 0
        while (i < 40 or reads < 40) and time.monotonic() < deadline:
            i += 1
            backend.writer.put(key, versions[i % len(versions)])
    finally:
        stop.set()
        t.join(10)
    assert reads >= 10
    assert bad == [], f"reader saw partial or missing files: {bad[:10]}"


# -- watch ---------------------------------------------------------------------------------


def test_watch_fires_for_created_files(backend: Backend) -> None:
    rec = Recorder()
    w = backend.reader.watch(FOLDER, rec)
    key = f"{FOLDER}/new.request"
    backend.writer.put(key, b"hello")
    rec.wait_key(key, backend.watch_timeout)
    assert not w.cancelled
    assert w.prefix.rstrip("/") == FOLDER


def test_watch_fires_for_replaced_files(backend: Backend) -> None:
    key = f"{FOLDER}/x.response"
    backend.writer.put(key, b"v1")
    rec = Recorder(read_with=backend.reader)
    backend.reader.watch(FOLDER, rec)
    backend.writer.put(key, b"v2")
    rec.wait_for(lambda keys: key in keys, backend.watch_timeout)
    backend.writer.put(key, b"v3")
    deadline = time.monotonic() + backend.watch_timeout
    while (key, b"v3") not in rec.contents:
        assert time.monotonic() < deadline, (
            f"no event after the replace: {rec.contents}"
        )
        time.sleep(0.005)


def test_watch_fires_in_subfolders_created_after_the_watch(backend: Backend) -> None:
    parent = f"{READER}/app_data/contract/rpc/messages"
    rec = Recorder()
    backend.reader.watch(parent, rec)
    keys = [f"{parent}/peer{i}@example.org/m{i}.request" for i in range(20)]
    if not backend.free_keys:
        # By design this backend refuses keys the writer is not a party of.
        with pytest.raises(PermissionDenied):
            backend.writer.put(keys[0], b"x")
        return
    for k in keys:
        backend.writer.put(k, b"x")
    rec.wait_for(lambda seen: set(keys) <= set(seen), backend.watch_timeout)


def test_watch_does_not_fire_outside_its_prefix(backend: Backend) -> None:
    rec = Recorder()
    backend.reader.watch(FOLDER, rec)
    sibling = Recorder()
    backend.reader.watch(f"{FOLDER}-other", sibling)
    outside = [
        f"{FOLDER}-other/z.request",  # same string prefix, other folder
        f"{READER}/app_data/contract/rpc/messages/top.request",  # parent folder
        f"{WRITER}/app_data/contract/rpc/messages/{READER}/y.request",
    ]
    if not backend.free_keys:
        # By design this backend refuses keys the writer is not a party of.
        with pytest.raises(PermissionDenied):
            backend.writer.put(outside[0], b"x")
        return
    for k in outside:
        backend.writer.put(k, b"x")
    sibling.wait_key(outside[0], backend.watch_timeout)
    inside = f"{FOLDER}/sentinel.request"
    backend.writer.put(inside, b"x")
    rec.wait_key(inside, backend.watch_timeout)
    assert set(rec.seen()) == {inside}
    assert set(sibling.seen()) == {outside[0]}


def test_cancel_stops_callbacks(backend: Backend) -> None:
    cancelled = Recorder()
    w = backend.reader.watch(FOLDER, cancelled)
    first = f"{FOLDER}/first"
    backend.writer.put(first, b"x")
    cancelled.wait_key(first, backend.watch_timeout)
    w.cancel()
    assert w.cancelled
    control = Recorder()
    backend.reader.watch(FOLDER, control)
    second = f"{FOLDER}/second"
    backend.writer.put(second, b"x")
    control.wait_key(second, backend.watch_timeout)
    assert second not in cancelled.seen()


def test_two_watches_on_one_prefix_both_fire(backend: Backend) -> None:
    a, b = Recorder(), Recorder()
    backend.reader.watch(FOLDER, a)
    backend.reader.watch(FOLDER, b)
    key = f"{FOLDER}/both"
    backend.writer.put(key, b"x")
    a.wait_key(key, backend.watch_timeout)
    b.wait_key(key, backend.watch_timeout)


def test_a_raising_callback_breaks_neither_the_writer_nor_other_watches(
    backend: Backend,
) -> None:
    def boom(key: str) -> None:
        raise RuntimeError("callback bug")

    backend.reader.watch(FOLDER, boom)
    good = Recorder()
    backend.reader.watch(FOLDER, good)
    keys = [f"{FOLDER}/one", f"{FOLDER}/two"]
    for k in keys:
        backend.writer.put(k, b"x")  # must not raise: the write itself succeeded
    good.wait_for(lambda seen: set(keys) <= set(seen), backend.watch_timeout)


# -- close ---------------------------------------------------------------------------------


def test_close_is_idempotent_and_closed_transport_refuses_work(
    backend: Backend,
) -> None:
    t = backend.writer
    t.put(f"{FOLDER}/x", b"1")
    assert t.closed is False
    t.close()
    t.close()
    assert t.closed is True
    for op in (
        lambda: t.put(f"{FOLDER}/y", b"1"),
        lambda: t.get(f"{FOLDER}/x"),
        lambda: t.list(FOLDER),
        lambda: t.delete(f"{FOLDER}/x"),
        lambda: t.watch(FOLDER, lambda k: None),
    ):
        with pytest.raises(TransportClosed):
            op()
    # The other identity is unaffected.
    assert backend.reader.get(f"{FOLDER}/x") == b"1"


def test_context_manager_closes(backend: Backend) -> None:
    with backend.writer as t:
        t.put(f"{FOLDER}/x", b"1")
    assert backend.writer.closed


def test_close_cancels_the_transports_watches(backend: Backend) -> None:
    rec = Recorder()
    w = backend.reader.watch(FOLDER, rec)
    backend.reader.close()
    control = Recorder()
    backend.writer.watch(FOLDER, control)
    key = f"{FOLDER}/after-close"
    backend.writer.put(key, b"x")
    control.wait_key(key, backend.watch_timeout)
    assert rec.seen() == []
    assert w.cancelled


def test_identity_is_lower_cased(backend: Backend) -> None:
    assert backend.writer.identity == WRITER
    assert backend.reader.identity == READER


def test_wait_until_helper_fails_loudly() -> None:
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(lambda: False, timeout=0.05, message="never")


def test_heartbeat_reaches_the_peer_through_its_watch(backend: Backend) -> None:
    import threading

    owner, peer = backend.reader, backend.writer  # do1 serves, ds listens
    owner.prepare("contract", "messages", [WRITER])
    beat = threading.Event()
    peer.watch_heartbeat(READER, "contract", "messages", beat.set)
    owner.beat("contract", "messages", [WRITER], b'{"seq": 0}')
    assert beat.wait(backend.watch_timeout)
    beat.clear()
    owner.beat("contract", "messages", [WRITER], b'{"seq": 1}')  # replaced in place
    assert beat.wait(backend.watch_timeout)
