"""Drive transport: exactly once under lost responses, no reliance on name search,
restarts from saved state, strangers, quota errors, and request budgets.

All against the loopback Drive server (real google-api-python-client). Budgets
are request counts, never timings.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from syft_flwr.errors import PermissionDenied
from syft_flwr.testing.drive_server import FakeDriveServer
from syft_flwr.transports.gdrive import (
    FOLDER_MIME,
    GDriveTransport,
    channel_folder_name,
)

pytestmark = pytest.mark.gdrive

DS = "researcher@example.org"
DO = "owner@example.org"
STRANGER = "mallory@example.net"
APP = "flwr/demo"


def rpc_key(owner: str, peer: str, name: str) -> str:
    return f"{owner}/app_data/{APP}/rpc/messages/{peer}/{name}"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def drive() -> Iterator[FakeDriveServer]:
    # The strict model: the name index lags even for parent-scoped name queries.
    with FakeDriveServer(name_index_delay=3600.0, name_lag_with_parents=True) as s:
        yield s


MakeTransport = Callable[..., GDriveTransport]


@pytest.fixture
def make(drive: FakeDriveServer, tmp_path: Path) -> Iterator[MakeTransport]:
    made: list[GDriveTransport] = []

    def factory(identity: str, **kw: Any) -> GDriveTransport:
        kw.setdefault("sleep", Sleeps())
        kw.setdefault("poll_interval", 0.3)
        kw.setdefault("state_dir", tmp_path / identity)
        t = GDriveTransport(identity, lambda: drive.service(identity), **kw)
        made.append(t)
        return t

    yield factory
    for t in made:
        t.close()


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    event = threading.Event()
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        event.wait(0.02)
    return True


def names_of(drive: FakeDriveServer, email: str) -> list[str]:
    return [f["name"] for f in drive.files_of(email)]


def folders_named(drive: FakeDriveServer, email: str, name: str) -> list[str]:
    return [
        f["id"]
        for f in drive.files_of(email)
        if f["name"] == name and f["mimeType"] == FOLDER_MIME
    ]


# -- lost responses ------------------------------------------------------------------------


def test_lost_create_response_stores_the_file_once(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds, do = make(DS, allowed_peers=[DO]), make(DO, allowed_peers=[DS])
    ds.put(rpc_key(DO, DS, "warmup.request"), b"w")  # folders exist now
    key = rpc_key(DO, DS, "1.request")
    # Served but unanswered, twice: httplib2 re-sends the POST once by itself.
    drive.inject_faults([(0, "lost"), (0, "lost")], methods=["files.create"])
    ds.put(key, b"exactly once")
    assert drive.pending_faults == 0
    assert names_of(drive, DS).count(key) == 1
    assert do.get(key) == b"exactly once"


def test_lost_responses_while_creating_folders_make_one_of_each(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    drive.inject_faults([(0, "lost")] * 6, methods=["files.create"])
    ds = make(DS, allowed_peers=[DO])
    ds.put(rpc_key(DO, DS, "1.request"), b"x")
    assert len(folders_named(drive, DS, "SyftBox")) == 1
    assert len(folders_named(drive, DS, channel_folder_name(DS, DO))) == 1
    assert names_of(drive, DS).count(rpc_key(DO, DS, "1.request")) == 1


def test_lost_update_and_delete_responses(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds, do = make(DS), make(DO)
    key = rpc_key(DO, DS, "1.request")
    ds.put(key, b"first")
    drive.inject_faults([(0, "lost"), (0, "lost")], methods=["files.update"])
    ds.put(key, b"second")
    assert names_of(drive, DS).count(key) == 1
    assert do.get(key) == b"second"
    drive.inject_faults([(0, "lost"), (0, "lost")], methods=["files.delete"])
    ds.delete(key)  # the retry finds it gone (404): done, no error
    assert key not in names_of(drive, DS)
    assert not do.exists(key)


# -- search lag and restarts -------------------------------------------------------------------


def test_get_right_after_put_while_the_name_index_lags(make: MakeTransport) -> None:
    ds, do = make(DS), make(DO)
    for i in range(3):
        key = rpc_key(DO, DS, f"{i}.request")
        ds.put(key, f"body {i}".encode())
        assert do.get(key) == f"body {i}".encode()
        assert do.exists(key)
    assert do.list(rpc_key(DO, DS, "")[:-1]) == [
        rpc_key(DO, DS, f"{i}.request") for i in range(3)
    ]


@pytest.mark.parametrize("with_state", [True, False])
def test_restarts_keep_one_root_and_one_folder_per_channel(
    make: MakeTransport, drive: FakeDriveServer, tmp_path: Path, with_state: bool
) -> None:
    state = tmp_path / "ds-state" if with_state else None
    for i in range(3):
        ds = make(DS, state_dir=state)
        ds.put(rpc_key(DO, DS, f"{i}.request"), b"x")
        ds.close()
    assert len(folders_named(drive, DS, "SyftBox")) == 1
    assert len(folders_named(drive, DS, channel_folder_name(DS, DO))) == 1


def test_restart_resumes_the_feed_without_listing(
    make: MakeTransport, drive: FakeDriveServer, tmp_path: Path
) -> None:
    do = make(DO)
    ds = make(DS)
    ds.put(rpc_key(DO, DS, "before.request"), b"1")
    assert do.get(rpc_key(DO, DS, "before.request")) == b"1"
    do.close()
    saved = json.loads(next((tmp_path / DO).glob("*.json")).read_text())
    assert saved["page_token"] and saved["root_id"] and saved["channels"]
    ds.put(rpc_key(DO, DS, "while-down.request"), b"2")  # the owner is down
    drive.reset_counters()
    again = make(DO)
    seen: list[str] = []
    again.watch(DO, seen.append)
    assert wait_until(lambda: rpc_key(DO, DS, "while-down.request") in seen)
    assert again.get(rpc_key(DO, DS, "before.request")) == b"1"
    calls = [name for name, user, _ in drive.request_log if user == DO]
    # Found its folders by id and learned the new file from the feed: no
    # search, no listing, no discovery.
    assert "files.list" not in calls, calls
    assert calls.count("changes.list") >= 1


def test_duplicates_left_by_older_versions_are_merged(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    svc = drive.service(DS)

    def folder(name: str, parent: str | None = None) -> str:
        body: dict[str, Any] = {"name": name, "mimeType": FOLDER_MIME}
        if parent:
            body["parents"] = [parent]
        return svc.files().create(body=body, fields="id").execute()["id"]

    def upload(name: str, parent: str, data: bytes) -> None:
        from googleapiclient.http import MediaInMemoryUpload

        svc.files().create(
            body={"name": name, "parents": [parent]},
            media_body=MediaInMemoryUpload(data),
        ).execute()

    name = channel_folder_name(DS, DO)
    roots = [folder("SyftBox"), folder("SyftBox")]
    first, second = folder(name, roots[0]), folder(name, roots[1])
    dup = rpc_key(DO, DS, "dup.request")
    upload(dup, first, b"old copy")
    upload(dup, first, b"new copy")
    upload(rpc_key(DO, DS, "other.request"), second, b"moved")
    ds = make(DS)
    do = make(DO)
    ds.prepare(APP, "messages", [DO])
    assert folders_named(drive, DS, "SyftBox") == [roots[0]]
    assert folders_named(drive, DS, name) == [first]
    assert names_of(drive, DS).count(dup) == 1
    assert do.get(dup) == b"new copy"
    assert do.get(rpc_key(DO, DS, "other.request")) == b"moved"


# -- allowed peers ------------------------------------------------------------------------------


def test_a_stranger_is_neither_read_nor_shared_with_nor_answered(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do = make(DO, allowed_peers=[DS])
    stranger = make(STRANGER)
    stranger.put(rpc_key(DO, STRANGER, "evil.request"), b"run me")
    ds = make(DS, allowed_peers=[DO])
    ds.put(rpc_key(DO, DS, "good.request"), b"hello")
    do.prepare(APP, "messages", [DS])
    requests = [k for k in do.list(DO) if k.endswith(".request")]
    assert requests == [rpc_key(DO, DS, "good.request")]
    assert not do.exists(rpc_key(DO, STRANGER, "evil.request"))
    with pytest.raises(PermissionDenied):
        do.put(rpc_key(DO, STRANGER, "evil.response"), b"plaintext reply")
    grants = drive.grants_of(DO)
    assert grants == {(DS, "reader")}  # least privilege, and nobody else
    assert not [n for n in names_of(drive, DO) if STRANGER in n and "evil" in n]


def test_a_file_written_into_my_channel_by_someone_else_is_ignored(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds, do = make(DS), make(DO)
    ds.put(rpc_key(DO, DS, "1.request"), b"genuine")
    channel = folders_named(drive, DS, channel_folder_name(DS, DO))[0]
    from googleapiclient.errors import HttpError
    from googleapiclient.http import MediaInMemoryUpload

    # The reader only has read access: it cannot plant files in my channel.
    with pytest.raises(HttpError) as info:
        drive.service(DO).files().create(
            body={"name": rpc_key(DO, DS, "2.request"), "parents": [channel]},
            media_body=MediaInMemoryUpload(b"forged"),
        ).execute()
    assert info.value.status_code == 403
    # Even with write access (as older versions granted), a file someone else
    # puts into my channel is never taken for mine.
    drive.service(DS).permissions().create(
        fileId=channel,
        body={"type": "user", "role": "writer", "emailAddress": STRANGER},
        sendNotificationEmail=False,
    ).execute()
    forged = rpc_key(DO, DS, "2.request")
    drive.service(STRANGER).files().create(
        body={"name": forged, "parents": [channel]},
        media_body=MediaInMemoryUpload(b"forged"),
    ).execute()
    assert do.list(DO) == [rpc_key(DO, DS, "1.request")]
    assert not do.exists(forged)
    seen: list[str] = []
    do.watch(DO, seen.append)
    drive.service(STRANGER).files().create(
        body={"name": rpc_key(DO, DS, "3.request"), "parents": [channel]},
        media_body=MediaInMemoryUpload(b"forged"),
    ).execute()
    ds.put(rpc_key(DO, DS, "4.request"), b"genuine")
    assert wait_until(lambda: rpc_key(DO, DS, "4.request") in seen)
    assert rpc_key(DO, DS, "3.request") not in seen


# -- quota errors --------------------------------------------------------------------------------


def test_rate_limits_are_retried_with_growing_backoff(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    sleeps = Sleeps()
    ds = make(DS, sleep=sleeps)
    ds.put(rpc_key(DO, DS, "warmup.request"), b"w")
    drive.inject_faults(
        [(403, "rateLimitExceeded"), (429, None), (403, "userRateLimitExceeded")],
        methods=["files.create"],
    )
    ds.put(rpc_key(DO, DS, "1.request"), b"x")
    assert drive.pending_faults == 0
    assert len(sleeps.delays) == 3
    # Equal jitter: retry n waits in [2^(n-1) / 2, 2^(n-1)] seconds.
    for n, delay in enumerate(sleeps.delays, start=1):
        assert 2 ** (n - 1) / 2 <= delay <= 2 ** (n - 1)
    assert names_of(drive, DS).count(rpc_key(DO, DS, "1.request")) == 1


# -- request budgets ------------------------------------------------------------------------------


def test_idle_cost_does_not_grow_with_the_number_of_peers(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    owners = [f"do{i}@example.org" for i in range(6)]
    ds = make(DS, poll_interval=0.05, allowed_peers=owners)
    for email in owners:
        peer = make(email)
        peer.prepare(APP, "messages", [DS])
        ds.put(rpc_key(email, DS, "1.request"), b"x")
    ds.watch(DS, lambda _k: None)
    assert wait_until(lambda: ds.poll_count >= 3)
    drive.reset_counters()
    polls = ds.poll_count
    assert wait_until(lambda: ds.poll_count >= polls + 10)
    polls = ds.poll_count - polls
    calls = [name for name, user, _ in drive.request_log if user == DS]
    # One changes.list per poll for all six data owners (+1: a poll in flight).
    assert set(calls) == {"changes.list"}
    assert polls <= len(calls) <= polls + 1


def test_one_exchange_fits_its_request_budget(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds, do = make(DS), make(DO)
    ds.put(rpc_key(DO, DS, "warmup.request"), b"w")
    do.put(rpc_key(DO, DS, "warmup.response"), b"w")
    assert ds.get(rpc_key(DO, DS, "warmup.response")) == b"w"
    drive.reset_counters()
    request, response = rpc_key(DO, DS, "1.request"), rpc_key(DO, DS, "1.response")
    ds.put(request, b"q")
    assert do.get(request) == b"q"
    assert not do.exists(response)  # mine: from the index
    do.put(response, b"a")
    assert ds.get(response) == b"a"
    ds.delete(request)
    ds.list(rpc_key(DO, DS, "")[:-1])
    do.delete(response)
    by_user: dict[str, list[str]] = {DS: [], DO: []}
    for name, user, _ in drive.request_log:
        by_user.setdefault(user or "?", []).append(name)
    # Per side: 1 create + 1 download + 1 delete, and at most 2 shared feed
    # polls (+1 generateIds per 50 creates); no search, no listing.
    for user in (DS, DO):
        calls = by_user[user]
        assert "files.list" not in calls, calls
        assert len(calls) <= 6, calls


def test_rechecking_missing_replies_costs_no_extra_requests(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds, do = make(DS), make(DO)
    ds.put(rpc_key(DO, DS, "1.request"), b"q")
    assert ds.get(rpc_key(DO, DS, "1.request")) == b"q"
    do.prepare(APP, "messages", [DS])
    assert wait_until(lambda: ds.is_prepared(DO, APP, "messages"))
    drive.reset_counters()
    keys = [rpc_key(DO, DS, f"{i}.response") for i in range(50)]
    for key in keys:  # a grid's first check of 50 pending replies
        assert not ds.exists(key)
    first = [name for name, user, _ in drive.request_log if user == DS]
    assert set(first) == {"changes.list"} and len(first) <= 50
    ds.watch(DS, lambda _k: None)  # the poller runs between two checks
    polls = ds.poll_count
    assert wait_until(lambda: ds.poll_count > polls)
    drive.reset_counters()
    for key in keys:  # the re-check: covered by the poller's polls
        assert not ds.exists(key)
    calls = [name for name, user, _ in drive.request_log if user == DS]
    assert set(calls) <= {"changes.list"}
    assert len(calls) <= 2, calls  # the poller's own ticks meanwhile


def test_state_file_is_private_and_a_broken_one_means_a_first_start(
    make: MakeTransport, drive: FakeDriveServer, tmp_path: Path
) -> None:
    ds = make(DS)
    ds.put(rpc_key(DO, DS, "1.request"), b"x")
    ds.close()
    (state,) = (tmp_path / DS).glob("*.json")
    assert state.stat().st_mode & 0o777 == 0o600
    assert not list((tmp_path / DS).glob(".token-*"))  # no temp file left
    state.write_text("{ half written")
    again = make(DS)
    again.put(rpc_key(DO, DS, "2.request"), b"y")
    assert len(folders_named(drive, DS, "SyftBox")) == 1
    assert len(folders_named(drive, DS, channel_folder_name(DS, DO))) == 1
    assert sorted(n for n in names_of(drive, DS) if n.endswith(".request")) == [
        rpc_key(DO, DS, "1.request"),
        rpc_key(DO, DS, "2.request"),
    ]
    assert json.loads(state.read_text())["root_id"]
