"""GDriveTransport against the loopback Drive server, with two or three real users."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    TransportClosed,
)
from syft_flwr.testing.drive_server import FakeDriveServer
from syft_flwr.transports.gdrive import (
    FOLDER_MIME,
    GDriveTransport,
    channel_folder_name,
    escape_query_value,
    key_parties,
    parse_channel_folder_name,
)

pytestmark = pytest.mark.gdrive

# Emails chosen to break naive schemes: '_', '+', '.', upper case, a quote.
ANN = "Ann_Lee+FL@Example.org"
ann = ANN.lower()
BOB = "bob.smith@example.com"
CAROL = "carol@example.net"
DAN = "o'brien@example.io"
APP = "flwr/diabetes"  # app names may contain '/'


def rpc_key(
    owner: str, peer: str, name: str, app: str = APP, endpoint: str = "messages"
) -> str:
    return f"{owner.lower()}/app_data/{app}/rpc/{endpoint}/{peer.lower()}/{name}"


class SleepRecorder:
    """Injected backoff sleep: records delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def drive() -> Iterator[FakeDriveServer]:
    with FakeDriveServer() as server:
        yield server


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


MakeTransport = Callable[..., GDriveTransport]


@pytest.fixture
def make(drive: FakeDriveServer, sleeps: SleepRecorder) -> Iterator[MakeTransport]:
    made: list[GDriveTransport] = []

    def factory(identity: str, **kw: Any) -> GDriveTransport:
        kw.setdefault("sleep", sleeps)
        kw.setdefault("poll_interval", 0.3)
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


# -- pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("ann_lee+fl@example.org", "bob.smith@example.com"),
        ("Upper.Case@Example.COM", "x@y.z"),
        ("o'brien@example.io", "a%b#to#c@weird.org"),
        ("self@example.org", "self@example.org"),
    ],
)
def test_channel_names_round_trip(writer: str, reader: str) -> None:
    name = channel_folder_name(writer, reader)
    assert name.startswith("syft_flwr#v1#")
    assert name.count("#") == 4  # '#' inside emails is escaped
    assert parse_channel_folder_name(name) == (writer.lower(), reader.lower())


@pytest.mark.parametrize(
    "name",
    [
        "syft_flwr#v1#a@x.org#to#b@y.org#extra",
        "syft_flwr#v1#A@x.org#to#b@y.org",  # not lower case: not ours
        "syft_flwr#v2#a@x.org#to#b@y.org",
        "syft_flwr#v1#a@x.org#from#b@y.org",
        "syft_flwr#v1#nobody#to#b@y.org",
        "syft_outbox_inbox_a@x.org_to_b@y.org",
    ],
)
def test_channel_name_parser_rejects_near_misses(name: str) -> None:
    assert parse_channel_folder_name(name) is None


def test_key_parties_and_query_escaping() -> None:
    assert key_parties(rpc_key(ANN, BOB, "1.request", app="a/rpc/b")) == (ann, BOB)
    assert key_parties(f"{ann}/private/notes.txt") == (ann, ann)
    with pytest.raises(ConfigError):
        key_parties("../escape")
    assert escape_query_value("o'brien\\x") == "o\\'brien\\\\x"


def test_constructor_validates_arguments(drive: FakeDriveServer) -> None:
    with pytest.raises(ConfigError):
        GDriveTransport(BOB, lambda: drive.service(BOB), chunk_size=1000)
    with pytest.raises(ConfigError):
        GDriveTransport("not-an-email", lambda: drive.service(BOB))


# -- round trips ---------------------------------------------------------------------------


