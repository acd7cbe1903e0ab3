"""SyftBox specifics: key <-> path, permission files, rejection markers, temp files."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syft_flwr.errors import MessageNotFound, PermissionDenied, TransportError
from syft_flwr.transports._syftbox_write import TMP_DIR
from syft_flwr.transports.syftbox import (
    PERM_FILE_GO,
    PERM_FILE_PY,
    SYFTBOX_MAX_FILE_SIZE,
    SyftBoxTransport,
)
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
APP = "flwr/diabetes"

#: The exact permission files (format spec: docs of Go SyftBox ACLs and SyftBox 0.4.0).
GO_PERMS = """\
terminal: true
rules:
- pattern: rpc.schema.json
  access:
    admin: []
    write: []
    read: ['*']
- pattern: '*/{{.UserEmail}}/*'
  access:
    admin: []
    write: [USER]
    read: [USER]
"""
PY_PERMS = """\
- path: '*/{useremail}/*'
  user: '*'
  permissions: [read, create, write]
- path: rpc.schema.json
  user: '*'
  permissions: [read]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "SyftBox" / "datasites"


@pytest.fixture
def do(root: Path) -> Iterator[SyftBoxTransport]:
    t = SyftBoxTransport(root, DO)
    yield t
    t.close()


@pytest.fixture
def ds(root: Path) -> Iterator[SyftBoxTransport]:
    t = SyftBoxTransport(root, DS)
    yield t
    t.close()


def test_keys_map_to_files_under_datasites(root: Path, ds: SyftBoxTransport) -> None:
    key = f"{DO}/app_data/{APP}/rpc/messages/{DS}/x.request"
    ds.put(key, b"hello")
    path = (
        root
        / DO
        / "app_data"
        / "flwr"
        / "diabetes"
        / "rpc"
        / "messages"
        / DS
        / "x.request"
    )
    assert path.read_bytes() == b"hello"
    assert ds.path_of(key) == path.resolve()
    assert ds.key_of(path) == key
    assert ds.key_of(root.parent / "elsewhere") is None
    assert root.exists()


def test_identity_and_limits(root: Path) -> None:
    t = SyftBoxTransport(root, "  ds@Example.ORG ")
    try:
        assert t.identity == DS
        assert t.name == "syftbox"
        assert t.max_file_size == SYFTBOX_MAX_FILE_SIZE == 10_000_000
    finally:
        t.close()


def test_put_error_is_a_transport_error_with_cause(
    root: Path, ds: SyftBoxTransport
) -> None:
    blocker = root / DO / "app_data"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder should be")
    with pytest.raises(TransportError) as info:
        ds.put(f"{DO}/app_data/x/rpc/m/{DS}/a.request", b"x")
    assert isinstance(info.value.__cause__, OSError)
    assert not list(blocker.parent.glob("*.tmp"))
    assert not list((root / TMP_DIR).iterdir())  # the temp file is gone too


def test_get_of_a_folder_is_not_found(ds: SyftBoxTransport) -> None:
    ds.put(f"{DO}/a/b/c", b"x")
    with pytest.raises(MessageNotFound):
        ds.get(f"{DO}/a/b")
    ds.delete(f"{DO}/a/b")  # a folder: ignored, not an error
    assert ds.get(f"{DO}/a/b/c") == b"x"


def test_put_writes_through_a_temp_file(
    monkeypatch: pytest.MonkeyPatch, ds: SyftBoxTransport
) -> None:
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    key = f"{DO}/app_data/x/rpc/m/{DS}/a.request"
    ds.put(key, b"first")  # makes the folder (a retried rename)
    seen.clear()
    ds.put(key, b"data")
    assert len(seen) == 1
    src, dst = seen[0]
    # Written whole in the unwatched temp folder, then renamed into place.
    assert src.endswith(".tmp") and Path(src).parent == ds.root / TMP_DIR
    assert Path(dst) == ds.path_of(key)


