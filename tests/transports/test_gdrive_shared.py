"""Drive shared blob folders: one upload for several readers, and nobody else.

A researcher's shared folder ``<ds>/app_data/<app>/blobs/<group>`` is one Drive
folder it owns, with a ``reader`` permission per data owner. All against the
loopback Drive server through the real google-api-python-client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import wait_until

from syft_flwr.errors import ConfigError, MessageNotFound, PermissionDenied
from syft_flwr.testing.drive_server import FakeDriveServer
from syft_flwr.transports.gdrive import FOLDER_MIME, GDriveTransport
from syft_flwr.transports.gdrive._layout import (
    parse_channel_folder_name,
    parse_shared_folder_key,
    parse_shared_folder_name,
    shared_folder_name,
    shared_folder_of,
)

pytestmark = pytest.mark.gdrive

DS = "re_searcher+lab@example.org"
DO1, DO2, DO3 = "do1@example.org", "do2@example.org", "do3@example.org"
EVE = "eve@example.net"
APP = "flwr/toy"
BASE = f"{DS}/app_data/{APP}/blobs"


def group_folder(tag: str = "0123456789abcdef") -> str:
    return f"{BASE}/g{int(time.time()) + 600}-{tag}"


MakeTransport = Callable[..., GDriveTransport]


@pytest.fixture
def drive() -> Iterator[FakeDriveServer]:
    with FakeDriveServer() as server:
        yield server


@pytest.fixture
def make(drive: FakeDriveServer) -> Iterator[MakeTransport]:
    made: list[GDriveTransport] = []

    def factory(identity: str, **kw: Any) -> GDriveTransport:
        kw.setdefault("sleep", lambda _s: None)
        kw.setdefault("poll_interval", 0.3)
        server = kw.pop("service", drive)  # another server, for some tests
        t = GDriveTransport(identity, lambda: server.service(identity), **kw)
        made.append(t)
        return t

    yield factory
    for t in made:
        t.close()


def shared_folders(drive: FakeDriveServer, email: str) -> list[dict[str, Any]]:
    return [
        f
        for f in drive.files_of(email)
        if f["mimeType"] == FOLDER_MIME and parse_shared_folder_name(f["name"])
    ]


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "app", "group"),
    [
        ("ds@x.org", "flwr/toy", "g1700000000-0123456789abcdef"),
        ("Ann_Lee+FL@Example.org", "a#b%c/d", "g1-x"),
        ("o'brien@example.io", "app", "G.1_2-3"),
    ],
)
def test_shared_folder_names_round_trip(owner: str, app: str, group: str) -> None:
    name = shared_folder_name(owner, app, group)
    key = f"{owner.lower()}/app_data/{app}/blobs/{group}"
    assert parse_shared_folder_name(name) == (owner.lower(), key)
    assert parse_shared_folder_key(key) == (owner.lower(), app, group)
    assert shared_folder_of(f"{key}/abc.000001.chunk") == key
    assert parse_channel_folder_name(name) is None  # never taken for a channel


@pytest.mark.parametrize(
    "name",
    [
        "syft_flwr#v1#ds@x.org#shared#flwr/toy#g1-x#",  # extra part
        "syft_flwr#v1#DS@x.org#shared#flwr/toy#g1-x",  # not lower-cased
        "syft_flwr#v1#ds@x.org#Shared#flwr/toy#g1-x",
        "syft_flwr#v1#ds@x.org#shared#flwr/toy#..",
        "syft_flwr#v1#ds@x.org#shared#flwr/toy#g/1",
        "syft_flwr#v1#ds@x.org#shared##g1-x",  # no app
        "syft_flwr#v1#dsx.org#shared#flwr/toy#g1-x",  # no email
        "syft_flwr#v2#ds@x.org#shared#flwr/toy#g1-x",
        "syft_flwr#v1#ds@x.org#to#do@y.org",  # a channel
    ],
)
def test_near_miss_shared_folder_names_are_rejected(name: str) -> None:
    assert parse_shared_folder_name(name) is None


@pytest.mark.parametrize(
    "key",
    [
        f"{BASE}/g1-x",  # the folder itself, not a file in it
        f"{BASE}/g1-x/sub/file.chunk",  # nested
        f"{DS}/app_data/{APP}/rpc/messages/{DO1}/1.request",
        f"{DS}/public/did.json",
        f"{DS}/app_data/blobs/g1-x/f.chunk",  # no app
    ],
)
def test_keys_outside_a_shared_folder_are_not_shared_keys(key: str) -> None:
    assert shared_folder_of(key) is None


# -- share, put, read, list, delete ------------------------------------------------------------


def test_one_upload_is_read_by_every_reader_and_deleted_with_its_folder(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds = make(DS)
    readers = [make(DO1), make(DO2)]
    for r in readers:  # running data owners: the share arrives in their feed
        r.watch(f"{r.identity}/app_data", lambda _k: None)
    ds.prepare(APP, "messages", [DO1, DO2])
    for r in readers:  # their one-time listing of the researcher's channels
        wait_until(lambda r=r: r.is_prepared(DS, APP, "messages"))
        # Its public channel too (shared last by prepare): met later, it would
        # be listed inside the window this test counts.
        wait_until(lambda r=r: len(r._catalog.incoming(DS)) == 2)
    folder = group_folder()
    big = bytes(range(256)) * 8192  # 2 MiB
    keys = [f"{folder}/b1.000000.chunk", f"{folder}/b1.000001.chunk"]
    drive.reset_counters()
    ds.share(folder, [DO1, DO2])
    ds.put(keys[0], big)
    ds.put(keys[1], b"tail")
    # One folder, one reader permission each, one upload per chunk.
    counts = drive.counters
    assert counts.get("files.create", 0) == 3
    assert counts.get("permissions.create", 0) == 2
    assert drive.requests_by(DS) <= 6  # + at most one files.generateIds
    (folder_meta,) = shared_folders(drive, DS)
    assert folder_meta["name"] == shared_folder_name(DS, APP, folder.rsplit("/")[-1])
    assert drive.grants_of(DS) >= {(DO1, "reader"), (DO2, "reader")}

    def fed(r: GDriveTransport) -> bool:  # the share and both files, from the feed
        cid = r._catalog.shared_id(folder, DS)
        return cid is not None and {e.key for e in r._catalog.entries_of(cid)} == set(
            keys
        )

    # Wait for the files too, not only the folder: a poll can land between the
    # share and the uploads, and a read then would list the folder (the
    # designed fallback), which is not what this test measures.
    for r in readers:  # the share reaches each reader's feed (its watch polls)
        wait_until(lambda r=r: fed(r))
    for r in readers:
        assert r.read_limited(keys[0], len(big)) == big
        assert r.read_limited(keys[1], 4) == b"tail"
    # Readers learn of the folder and its files from their changes feed: no
    # search, no listing; one files.get per chunk download.
    reads = [n for n, u, _ in drive.request_log if u in (DO1, DO2)]
    assert "files.list" not in reads
    assert reads.count("files.get") == 2 * 2
    for r in readers:
        assert r.exists(keys[1])
        assert r.list(folder) == keys
    assert ds.list(BASE) == keys
    drive.reset_counters()
    ds.delete_many(ds.list(folder))
    # The folder goes at once with its files: one files.delete (+ the list's poll).
    assert drive.count("files.delete") == 1
    assert drive.requests_by(DS) <= 2
    assert not shared_folders(drive, DS)
    assert ds.list(BASE) == []
    for r in readers:
        wait_until(lambda r=r: not r.list(folder))
        with pytest.raises(MessageNotFound):
            r.read_limited(keys[1], 4)


def test_a_data_owner_started_after_the_share_finds_the_folder(
    make: MakeTransport,
) -> None:
    ds = make(DS)
    folder = group_folder()
    ds.share(folder, [DO1])
    ds.put(f"{folder}/b.000000.chunk", b"model")
    late = make(DO1)  # first start: the folder is in its sharedWithMe listing
    assert late.read_limited(f"{folder}/b.000000.chunk", 5) == b"model"


def test_read_limited_refuses_a_shared_chunk_over_the_limit(
    make: MakeTransport,
) -> None:
    from syft_flwr.errors import UnsafeFileError

    ds, do = make(DS), make(DO1)
    folder = group_folder()
    ds.share(folder, [DO1])
    ds.put(f"{folder}/b.000000.chunk", b"x" * 100)
    with pytest.raises(UnsafeFileError):
        do.read_limited(f"{folder}/b.000000.chunk", 99)


def test_deleting_some_files_keeps_the_folder(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds, do = make(DS), make(DO1)
    folder = group_folder()
    ds.share(folder, [DO1])
    a, b = f"{folder}/a.000000.chunk", f"{folder}/b.000000.chunk"
    ds.put(a, b"a")
    ds.put(b, b"b")
    ds.delete(a)
    assert ds.list(folder) == [b]
    assert len(shared_folders(drive, DS)) == 1
    assert do.read_limited(b, 1) == b"b"
    ds.delete(b)  # the last file: the folder goes with it
    assert not shared_folders(drive, DS)
    ds.delete(b)  # idempotent
    ds.delete_many([a, b])


def test_shared_folders_survive_a_restart(
    make: MakeTransport, drive: FakeDriveServer, tmp_path: Path
) -> None:
    folder = group_folder()
    key = f"{folder}/b.000000.chunk"
    first = make(DS, state_dir=tmp_path)
    first.share(folder, [DO1])
    first.put(key, b"v1")
    first.close()
    for state in (tmp_path, None):  # from the saved state, and a first start
        again = make(DS, state_dir=state)
        assert again.list(folder) == [key]
        assert again.get(key) == b"v1"
        again.close()
    last = make(DS, state_dir=tmp_path)
    last.put(key, b"v2")  # replaced in place: still one folder, one file
    assert len(shared_folders(drive, DS)) == 1
    assert make(DO1).read_limited(key, 2) == b"v2"
    last.delete_many(last.list(folder))
    assert not shared_folders(drive, DS)


def test_shared_keys_are_refused_outside_my_datasite_and_layout(
    make: MakeTransport,
) -> None:
    ds, do = make(DS, allowed_peers=[DO1]), make(DO1)
    folder = group_folder()
    with pytest.raises(PermissionDenied):
        do.share(folder, [DO2])  # DS's folder
    with pytest.raises(PermissionDenied):
        do.put(f"{folder}/b.000000.chunk", b"x")
    with pytest.raises(ConfigError):
        ds.share(f"{DS}/app_data/{APP}/rpc", [DO1])
    with pytest.raises(PermissionDenied):
        ds.share(folder, [DO1, EVE])  # not an allowed peer
    do.delete(f"{folder}/b.000000.chunk")  # not mine: silently nothing


# -- the permission boundary -----------------------------------------------------------------


def test_a_data_owner_not_named_cannot_read_the_shared_folder(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    from googleapiclient.errors import HttpError

    ds = make(DS)
    do1, do3 = make(DO1), make(DO3)
    ds.prepare(APP, "messages", [DO1, DO3])  # both serve the researcher
    do3.prepare(APP, "messages", [DS])
    folder = group_folder()
    key = f"{folder}/b.000000.chunk"
    ds.share(folder, [DO1])
    ds.put(key, b"secret model")
    assert do1.read_limited(key, 100) == b"secret model"
    with pytest.raises(MessageNotFound):
        do3.read_limited(key, 100)
    assert not do3.exists(key)
    assert do3.list(BASE) == []
    # Drive itself refuses: by id, neither the folder nor the file is visible.
    (meta,) = shared_folders(drive, DS)
    file_id = next(f["id"] for f in drive.files_of(DS) if f["name"] == key)
    for fid in (meta["id"], file_id):
        with pytest.raises(HttpError) as info:
            drive.service(DO3).files().get_media(fileId=fid).execute()
        assert info.value.status_code in (403, 404)
    # Only DO1 got a permission on the shared folder.
    perms = (
        drive.service(DS)
        .permissions()
        .list(fileId=meta["id"], fields="permissions(emailAddress,role)")
        .execute()["permissions"]
    )
    assert sorted((p.get("emailAddress"), p["role"]) for p in perms) == [
        (DO1, "reader"),
        (DS, "owner"),
    ]


def _plant(drive: FakeDriveServer, folder: str, key: str, victim: str) -> str:
    """EVE makes a folder named like DS's shared folder, with a file under ``key``."""
    from googleapiclient.http import MediaInMemoryUpload

    eve = drive.service(EVE)
    owner, app, group = parse_shared_folder_key(folder) or ("", "", "")
    planted = (
        eve.files()
        .create(
            body={
                "name": shared_folder_name(owner, app, group),
                "mimeType": FOLDER_MIME,
            },
            fields="id",
        )
        .execute()["id"]
    )
    eve.files().create(
        body={"name": key, "parents": [planted]},
        media_body=MediaInMemoryUpload(b"poisoned model"),
    ).execute()
    eve.permissions().create(
        fileId=planted,
        body={"type": "user", "role": "reader", "emailAddress": victim},
        sendNotificationEmail=False,
    ).execute()
    return str(planted)