def test_request_response_round_trip(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do, ds = make(ANN), make(BOB)
    request = rpc_key(ANN, BOB, "42.request")
    response = rpc_key(ANN, BOB, "42.response")
    ds.put(request, b"train please")  # the researcher writes into ds -> do
    assert do.get(request) == b"train please"
    do.put(response, b"weights")  # the data owner answers in do -> ds
    assert ds.get(response) == b"weights"
    prefix = f"{ann}/app_data/{APP}/rpc/messages"
    assert do.list(prefix) == [request, response]
    assert ds.list(prefix) == [request, response]
    assert ds.list(f"{ann}/app_data/other") == []
    # Each file lives in its writer's channel folder, named by its full key.
    assert {f["name"] for f in drive.files_of(BOB)} >= {
        "SyftBox",
        channel_folder_name(BOB, ANN),
        request,
    }
    assert response in {f["name"] for f in drive.files_of(ANN)}


def test_put_replaces_content_in_place(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do, ds = make(ANN), make(BOB)
    key = rpc_key(ANN, BOB, "state.bin")
    ds.put(key, b"v1")
    assert do.get(key) == b"v1"
    ds.put(key, b"version two")
    assert do.get(key) == b"version two"
    assert [f["name"] for f in drive.files_of(BOB)].count(key) == 1
    assert drive.count("files.update") == 1


def test_self_channel_and_private_keys(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    me, other = make(ANN), make(BOB)
    own = rpc_key(ANN, ANN, "loop.request")
    private = f"{ann}/private/notes.txt"
    me.put(own, b"to myself")
    me.put(private, b"secret")
    assert me.get(own) == b"to myself"
    assert me.get(private) == b"secret"
    assert me.list(ann) == [own, private]
    assert other.list(ann) == []
    with pytest.raises(MessageNotFound):
        other.get(private)
    folder = next(
        f for f in drive.files_of(ANN) if f["name"] == channel_folder_name(ANN, ANN)
    )
    perms = drive.service(ANN).permissions().list(fileId=folder["id"]).execute()
    assert [p["role"] for p in perms["permissions"]] == ["owner"]  # never shared


def test_keys_of_other_parties_are_refused(make: MakeTransport) -> None:
    carol = make(CAROL)
    key = rpc_key(ANN, BOB, "x.request")
    with pytest.raises(PermissionDenied):
        carol.put(key, b"x")
    with pytest.raises(MessageNotFound):
        carol.get(key)
    assert carol.exists(key) is False
    carol.delete(key)  # nothing to do, no error


def test_missing_key_raises_message_not_found(make: MakeTransport) -> None:
    do, ds = make(ANN), make(BOB)
    ds.put(rpc_key(ANN, BOB, "a.request"), b"a")
    with pytest.raises(MessageNotFound):
        do.get(rpc_key(ANN, BOB, "b.request"))
    assert do.exists(rpc_key(ANN, BOB, "a.request"))
    assert not do.exists(rpc_key(ANN, BOB, "b.request"))


def test_quote_in_email_is_escaped_in_queries(make: MakeTransport) -> None:
    dan, ds = make(DAN), make(BOB)
    key = rpc_key(DAN, BOB, "q.request")
    ds.put(key, b"hi dan")
    assert dan.get(key) == b"hi dan"
    assert dan.list(DAN) == [key]


def test_large_body_goes_through_resumable_upload(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do, ds = make(ANN), make(BOB)
    key = rpc_key(ANN, BOB, "model.bin")
    body = os.urandom(1024) * (25 * 1024)  # 25 MiB
    started = time.perf_counter()
    ds.put(key, body)
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    assert do.get(key) == body
    get_s = time.perf_counter() - started
    # 8 MiB chunks: 25 MiB -> 4 PUTs to the session; 4 ranged GETs to download.
    assert drive.count("upload.put") == 4
    assert put_s < 20 and get_s < 20
    small = rpc_key(ANN, BOB, "small.bin")
    ds.put(small, b"x" * 1000)
    assert drive.count("upload.put") == 4  # small bodies: one multipart request


def test_downloads_are_chunked(make: MakeTransport, drive: FakeDriveServer) -> None:
    do = make(ANN, chunk_size=256 * 1024)
    ds = make(BOB)
    key = rpc_key(ANN, BOB, "m.bin")
    body = bytes(range(256)) * 4096  # 1 MiB
    ds.put(key, body)
    before = drive.count("files.get")
    assert do.get(key) == body
    assert drive.count("files.get") - before >= 4


def test_concurrent_puts_from_threads(make: MakeTransport) -> None:
    do, ds = make(ANN), make(BOB)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(8):
                ds.put(rpc_key(ANN, BOB, f"t{n}-{i}.request"), f"{n}-{i}".encode())
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(do.list(ann)) == 32
    assert do.get(rpc_key(ANN, BOB, "t3-7.request")) == b"3-7"


# -- ownership and visibility ------------------------------------------------------------------


def test_only_the_writer_can_delete(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do, ds = make(ANN), make(BOB)
    key = rpc_key(ANN, BOB, "7.request")
    ds.put(key, b"req")
    do.delete(key)  # the data owner does not own it: a documented no-op
    assert ds.get(key) == b"req"
    assert key in {f["name"] for f in drive.files_of(BOB)}
    ds.delete(key)
    assert key not in {f["name"] for f in drive.files_of(BOB)}
    with pytest.raises(MessageNotFound):
        do.get(key)
    assert not do.exists(key)  # the index entry is verified, not trusted
    ds.delete(key)  # idempotent


def test_delete_many_uses_batches(make: MakeTransport, drive: FakeDriveServer) -> None:
    ds = make(BOB)
    keys = [rpc_key(ANN, BOB, f"{i}.request") for i in range(5)]
    for key in keys:
        ds.put(key, b"x")
    ds.delete_many([*keys, rpc_key(ANN, BOB, "never-written")])
    assert drive.count("batch") == 1
    assert not any(f["name"] in keys for f in drive.files_of(BOB))
    assert ds.list(ann) == []


def test_third_user_sees_nothing(make: MakeTransport, drive: FakeDriveServer) -> None:
    do, ds, carol = make(ANN), make(BOB), make(CAROL)
    key = rpc_key(ANN, BOB, "secret.request")
    ds.put(key, b"for ann only")
    assert do.get(key) == b"for ann only"
    assert carol.list(ann) == []
    assert carol.list(BOB) == []
    listed = drive.service(CAROL).files().list(fields="files(name)").execute()
    assert all(f["name"] in ("SyftBox",) for f in listed["files"])


def test_non_allowed_peer_is_ignored(make: MakeTransport) -> None:
    do = make(ANN, allowed_peers=[BOB])
    ds, carol = make(BOB), make(CAROL)
    ds.put(rpc_key(ANN, BOB, "ok.request"), b"ok")
    carol.put(rpc_key(ANN, CAROL, "spam.request"), b"spam")
    assert do.list(ann) == [rpc_key(ANN, BOB, "ok.request")]
    with pytest.raises(MessageNotFound):
        do.get(rpc_key(ANN, CAROL, "spam.request"))
    assert not do.is_prepared(CAROL, APP, "messages")
    assert do.is_prepared(BOB, APP, "messages")
    with pytest.raises(PermissionDenied):
        do.put(rpc_key(ANN, CAROL, "reply.response"), b"no")


def test_forged_channel_folder_is_ignored(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    """Carol names a folder as if Bob wrote it; Ann must check the folder owner."""
    do = make(ANN)
    svc = drive.service(CAROL)
    forged = (
        svc.files()
        .create(body={"name": channel_folder_name(BOB, ANN), "mimeType": FOLDER_MIME})
        .execute()["id"]
    )
    svc.permissions().create(
        fileId=forged,
        body={"type": "user", "role": "writer", "emailAddress": ann},
        sendNotificationEmail=False,
    ).execute()
    key = rpc_key(ANN, BOB, "forged.request")
    svc.files().create(body={"name": key, "parents": [forged]}).execute()
    assert do.list(ann) == []
    with pytest.raises(MessageNotFound):
        do.get(key)
    assert not do.is_prepared(BOB, APP, "messages")


def test_prepare_and_is_prepared(make: MakeTransport, drive: FakeDriveServer) -> None:
    do, ds = make(ANN), make(BOB)
    assert not ds.is_prepared(ANN, APP, "messages")
    do.prepare(APP, "messages", [BOB])
    # The share arrives through the changes feed, within one poll.
    assert wait_until(lambda: ds.is_prepared(ANN, APP, "messages"))
    name = channel_folder_name(ANN, BOB)
    folder = next(f for f in drive.files_of(ANN) if f["name"] == name)
    # Lose the share (e.g. a crash between create and share); prepare repairs it.
    svc = drive.service(ANN)
    perms = (
        svc.permissions()
        .list(fileId=folder["id"], fields="permissions(id,role)")
        .execute()
    )
    # Least privilege: the reader may read the channel, not write into it.
    assert sorted(p["role"] for p in perms["permissions"]) == ["owner", "reader"]
    reader = next(p for p in perms["permissions"] if p["role"] == "reader")
    svc.permissions().delete(fileId=folder["id"], permissionId=reader["id"]).execute()
    fresh = make(ANN)
    fresh.prepare(APP, "messages", [BOB])
    assert [f["name"] for f in drive.files_of(ANN)].count(name) == 1
    assert make(BOB).is_prepared(ANN, APP, "messages")


def test_deleted_channel_folder_is_recreated(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do, ds = make(ANN), make(BOB)
    ds.put(rpc_key(ANN, BOB, "1.request"), b"one")
    folder = next(
        f for f in drive.files_of(BOB) if f["name"] == channel_folder_name(BOB, ANN)
    )
    drive.service(BOB).files().delete(fileId=folder["id"]).execute()
    ds.put(rpc_key(ANN, BOB, "2.request"), b"two")  # cached id is 404: recreate
    assert do.get(rpc_key(ANN, BOB, "2.request")) == b"two"


def test_identity_mismatch_is_a_config_error(drive: FakeDriveServer) -> None:
    wrong = GDriveTransport(ANN, lambda: drive.service(BOB))
    try:
        with pytest.raises(ConfigError):
            wrong.put(rpc_key(ANN, BOB, "x"), b"x")
        assert drive.files_of(BOB) == []  # nothing was created in the wrong drive
    finally:
        wrong.close()


# -- paging and consistency ------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [7, 1000])
def test_listing_pages_through_many_files(
    make: MakeTransport, drive: FakeDriveServer, page_size: int
) -> None:
    do, ds = make(ANN, page_size=page_size), make(BOB)
    keys = [rpc_key(ANN, BOB, f"{i:03d}.request") for i in range(130)]
    for key in keys:
        ds.put(key, b"x")
    before = drive.count("files.list")
    assert do.list(ann) == keys
    calls = drive.count("files.list") - before
    if page_size == 7:
        assert calls >= 130 // 7
    else:
        assert calls <= 4  # discovery + one page per channel
    assert do.get(keys[-1]) == b"x"


def test_name_index_lag_does_not_break_get_or_list(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    drive.name_index_delay = 60.0  # name-only searches would see nothing
    do, ds = make(ANN), make(BOB)
    key = rpc_key(ANN, BOB, "fresh.request")
    ds.put(key, b"just written")
    assert do.get(key) == b"just written"
    assert do.exists(key)
    assert do.list(ann) == [key]
    ds.put(key, b"rewritten")
    assert do.get(key) == b"rewritten"
    assert [f["name"] for f in drive.files_of(BOB)].count(key) == 1


# -- faults and retries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, None),
        (500, None),
        (503, None),
        (504, None),
        (403, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
        (0, "drop"),
        (0, "reset"),
    ],
)
def test_fault_storms_are_survived(
    make: MakeTransport,
    drive: FakeDriveServer,
    sleeps: SleepRecorder,
    status: int,
    reason: str | None,
) -> None:
    do, ds = make(ANN), make(BOB)
    key = rpc_key(ANN, BOB, "storm.request")
    big = rpc_key(ANN, BOB, "storm.bin")
    body = os.urandom(6 * 1024 * 1024)  # resumable: chunk PUTs get faults too
    drive.fault_storm(status, 4, reason=reason)
    ds.put(key, b"survived")
    drive.fault_storm(status, 4, reason=reason)
    ds.put(big, body)
    drive.fault_storm(status, 4, reason=reason)
    assert do.get(key) == b"survived"
    drive.fault_storm(status, 4, reason=reason)
    assert do.list(ann) == sorted([key, big])
    drive.fault_storm(status, 4, reason=reason, methods=["upload.put", "files.get"])
    assert do.get(big) == body
    assert drive.pending_faults == 0
    assert len(sleeps.delays) >= 10  # faults were retried, with backoff


def test_transient_400_on_resumable_chunk_is_retried(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    ds = make(BOB)
    key = rpc_key(ANN, BOB, "chunky.bin")
    body = os.urandom(9 * 1024 * 1024)
    drive.inject_faults([(400, "badRequest")] * 2, methods=["upload.put"])
    ds.put(key, body)
    assert make(ANN).get(key) == body


def test_permanent_failure_raises_after_max_retries_with_growing_backoff(
    make: MakeTransport, drive: FakeDriveServer, sleeps: SleepRecorder
) -> None:
    ds = make(BOB, max_retries=5)
    ds.put(rpc_key(ANN, BOB, "warmup"), b"w")  # folders exist; next put is one call
    sleeps.delays.clear()
    drive.fault_storm(503, 100)
    with pytest.raises(RemoteServiceError) as info:
        ds.put(rpc_key(ANN, BOB, "doomed"), b"x")
    assert info.value.status == 503
    drive.clear_faults()
    delays = sleeps.delays
    assert len(delays) == 5
    for n, delay in enumerate(delays):  # equal jitter in [2^n / 2, 2^n]
        assert 2**n / 2 <= delay <= 2**n
    assert delays == sorted(delays)
    assert any(d not in (1, 2, 4, 8, 16) for d in delays)  # jittered


def test_permission_errors_are_mapped_not_retried(
    make: MakeTransport, drive: FakeDriveServer, sleeps: SleepRecorder
) -> None:
    ds = make(BOB)
    ds.put(rpc_key(ANN, BOB, "warmup"), b"w")
    sleeps.delays.clear()
    drive.inject_faults([(403, "insufficientFilePermissions")])
    with pytest.raises(PermissionDenied):
        ds.put(rpc_key(ANN, BOB, "denied"), b"x")
    assert sleeps.delays == []


def test_unknown_host_is_not_retried(
    sleeps: SleepRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from google.oauth2.credentials import Credentials

    real = socket.getaddrinfo

    def no_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "drive.invalid":  # fail fast, whatever the machine's resolver
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    t = GDriveTransport.from_api_root(
        BOB,
        "http://drive.invalid/",
        Credentials(token=f"fake:{BOB}"),
        sleep=sleeps,
        http_timeout=5,
    )
    try:
        with pytest.raises(RemoteServiceError):
            t.put(rpc_key(ANN, BOB, "x"), b"x")
        assert sleeps.delays == []
    finally:
        t.close()


# -- watching -------------------------------------------------------------------------------------------


class Collector:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.event = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, key: str) -> None:
        with self.lock:
            self.keys.append(key)
        self.event.set()

    def wait_for(self, key: str, timeout: float = 3.0) -> bool:
        return wait_until(lambda: key in self.keys, timeout)


def test_watch_fires_for_a_peers_new_and_replaced_file(make: MakeTransport) -> None:
    do, ds = make(ANN), make(BOB)
    ds.prepare(APP, "messages", [ANN])
    seen = Collector()
    do.watch(f"{ann}/app_data/{APP}/rpc/messages", seen)
    key = rpc_key(ANN, BOB, "w.request")
    started = time.monotonic()
    ds.put(key, b"1")
    assert seen.wait_for(key, timeout=3)
    latency = time.monotonic() - started
    assert latency < 3
    seen.keys.clear()
    ds.put(key, b"2")
    assert seen.wait_for(key, timeout=3)
    other = rpc_key(ANN, BOB, "x", app="other/app")
    ds.put(other, b"not watched")
    ds.put(rpc_key(ANN, BOB, "last.request"), b"3")
    assert seen.wait_for(rpc_key(ANN, BOB, "last.request"))
    assert other not in seen.keys


def test_watch_discovers_a_channel_shared_after_it_started(make: MakeTransport) -> None:
    do = make(ANN)
    seen = Collector()
    do.watch(ann, seen)
    carol = make(CAROL)  # has never talked to Ann before
    key = rpc_key(ANN, CAROL, "hello.request")
    carol.put(key, b"hi")
    assert seen.wait_for(key, timeout=3)
    assert do.get(key) == b"hi"


def test_one_changes_list_call_per_poll_for_all_channels(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do = make(ANN, poll_interval=0.05, reconcile_interval=3600)
    peers = [make(email) for email in (BOB, CAROL, DAN)]
    for peer in peers:
        peer.put(rpc_key(ANN, peer.identity, "hi.request"), b"hi")
    seen = Collector()
    do.watch(ann, seen)
    assert wait_until(lambda: do.poll_count >= 2)
    polls, calls, lists = (
        do.poll_count,
        drive.count("changes.list"),
        drive.count("files.list"),
    )
    assert wait_until(lambda: do.poll_count >= polls + 10)
    polls_delta = do.poll_count - polls
    calls_delta = drive.count("changes.list") - calls
    assert calls_delta in (polls_delta, polls_delta + 1)  # +1: a poll in flight
    assert drive.count("files.list") == lists  # no per-channel listing per tick
    for peer in peers:
        peer.put(rpc_key(ANN, peer.identity, "again.request"), b"again")
    for peer in peers:
        assert seen.wait_for(rpc_key(ANN, peer.identity, "again.request"))


def test_polling_backs_off_when_idle_and_speeds_up_on_activity(
    make: MakeTransport,
) -> None:
    do, ds = make(ANN, poll_interval=0.6), make(BOB)
    seen = Collector()
    do.watch(ann, seen)
    assert wait_until(lambda: do.current_poll_delay == 0.6, timeout=5)
    ds.put(rpc_key(ANN, BOB, "wake.request"), b"x")
    assert seen.wait_for(rpc_key(ANN, BOB, "wake.request"))
    assert wait_until(lambda: do.current_poll_delay == 0.25, timeout=2)


def test_a_peers_heartbeat_is_delivered_but_polling_stays_slow(
    make: MakeTransport,
) -> None:
    do, ds = make(ANN, poll_interval=0.6), make(BOB)
    ds.prepare(APP, "messages", [ANN])  # BOB serves the app and beats to ANN
    beats = threading.Event()
    do.watch_heartbeat(BOB, APP, "messages", beats.set)
    assert wait_until(lambda: do.current_poll_delay == 0.6, timeout=5)
    ds.beat(APP, "messages", [ANN], b'{"seq": 0}')
    assert beats.wait(5)
    # A beat is not work: the reader keeps its idle pace (no burst of polls).
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        assert do.current_poll_delay == 0.6
        time.sleep(0.01)


def test_reconciliation_covers_a_failing_changes_feed(
    make: MakeTransport, drive: FakeDriveServer
) -> None:
    do = make(ANN, poll_interval=0.1, reconcile_interval=0.3, max_retries=0)
    ds = make(BOB)
    ds.prepare(APP, "messages", [ANN])
    seen = Collector()
    do.watch(ann, seen)
    drive.fault_storm(500, 10_000, methods=["changes.list"])
    key = rpc_key(ANN, BOB, "missed.request")
    ds.put(key, b"x")
    assert seen.wait_for(key, timeout=5)
    drive.clear_faults()


def test_cancelled_watch_stops_firing(make: MakeTransport) -> None:
    do, ds = make(ANN), make(BOB)
    first, second = Collector(), Collector()
    handle = do.watch(ann, first)
    do.watch(ann, second)
    handle.cancel()
    key = rpc_key(ANN, BOB, "c.request")
    ds.put(key, b"x")
    assert second.wait_for(key)
    assert first.keys == []


def test_close_stops_the_poller(make: MakeTransport) -> None:
    do = make(ANN)
    do.watch(ann, lambda key: None)
    assert do.poller_alive
    started = time.monotonic()
    do.close()
    assert time.monotonic() - started < 1.5
    assert not do.poller_alive
    do.close()  # idempotent
    with pytest.raises(TransportClosed):
        do.put(rpc_key(ANN, BOB, "late"), b"x")
    with pytest.raises(TransportClosed):
        do.watch(ann, lambda key: None)


# -- credentials --------------------------------------------------------------------------------------------


def test_from_token_file_refreshes_and_writes_back(
    drive: FakeDriveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = drive.authorized_user_info(BOB)
    info["token"] = "stale-token"  # no expiry saved: google-auth refreshes first
    path = tmp_path / "token.json"
    path.write_text(json.dumps(info))
    caplog.set_level(logging.DEBUG)
    t = GDriveTransport.from_token_file(
        BOB, path, api_root=drive.url, token_uri=drive.token_uri, sleep=lambda s: None
    )
    try:
        t.put(rpc_key(ANN, BOB, "tok.request"), b"x")
    finally:
        t.close()
    saved = json.loads(path.read_text())
    assert saved["token"] == f"fake:{BOB}"
    assert saved["refresh_token"] == info["refresh_token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert drive.count("oauth.token") >= 1
    assert info["refresh_token"] not in caplog.text
    assert "fake-client-secret" not in caplog.text


def test_from_token_file_rejects_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text("{}")
    with pytest.raises(ConfigError):
        GDriveTransport.from_token_file(BOB, path)


def test_from_api_root_talks_to_any_drive_compatible_server(
    drive: FakeDriveServer,
) -> None:
    from google.oauth2.credentials import Credentials

    ds = GDriveTransport.from_api_root(BOB, drive.url, Credentials(token=f"fake:{BOB}"))
    do = GDriveTransport.from_api_root(ANN, drive.url, Credentials(token=f"fake:{ann}"))
    try:
        key = rpc_key(ANN, BOB, "root.request")
        ds.put(key, b"via api root")
        assert do.get(key) == b"via api root"
    finally:
        ds.close()
        do.close()


@pytest.mark.parametrize("identity", ["robot@proj.iam.gserviceaccount.com", BOB])
def test_from_service_account_with_and_without_delegation(
    drive: FakeDriveServer, tmp_path: Path, identity: str
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "sa.json"
    sa_info = {
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "robot@proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": drive.token_uri,
    }
    path.write_text(json.dumps(sa_info))
    t = GDriveTransport.from_service_account(identity, path, api_root=drive.url)
    try:
        t.prepare(APP, "messages", [ann])  # acts as `identity` (delegated for BOB)
    finally:
        t.close()
    assert channel_folder_name(identity, ann) in {
        f["name"] for f in drive.files_of(identity)
    }
    assert drive.count("oauth.token") >= 1