def test_writes_show_no_rename_inside_a_watched_folder(
    root: Path, ds: SyftBoxTransport
) -> None:
    """Nothing a put does inside a watched folder makes watchdog wait.

    A rename inside a watched folder is an IN_MOVED_FROM that watchdog holds
    for 0.5 s to pair (issue 29's stalled rounds). A put must show up there as
    the final file only: no temp name, no move out of the folder.
    """
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    folder = ds.path_of(f"{DO}/app_data/{APP}/rpc/messages/{DS}")
    folder.mkdir(parents=True)
    keys = [f"{DO}/app_data/{APP}/rpc/messages/{DS}/m{i}.request" for i in range(20)]
    events: list[FileSystemEvent] = []
    arrived = threading.Condition()

    class Record(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            with arrived:
                events.append(event)
                arrived.notify_all()

    def finals() -> set[str]:
        return {os.fsdecode(e.dest_path or e.src_path) for e in events}

    obs = Observer()
    obs.schedule(Record(), str(folder), recursive=True)
    obs.start()
    try:
        for key in keys + keys:  # new files, then each one replaced
            ds.put(key, b"payload")
        wanted = {str(ds.path_of(k)) for k in keys}
        with arrived:  # every final file seen: any temp event came before it
            assert arrived.wait_for(lambda: wanted <= finals(), timeout=10)
    finally:
        obs.stop()
        obs.join(5)
    paths = [os.fsdecode(p) for e in events for p in (e.src_path, e.dest_path) if p]
    assert not [p for p in paths if p.endswith(".tmp")]
    assert not [e for e in events if e.event_type in ("moved", "deleted")]
    assert all(ds.get(k) == b"payload" for k in keys)
    assert not list(folder.iterdir())[0].name.endswith(".tmp")
    assert not list((root / TMP_DIR).iterdir())


def test_temp_folder_is_ignored_by_both_sync_clients() -> None:
    # SyftBox 0.4.0 ignores "/.syft*" at the datasites root; Go ignores "*.tmp".
    assert TMP_DIR.startswith(".syft") and TMP_DIR.endswith(".tmp")
    assert "/" not in TMP_DIR


def test_a_planted_link_as_temp_folder_is_never_written_through(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir(parents=True)
    (root / TMP_DIR).symlink_to(outside, target_is_directory=True)
    t = SyftBoxTransport(root, DS)
    try:
        key = f"{DO}/app_data/x/rpc/m/{DS}/a.request"
        t.put(key, b"data")
        assert t.get(key) == b"data"
        assert not list(outside.iterdir())  # nothing went where the link points
        assert not list(t.path_of(key).parent.glob("*.tmp"))  # next to it, renamed
    finally:
        t.close()


def test_temp_files_left_by_a_crash_are_removed_after_a_day(root: Path) -> None:
    tmp = root / TMP_DIR
    tmp.mkdir(parents=True)
    old, fresh = tmp / "a.request.00.tmp", tmp / "b.request.00.tmp"
    old.write_bytes(b"left by a crash")
    fresh.write_bytes(b"another party writing now")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    SyftBoxTransport(root, DS).close()
    assert not old.exists()
    assert fresh.exists()


def test_watch_ignores_temp_files(root: Path, do: SyftBoxTransport) -> None:
    folder = f"{DO}/app_data/{APP}/rpc/messages/{DS}"
    seen: list[str] = []
    done = threading.Event()

    def cb(key: str) -> None:
        seen.append(key)
        if key.endswith("sentinel"):
            done.set()

    do.watch(folder, cb)
    (do.path_of(folder) / "x.request.abcd1234.tmp").write_bytes(b"partial")
    do.put(f"{folder}/sentinel", b"x")
    assert done.wait(10)
    assert all(not k.endswith(".tmp") for k in seen)
    assert f"{folder}/sentinel" in seen


def test_watch_gets_every_kind_of_write_and_no_reads(
    root: Path, do: SyftBoxTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OS is asked for writes only: reads, listings and deletes never reach Python.

    Every way a file arrives still fires the callback: an atomic write into a
    folder made after the watch (a new peer), a file written in place in
    pieces (the Python SyftBox client), and a file moved in.
    """
    import syft_flwr.transports.syftbox as syftbox_module

    types: list[str] = []
    real = syftbox_module._Handler.on_any_event

    def spy(self: object, event: object) -> None:
        types.append(event.event_type)  # type: ignore[attr-defined]
        real(self, event)  # type: ignore[arg-type]

    monkeypatch.setattr(syftbox_module._Handler, "on_any_event", spy)
    prefix = f"{DO}/app_data/{APP}/rpc/messages"
    seen: list[str] = []
    arrived = threading.Condition()

    def cb(key: str) -> None:
        with arrived:
            seen.append(key)
            arrived.notify_all()

    def wait_for(key: str) -> None:
        with arrived:
            assert arrived.wait_for(lambda: key in seen, timeout=10), (key, seen)

    do.watch(prefix, cb)
    new_peer = f"{prefix}/new@example.org"
    do.put(f"{new_peer}/a.request", b"atomic")  # folder made by this write
    wait_for(f"{new_peer}/a.request")
    with open(do.path_of(f"{new_peer}/b.request"), "wb") as f:  # in place
        f.write(b"part 1, ")
        f.flush()
        f.write(b"part 2")
    wait_for(f"{new_peer}/b.request")
    outside = root / "outside.bin"
    outside.write_bytes(b"moved")
    os.rename(outside, do.path_of(f"{new_peer}/c.request"))
    wait_for(f"{new_peer}/c.request")
    # Reads, listings and a delete, then one write to know they were all seen.
    with arrived:
        types.clear()
    for _ in range(5):
        do.read_limited(f"{new_peer}/a.request", 100)
        do.get(f"{new_peer}/b.request")
        do.list(prefix)
    do.delete(f"{new_peer}/c.request")
    do.put(f"{new_peer}/sentinel", b"x")
    wait_for(f"{new_peer}/sentinel")
    assert types, "the sentinel's events reached the handler"
    assert not {"opened", "closed_no_write", "deleted"} & set(types), types


# -- permission files ------------------------------------------------------------------


def _rpc_dir(root: Path, owner: str = DO) -> Path:
    return root / owner / "app_data" / "flwr" / "diabetes" / "rpc"


def test_prepare_writes_both_permission_formats_exactly(
    root: Path, do: SyftBoxTransport
) -> None:
    assert do.is_prepared(DO, APP, "messages") is False
    do.prepare(APP, "messages", [DS])
    rpc = _rpc_dir(root)
    assert PERM_FILE_GO == "syft.pub.yaml" and PERM_FILE_PY == "syftperm.yaml"
    assert (rpc / "syft.pub.yaml").read_text() == GO_PERMS
    assert (rpc / "syftperm.yaml").read_text() == PY_PERMS
    assert (rpc / "messages").is_dir()
    assert do.is_prepared(DO, APP, "messages") is True
    # A researcher looking at its copy of the data owner's datasite sees the same.
    ds = SyftBoxTransport(root, DS)
    try:
        assert ds.is_prepared(DO, APP, "messages") is True
        assert ds.is_prepared("do2@example.org", APP, "messages") is False
    finally:
        ds.close()


def test_permission_yaml_is_valid_and_says_what_it_means(
    root: Path, do: SyftBoxTransport
) -> None:
    yaml = pytest.importorskip("yaml")
    do.prepare(APP, "messages", [DS])
    rpc = _rpc_dir(root)
    go = yaml.safe_load((rpc / "syft.pub.yaml").read_text())
    assert go["terminal"] is True
    rule = next(r for r in go["rules"] if "UserEmail" in r["pattern"])
    assert rule["pattern"] == "*/{{.UserEmail}}/*"
    assert rule["access"]["write"] == ["USER"] and rule["access"]["read"] == ["USER"]
    py = yaml.safe_load((rpc / "syftperm.yaml").read_text())
    grant = next(r for r in py if "{useremail}" in r["path"])
    assert grant == {
        "path": "*/{useremail}/*",
        "user": "*",
        "permissions": ["read", "create", "write"],
    }
    # "**" must not precede {useremail} for SyftBox 0.4.0.
    assert "**" not in grant["path"]


def test_prepare_rewrites_only_on_change(root: Path, do: SyftBoxTransport) -> None:
    do.prepare(APP, "messages", [DS])
    rpc = _rpc_dir(root)
    before = {n: os.stat(rpc / n) for n in ("syft.pub.yaml", "syftperm.yaml")}
    # Make any rewrite observable even on coarse-mtime filesystems.
    for n in before:
        os.utime(rpc / n, ns=(1_000_000_000, 1_000_000_000))
    do.prepare(APP, "messages", [DS])
    do.prepare(APP, "other_endpoint", [DS])
    for n, st in before.items():
        now = os.stat(rpc / n)
        assert now.st_mtime_ns == 1_000_000_000, f"{n} was rewritten"
        assert now.st_ino == st.st_ino
    assert (rpc / "other_endpoint").is_dir()
    # A changed file is put back.
    (rpc / "syftperm.yaml").write_text(
        "- path: '**'\n  user: '*'\n  permissions: [admin]\n"
    )
    do.prepare(APP, "messages", [DS])
    assert (rpc / "syftperm.yaml").read_text() == PY_PERMS
    assert os.stat(rpc / "syft.pub.yaml").st_mtime_ns == 1_000_000_000


def test_prepare_publishes_the_rpc_schema_once_per_endpoint(
    root: Path, do: SyftBoxTransport
) -> None:
    import json

    rpc = _rpc_dir(root)
    do.prepare(APP, "messages", [DS])
    schema = rpc / "rpc.schema.json"
    assert set(json.loads(schema.read_text())) == {"messages"}
    os.utime(schema, ns=(1_000_000_000, 1_000_000_000))
    do.prepare(APP, "messages", [DS])
    assert os.stat(schema).st_mtime_ns == 1_000_000_000  # unchanged: not rewritten
    do.prepare(APP, "stats", [DS])
    assert set(json.loads(schema.read_text())) == {"messages", "stats"}
    assert do.is_prepared(DO, APP, "stats") and not do.is_prepared(DO, APP, "other")


def test_prepare_only_touches_own_datasite(root: Path, do: SyftBoxTransport) -> None:
    do.prepare(APP, "messages", [DS])
    # (the temp folder is no datasite: both sync clients ignore it)
    assert sorted(p.name for p in root.iterdir() if p.name != TMP_DIR) == [DO]


# -- rejection markers -----------------------------------------------------------------

MID = "0b9f4c2e-1f1e-4bb5-9d36-1f6c3a7d2e10"
FOLDER = f"{DO}/app_data/{APP}/rpc/messages/{DS}"


@pytest.mark.parametrize(
    "marker",
    [
        f"{MID}.syftrejected.request",  # Python SyftBox 0.4.0
        f"{MID}.rejected.request",  # Go SyftBox
        f"{MID}.rejected.20260101120000.request",  # Go, rotated marker
    ],
)
def test_rejection_markers_are_detected(
    root: Path, ds: SyftBoxTransport, marker: str
) -> None:
    key = f"{FOLDER}/{MID}.request"
    ds.put(key, b"{}")
    os.replace(ds.path_of(key), ds.path_of(f"{FOLDER}/{marker}"))
    assert ds.is_rejected(key) is True
    # The response of the same id is not the rejected file.
    assert ds.is_rejected(f"{FOLDER}/{MID}.response") is False
    # ...and through the rpc layer the researcher gets PermissionDenied.
    rpc = SyftFlwrRpc(ds, APP, policy=PlaintextPolicy())
    with pytest.raises(PermissionDenied) as info:
        rpc.response_for(DO, "messages", MID)
    assert DO in str(info.value)
    assert isinstance(info.value, PermissionError)


@pytest.mark.parametrize(
    "name",
    [
        f"{MID}.request",  # the request itself
        f"other-{MID}.rejected.request",  # another message
        f"{MID}.rejected.response",  # a rejected response, not the request
        f"{MID}.request.000000.chunk",
        f"{MID}.rejected.2026.request",  # not a Go timestamp
        f"{MID}x.rejected.request",  # id prefix only
        f"{MID}.conflict.request",
    ],
)
def test_other_files_are_not_rejections(ds: SyftBoxTransport, name: str) -> None:
    ds.put(f"{FOLDER}/{name}", b"{}")
    assert ds.is_rejected(f"{FOLDER}/{MID}.request") is False


def test_no_folder_is_no_rejection(ds: SyftBoxTransport) -> None:
    assert ds.is_rejected(f"{DO}/app_data/none/rpc/m/{DS}/{MID}.request") is False
    rpc = SyftFlwrRpc(ds, APP, policy=PlaintextPolicy())
    assert rpc.response_for(DO, "messages", MID) is None


# -- known bugs ------------------------------------------------------------------------


class _SlowLock:
    """A Lock whose acquisition by the watchdog observer thread is delayed.

    It only widens a race window (any thread may be preempted right there); the
    locking itself is unchanged.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entered = threading.Event()

    def __enter__(self) -> bool:
        from watchdog.observers.api import BaseObserver

        if isinstance(threading.current_thread(), BaseObserver):
            self.entered.set()
            time.sleep(0.3)
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_adding_a_watch_while_an_event_is_dispatched_does_not_deadlock(
    root: Path,
) -> None:
    t = SyftBoxTransport(root, DO)
    first = f"{DO}/app_data/{APP}/rpc/messages/{DS}"
    second = f"{DO}/app_data/{APP}/rpc/stats/{DS}"
    seen: list[str] = []
    t.watch(first, seen.append)
    slow = _SlowLock()
    t._lock = slow  # type: ignore[assignment]  # noqa: SLF001
    t.put(f"{first}/x.request", b"x")  # its event is dispatched by the observer thread
    assert slow.entered.wait(10), "the event was not dispatched"
    added = threading.Event()

    def add_watch() -> None:
        t.watch(second, seen.append)
        added.set()

    threading.Thread(target=add_watch, daemon=True).start()
    deadlocked = not added.wait(3)
    if not deadlocked:  # on deadlock the observer stays blocked (a daemon thread)
        t.close()
    assert not deadlocked, "watch() deadlocked against the watchdog observer"


def test_watchdog_shutdown_chatter_is_silenced(caplog: pytest.LogCaptureFixture):
    import logging

    import syft_flwr.transports.syftbox  # noqa: F401 - installs the filter

    log = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.DEBUG, logger="watchdog.observers.inotify"):
        log.debug("InotifyEmitter.queue_events() called when the thread is inactive")
        log.debug("a real inotify problem")
    assert [r.getMessage() for r in caplog.records] == ["a real inotify problem"]


@pytest.mark.parametrize("proc_fd", [True, False], ids=["proc-fd", "realpath"])
def test_read_limited_refuses_a_folder_link_out_of_the_datasites(
    root: Path,
    tmp_path: Path,
    ds: SyftBoxTransport,
    proc_fd: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import syft_flwr.transports.syftbox as sb
    from syft_flwr.errors import UnsafeFileError

    if not proc_fd:
        monkeypatch.setattr(sb, "_PROC_FD", None)
    elif sb._PROC_FD is None:
        pytest.skip("no /proc/self/fd here")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.request").write_bytes(b"secret")
    inside = root / DO / "app_data" / "a" / "rpc" / "ep"
    inside.mkdir(parents=True)
    (inside / "eve@example.org").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeFileError, match="link out of the datasites"):
        ds.read_limited(f"{DO}/app_data/a/rpc/ep/eve@example.org/x.request", 100)
    # A link that stays inside the datasites, and a plain file, are read.
    (inside / "real").mkdir()
    (inside / "real" / "y.request").write_bytes(b"fine")
    (inside / "alias").symlink_to(inside / "real", target_is_directory=True)
    assert ds.read_limited(f"{DO}/app_data/a/rpc/ep/alias/y.request", 100) == b"fine"
    assert ds.read_limited(f"{DO}/app_data/a/rpc/ep/real/y.request", 100) == b"fine"


def test_link_out_never_follows_a_planted_link(
    root: Path, do: SyftBoxTransport, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not yours")
    key = f"{DO}/app_data/x/rpc/messages/{DS}/m.response.a0.000000.chunk"
    path = do.path_of(key)
    path.parent.mkdir(parents=True)
    path.symlink_to(secret)
    dest = tmp_path / "kept.chunk"
    assert do.link_out(key, dest) is False
    assert not dest.exists() and secret.read_bytes() == b"not yours"


def test_link_out_is_a_hard_link_that_outlives_the_shared_name(
    do: SyftBoxTransport, tmp_path: Path
) -> None:
    key = f"{DO}/app_data/x/rpc/messages/{DS}/m.response.a0.000000.chunk"
    do.put(key, b"sealed")
    dest = tmp_path / "kept.chunk"
    assert do.link_out(key, dest) is True
    assert os.stat(dest).st_ino == os.stat(do.path_of(key)).st_ino
    do.delete(key)
    assert dest.read_bytes() == b"sealed"
    # a second link to an existing name is declined, never overwritten
    do.put(key, b"other")
    assert do.link_out(key, dest) is False and dest.read_bytes() == b"sealed"