@pytest.mark.parametrize("started", [True, False])
def test_a_planted_folder_with_the_same_name_is_ignored(
    make: MakeTransport, drive: FakeDriveServer, started: bool
) -> None:
    folder = group_folder()
    key = f"{folder}/b.000000.chunk"
    ds = make(DS)
    do = make(DO1) if started else None
    if do is not None:
        do.watch(f"{DO1}/app_data", lambda _k: None)  # the feed sees the plant
    planted = _plant(drive, folder, key, DO1)
    do = do or make(DO1)  # else: the plant is in its first sharedWithMe listing
    with pytest.raises(MessageNotFound):
        do.read_limited(key, 100)
    assert do.list(BASE) == []
    ds.share(folder, [DO1])
    ds.put(key, b"genuine model")

    def genuine() -> bool:  # the watcher's poller reports the share shortly
        try:
            return do.read_limited(key, 100) == b"genuine model"
        except MessageNotFound:
            return False

    wait_until(genuine)
    assert do.list(BASE) == [key]
    # The name + owner search finds the genuine folder, never the plant.
    fresh = make(DO1)
    real = fresh._shared.search(folder)
    assert real is not None and real != planted
    assert fresh.read_limited(key, 100) == b"genuine model"


def test_the_name_search_is_the_fallback_and_is_rate_limited(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds, do = make(DS), make(DO1)
    folder = group_folder()
    key = f"{folder}/b.000000.chunk"
    assert do.list(BASE) == []  # first start done before the share
    ds.share(folder, [DO1])
    ds.put(key, b"m")
    # Pretend the feed never reported the folder: only the search can find it.
    do._feed._apply_change = lambda change: False  # type: ignore[method-assign]
    drive.reset_counters()
    assert do.read_limited(key, 1) == b"m"
    assert drive.count("files.list") == 2  # the search, then the folder's listing
    other = f"{BASE}/g{int(time.time()) + 600}-fedcba9876543210/b.000000.chunk"
    for _ in range(3):
        with pytest.raises(MessageNotFound):
            do.read_limited(other, 1)
    assert drive.count("files.list") == 3  # one search for the missing folder


def test_a_failed_share_or_first_upload_leaves_no_folder(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    from syft_flwr.errors import RemoteServiceError

    ds = make(DS, max_retries=0)
    ds.prepare(APP, "messages", [DO1, DO2])
    drive.inject_faults([(500, None)], methods=["permissions.create"])
    with pytest.raises(RemoteServiceError):
        ds.share(group_folder(), [DO1, DO2])
    assert not shared_folders(drive, DS)
    assert ds.list(BASE) == []
    # Shared, but the first upload fails: the empty folder goes too (the grid
    # then sends a copy per request, and an empty folder is never swept).
    folder = group_folder()
    ds.share(folder, [DO1])
    drive.inject_faults([(500, None)], methods=["files.create"])
    with pytest.raises(RemoteServiceError):
        ds.put(f"{folder}/b.000000.chunk", b"model")
    assert not shared_folders(drive, DS)
    # Once a chunk is stored, a failed upload keeps the folder (listed, swept).
    ds.share(folder, [DO1])
    ds.put(f"{folder}/b.000000.chunk", b"model")
    drive.inject_faults([(500, None)], methods=["files.create"])
    with pytest.raises(RemoteServiceError):
        ds.put(f"{folder}/b.000001.chunk", b"model")
    assert ds.list(BASE) == [f"{folder}/b.000000.chunk"]


def test_nothing_relies_on_name_search_while_the_name_index_lags(
    make: MakeTransport,
) -> None:
    with FakeDriveServer(name_index_delay=3600.0, name_lag_with_parents=True) as lag:

        def on(email: str) -> GDriveTransport:
            return make(email, service=lag)

        ds, running = on(DS), on(DO1)
        running.watch(f"{DO1}/app_data", lambda _k: None)
        folder = group_folder()
        key = f"{folder}/b.000000.chunk"
        ds.share(folder, [DO1, DO2])
        ds.put(key, b"model")
        assert running.read_limited(key, 5) == b"model"  # from the feed
        assert on(DO2).read_limited(key, 5) == b"model"  # first start: sharedWithMe
        ds.delete_many(ds.list(folder))
        assert ds.list(BASE) == []


def test_a_folder_left_empty_by_a_crash_is_deleted_by_the_next_run(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    from syft_flwr.config import Settings
    from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

    ds = make(DS)
    expired = f"{BASE}/g{int(time.time()) - 5}-00000000deadbeef"
    ds.share(expired, [DO1])  # created; the researcher dies before uploading
    assert len(shared_folders(drive, DS)) == 1
    ds.close()
    again = make(DS)  # the next run: an empty folder holds no file to list
    assert again.list(BASE) == [] and again.shared_folders(BASE) == [expired]
    rpc = SyftFlwrRpc(again, APP, settings=Settings(), policy=PlaintextPolicy())
    assert rpc.sweep_shared() == 1
    assert shared_folders(drive, DS) == []  # gone from Drive, permissions too
    assert again.shared_folders(BASE) == []
