"""The events loop over real SyftBox folders, real watchdog and threads.

A researcher (``ds``) writes requests with :class:`SyftFlwrRpc`; a data owner
(``do1``) serves them with :class:`TransportEvents` running in a thread. Both
share one data dir (a perfect, instant sync).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import APP, PLAIN, EventsRunner, wait_until

from syft_flwr.client import SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy
from syft_flwr.errors import EncryptionError
from syft_flwr.events import RequestInfo, TransportEvents, current_request
from syft_flwr.transports.syftbox import SyftBoxTransport
from syft_flwr.wire.envelope import PlainCodec, SealContext, encode_message, format_time
from syft_flwr.wire.mailbox import Incoming, PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"
#: Small chunks so a few KB already travel as several chunk files.
CHUNKY = Settings(
    encryption_enabled=False, poll_interval=0.25, chunk_size=2048, inline_limit=256
)


class Calls:
    """Thread-safe record of handler calls."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.infos: list[RequestInfo | None] = []
        self._lock = threading.Lock()

    def add(self, body: bytes) -> None:
        with self._lock:
            self.bodies.append(body)
            self.infos.append(current_request())

    def __len__(self) -> int:
        with self._lock:
            return len(self.bodies)


@pytest.fixture
def do_client(make_client: Callable[[str], SyftCoreClient]) -> SyftCoreClient:
    return make_client(DO)


@pytest.fixture
def ds_client(make_client: Callable[[str], SyftCoreClient]) -> SyftCoreClient:
    return make_client(DS)


@pytest.fixture
def researcher(ds_client: SyftCoreClient) -> Iterator[SyftFlwrRpc]:
    rpc = SyftFlwrRpc(
        ds_client.make_transport(), APP, settings=PLAIN, policy=PlaintextPolicy()
    )
    yield rpc
    rpc.transport.close()


def make_events(
    client: SyftCoreClient,
    handler: Callable[[bytes], Any] | None = None,
    calls: Calls | None = None,
    **kwargs: Any,
) -> TransportEvents:
    """A data owner's events loop with a recording echo handler."""
    kwargs.setdefault("settings", PLAIN)
    kwargs.setdefault("poll_interval", 0.25)
    ev = TransportEvents(APP, client, **kwargs)
    ev.drain_timeout = 0.0  # tests read replies themselves; no need to wait at exit

    def default(body: bytes) -> bytes:
        if calls is not None:
            calls.add(body)
        return b"echo:" + body

    ev.on_request(EP, handler or default)
    return ev


def wait_response(rpc: SyftFlwrRpc, mid: str, timeout: float = 10.0) -> Incoming:
    return wait_until(
        lambda: rpc.response_for(DO, EP, mid),
        timeout=timeout,
        message=f"response {mid}",
    )


def later(seconds: float = 600) -> float:
    return time.time() + seconds


def request_folder(datasites: Path) -> Path:
    return datasites / DO / "app_data" / APP / "rpc" / EP / DS


def request_bytes(
    mid: str, body: bytes, *, sender: str = DS, created: float | None = None
) -> bytes:
    """The head of a plaintext inline request, as the researcher would write it."""
    ctx = SealContext(
        message_id=mid,
        sender=sender,
        recipient=DO,
        app=APP,
        endpoint=EP,
        kind="request",
        expires=format_time(later()),
    )
    head, chunks = encode_message(
        ctx=ctx,
        url=f"syft://{DO}/app_data/{APP}/rpc/{EP}",
        body=body,
        created=format_time(created if created is not None else time.time()),
        codec=PlainCodec(),
        chunk_size=PLAIN.chunk_size,
        inline_limit=PLAIN.inline_limit,
    )
    assert chunks == []
    return head


# -- serving ---------------------------------------------------------------------------


def test_serves_requests_pending_before_start(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    mids = [
        researcher.send_request(DO, EP, f"early {i}".encode(), expires_at=later())
        for i in range(3)
    ]
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls))
    for i, mid in enumerate(mids):
        resp = wait_response(researcher, mid)
        assert resp.head.status_code == 200
        assert resp.body == f"echo:early {i}".encode()
    assert sorted(calls.bodies) == sorted(f"early {i}".encode() for i in range(3))


def test_reacts_to_new_requests_without_waiting_for_a_rescan(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    # A 60 s rescan: only the watch can make this fast.
    events_runner.start(make_events(do_client, calls=calls, poll_interval=60))
    for i in range(5):
        t0 = time.monotonic()
        mid = researcher.send_request(DO, EP, f"new {i}".encode(), expires_at=later())
        resp = wait_response(researcher, mid, timeout=5)
        assert resp.body == f"echo:new {i}".encode()
        assert time.monotonic() - t0 < 5
    assert len(calls) == 5


def test_each_request_head_is_parsed_once(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import syft_flwr.data_owner.admission as watcher_module  # parses request heads
    import syft_flwr.wire.reader as rpc_module
    from syft_flwr.wire.envelope import parse_head

    parsed: list[str] = []

    def counting(data: bytes, **kwargs: Any) -> Any:
        head = parse_head(data, **kwargs)
        if head.kind == "request":
            parsed.append(head.id)
        return head

    monkeypatch.setattr(watcher_module, "parse_head", counting)
    monkeypatch.setattr(rpc_module, "parse_head", counting)
    events_runner.start(make_events(do_client, poll_interval=60))
    mids = []
    for i in range(3):
        mid = researcher.send_request(DO, EP, f"r{i}".encode(), expires_at=later())
        assert wait_response(researcher, mid).body == f"echo:r{i}".encode()
        mids.append(mid)
    assert parsed == mids


def test_chunked_request_and_reply(
    do_client: SyftCoreClient, ds_client: SyftCoreClient, events_runner: EventsRunner
) -> None:
    rpc = SyftFlwrRpc(
        ds_client.make_transport(), APP, settings=CHUNKY, policy=PlaintextPolicy()
    )
    try:
        events_runner.start(
            make_events(do_client, settings=CHUNKY, handler=lambda b: b[::-1])
        )
        body = bytes(range(256)) * 40  # 10 KB -> 5 chunks each way
        mid = rpc.send_request(DO, EP, body, expires_at=later())
        resp = wait_response(rpc, mid)
        assert resp.body == body[::-1]
        assert len(resp.head.chunks) == 5
    finally:
        rpc.transport.close()


def test_handler_sees_the_request_info(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls))
    mid = researcher.send_request(
        DO, EP, b"x", expires_at=later(), headers={"x-k": "v"}
    )
    wait_response(researcher, mid)
    info = calls.infos[0]
    assert info is not None
    assert (info.id, info.sender, info.endpoint, info.encrypted) == (mid, DS, EP, False)
    assert info.headers["x-k"] == "v"
    assert current_request() is None  # only set inside the handler


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ("héllo", "héllo".encode()),
        (None, b""),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
    ],
)
def test_handler_return_types(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    result: Any,
    expected: bytes,
) -> None:
    events_runner.start(make_events(do_client, handler=lambda b: result))
    mid = researcher.send_request(DO, EP, b"x", expires_at=later())
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 200
    assert resp.body == expected


def test_a_raising_handler_gives_500_with_type_and_message_only(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    def handler(body: bytes) -> bytes:
        raise ValueError("bad weights shape (3, 4)")

    events_runner.start(make_events(do_client, handler=handler))
    mid = researcher.send_request(DO, EP, b"x", expires_at=later())
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 500
    text = resp.body.decode()
    assert text == "ValueError: bad weights shape (3, 4)"
    assert "Traceback" not in text and 'File "' not in text
    # The loop survives and serves the next request.
    mid2 = researcher.send_request(DO, EP, b"y", expires_at=later())
    assert wait_response(researcher, mid2).head.status_code == 500


# -- refusals ---------------------------------------------------------------------------


def test_expired_request_gets_419_and_is_not_run(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls))
    mid = researcher.send_request(DO, EP, b"stale", expires_at=time.time() - 1)
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 419
    assert "expired" in resp.body.decode()
    assert len(calls) == 0


def test_expiry_uses_the_injected_clock(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    future = time.time() + 3600
    events_runner.start(make_events(do_client, calls=calls, clock=lambda: future))
    mid = researcher.send_request(DO, EP, b"x", expires_at=later(600))
    assert wait_response(researcher, mid).head.status_code == 419
    assert len(calls) == 0


def test_unknown_sender_gets_403_and_handler_is_not_called(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    events_runner.start(
        make_events(do_client, calls=calls, allowed_senders=["Other@Example.org"])
    )
    mid = researcher.send_request(DO, EP, b"x", expires_at=later())
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 403
    assert DS in resp.body.decode()
    assert len(calls) == 0


def test_allowed_sender_is_served(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    events_runner.start(
        make_events(do_client, calls=calls, allowed_senders=["ds@EXAMPLE.org"])
    )
    mid = researcher.send_request(DO, EP, b"x", expires_at=later())
    assert wait_response(researcher, mid).head.status_code == 200
    assert len(calls) == 1


def test_sender_not_matching_its_folder_gets_403(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    datasites_dir: Path,
    events_runner: EventsRunner,
) -> None:
    calls = Calls()
    forged = request_bytes("forged-1", b"x", sender="mallory@example.org")
    researcher.transport.put(
        f"{DO}/app_data/{APP}/rpc/{EP}/{DS}/forged-1.request", forged
    )
    events_runner.start(make_events(do_client, calls=calls))
    resp = wait_response(researcher, "forged-1")
    assert resp.head.status_code == 403
    assert "mallory@example.org" in resp.body.decode()
    assert len(calls) == 0


def test_malformed_request_gets_400(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    researcher.transport.put(
        f"{DO}/app_data/{APP}/rpc/{EP}/{DS}/bad-1.request",
        json.dumps({"id": "bad-1"}).encode(),
    )
    events_runner.start(make_events(do_client, calls=calls))
    resp = wait_response(researcher, "bad-1")
    assert resp.head.status_code == 400
    assert len(calls) == 0


# -- not run twice -------------------------------------------------------------------


def test_request_already_answered_is_not_run_again(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    answered = researcher.send_request(DO, EP, b"old", expires_at=later())
    # Answer it as the data owner would have, before this loop starts.
    owner = SyftFlwrRpc(
        do_client.make_transport(), APP, settings=PLAIN, policy=PlaintextPolicy()
    )
    try:
        key = owner.head_key(DO, EP, DS, answered, "request")
        owner.send_response(owner.read(key), body=b"answered earlier")
    finally:
        owner.transport.close()
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls))
    sentinel = researcher.send_request(DO, EP, b"new", expires_at=later())
    wait_response(researcher, sentinel)
    time.sleep(0.6)  # two more rescans
    assert calls.bodies == [b"new"]
    assert researcher.response_for(DO, EP, answered).body == b"answered earlier"  # type: ignore[union-attr]


def _replayed_is_not_run(researcher: SyftFlwrRpc, mid: str, calls: Calls) -> None:
    """A replayed id is never executed; it gets the stored reply again (or, in
    the same process before the rescan, nothing yet), never a false 409."""
    time.sleep(0.8)  # several rescans: the request is pending again
    assert calls.bodies == [b"once"]
    resp = researcher.response_for(DO, EP, mid)
    assert resp is None or (
        resp.head.status_code == 200 and resp.body == b"echo:once"
    ), resp and resp.head.status_code


def test_replay_after_the_response_is_deleted_is_not_run_again(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
) -> None:
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls))
    mid = researcher.send_request(DO, EP, b"once", expires_at=later())
    assert wait_response(researcher, mid).head.status_code == 200
    researcher.transport.delete(researcher.head_key(DO, EP, DS, mid, "response"))
    # The same request is now unanswered again; the next rescan finds it.
    _replayed_is_not_run(researcher, mid, calls)


def test_replay_after_a_restart_gets_the_stored_reply(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
) -> None:
    calls = Calls()
    first = make_events(do_client, calls=calls)
    events_runner.start(first)
    mid = researcher.send_request(DO, EP, b"once", expires_at=later())
    assert wait_response(researcher, mid).head.status_code == 200
    events_runner.stop(first)
    first.transport.close()
    # The ledger lives in the client's private state dir, outside datasites/.
    state = do_client.state_dir(APP)
    states = [
        json.loads(x)["s"] for x in (state / "ledger.jsonl").read_text().splitlines()
    ]
    # kept in replies/ before it was sent
    assert states == ["received", "running", "stored", "replied"]
    assert (state / "replies" / f"{mid}.reply").is_file()
    assert not state.is_relative_to(do_client.datasites)

    researcher.transport.delete(researcher.head_key(DO, EP, DS, mid, "response"))
    second = make_events(do_client, calls=calls)
    events_runner.start(second)
    resp = wait_response(researcher, mid)
    # the same reply again, from the ledger; the handler did not run again
    assert resp.head.status_code == 200 and resp.body == b"echo:once"
    assert calls.bodies == [b"once"]


def test_resent_request_with_the_same_id_is_not_run_again(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls))
    mid = researcher.send_request(DO, EP, b"once", expires_at=later())
    wait_response(researcher, mid)
    researcher.finish(DO, EP, mid)
    researcher.send_request(DO, EP, b"again", expires_at=later(), message_id=mid)
    _replayed_is_not_run(researcher, mid, calls)


def test_resent_request_with_the_same_id_after_a_restart_gets_the_stored_reply(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    first = make_events(do_client, calls=calls)
    events_runner.start(first)
    mid = researcher.send_request(DO, EP, b"once", expires_at=later())
    wait_response(researcher, mid)
    events_runner.stop(first)
    first.transport.close()
    researcher.finish(DO, EP, mid)
    researcher.send_request(DO, EP, b"again", expires_at=later(), message_id=mid)
    events_runner.start(make_events(do_client, calls=calls))
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 200 and resp.body == b"echo:once"
    assert calls.bodies == [b"once"]


# -- partial files -------------------------------------------------------------------


def test_half_written_request_is_left_alone_then_served_once_complete(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    datasites_dir: Path,
    events_runner: EventsRunner,
) -> None:
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls))
    full = request_bytes("partial-1", b"payload")
    path = request_folder(datasites_dir) / "partial-1.request"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a sync client writing in place, not atomically
        f.write(full[: len(full) // 2])
    sentinel = researcher.send_request(DO, EP, b"sentinel", expires_at=later())
    wait_response(researcher, sentinel)
    time.sleep(0.8)  # several rescans and incomplete retries
    assert path.read_bytes() == full[: len(full) // 2], "the partial file was touched"
    assert not path.with_name("partial-1.response").exists()
    assert calls.bodies == [b"sentinel"]

    with open(path, "wb") as f:  # the rest arrives, again in place
        f.write(full)
    resp = wait_response(researcher, "partial-1")
    assert resp.head.status_code == 200 and resp.body == b"echo:payload"
    time.sleep(0.6)
    assert calls.bodies == [b"sentinel", b"payload"]


class HoldingTransport(SyftBoxTransport):
    """Drops writes of chosen keys until released (a chunk that has not synced yet)."""

    def __init__(self, *args: Any, hold: Callable[[str], bool]) -> None:
        super().__init__(*args)
        self._hold = hold
        self.held: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        if self._hold(key):
            self.held[key] = bytes(data)
            return
        super().put(key, data)

    def release(self) -> None:
        held, self.held = self.held, {}
        for key, data in held.items():
            super().put(key, data)


def test_missing_chunk_then_chunk_arrives_is_served(
    do_client: SyftCoreClient,
    ds_client: SyftCoreClient,
    events_runner: EventsRunner,
) -> None:
    transport = HoldingTransport(
        ds_client.datasites, DS, hold=lambda k: k.endswith(".000002.chunk")
    )
    rpc = SyftFlwrRpc(transport, APP, settings=CHUNKY, policy=PlaintextPolicy())
    try:
        calls = Calls()
        events_runner.start(make_events(do_client, calls=calls, settings=CHUNKY))
        body = b"".join(
            i.to_bytes(2, "big") for i in range(2500)
        )  # 5000 bytes: 3 chunks
        mid = rpc.send_request(DO, EP, body, expires_at=later())
        assert len(transport.held) == 1
        sentinel = rpc.send_request(DO, EP, b"s", expires_at=later())
        wait_response(rpc, sentinel)
        time.sleep(0.6)
        assert rpc.response_for(DO, EP, mid) is None
        assert transport.exists(rpc.head_key(DO, EP, DS, mid, "request"))
        transport.release()
        resp = wait_response(rpc, mid)
        assert resp.head.status_code == 200
        assert resp.body == b"echo:" + body
        assert calls.bodies == [b"s", body]
    finally:
        transport.close()


# -- encryption ------------------------------------------------------------------------

ENC = Settings(encryption_enabled=True, poll_interval=0.25)


def test_encrypted_round_trip(
    do_client: SyftCoreClient, ds_client: SyftCoreClient, events_runner: EventsRunner
) -> None:
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls, settings=ENC))
    transport = ds_client.make_transport()
    rpc = SyftFlwrRpc(
        transport, APP, settings=ENC, policy=default_policy(ds_client, transport, ENC)
    )
    try:
        secret = b"model update 0.1234 " * 10_000  # chunked too
        mid = rpc.send_request(DO, EP, secret, expires_at=later())
        resp = wait_response(rpc, mid)
        assert resp.head.status_code == 200 and resp.head.encrypted
        assert resp.body == b"echo:" + secret
        assert calls.bodies == [secret] and calls.infos[0].encrypted  # type: ignore[union-attr]
    finally:
        transport.close()


def test_plaintext_request_is_refused_when_encryption_is_on(
    do_client: SyftCoreClient, ds_client: SyftCoreClient, events_runner: EventsRunner
) -> None:
    calls = Calls()
    events_runner.start(make_events(do_client, calls=calls, settings=ENC))
    transport = ds_client.make_transport()
    # The researcher has keys (so the refusal can be sealed to it) but sends plaintext.
    enc_rpc = SyftFlwrRpc(
        transport, APP, settings=ENC, policy=default_policy(ds_client, transport, ENC)
    )
    plain_rpc = SyftFlwrRpc(transport, APP, settings=PLAIN, policy=PlaintextPolicy())
    try:
        mid = plain_rpc.send_request(DO, EP, b"plaintext body", expires_at=later())
        resp = wait_response(enc_rpc, mid)
        assert resp.head.status_code == 403
        assert (
            "plaintext" in resp.body.decode() or "not encrypted" in resp.body.decode()
        )
        assert len(calls) == 0
        # A plaintext reader cannot read the (sealed) refusal: it is told why.
        with pytest.raises(EncryptionError):
            plain_rpc.response_for(DO, EP, mid)
    finally:
        transport.close()


# -- lifecycle -------------------------------------------------------------------------


def test_stop_from_another_thread_ends_run_forever_within_a_second(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc
) -> None:
    ev = make_events(do_client, poll_interval=60)
    ev.drain_timeout = TransportEvents.DRAIN_TIMEOUT  # the real exit path
    mid = researcher.send_request(DO, EP, b"x", expires_at=later())
    t = threading.Thread(target=ev.run_forever, daemon=True)
    t.start()
    try:
        wait_response(
            researcher, mid
        )  # an unread reply: stop must not wait for it long
        assert ev.is_running
        t0 = time.monotonic()
        threading.Thread(target=ev.stop).start()
        t.join(5)
        elapsed = time.monotonic() - t0
        assert not t.is_alive()
        assert elapsed < 1.0, f"run_forever took {elapsed:.2f} s to stop"
        assert not ev.is_running
    finally:
        ev.stop()
        t.join(5)
        ev.transport.close()


def test_stop_from_inside_a_handler(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc
) -> None:
    holder: dict[str, TransportEvents] = {}

    def handler(body: bytes) -> bytes:
        holder["ev"].stop()
        return b"bye"

    ev = make_events(do_client, handler=handler)
    holder["ev"] = ev
    t = threading.Thread(target=ev.run_forever, daemon=True)
    t.start()
    try:
        mid = researcher.send_request(DO, EP, b"x", expires_at=later())
        t.join(5)
        assert not t.is_alive()
        assert wait_response(researcher, mid).body == b"bye"
    finally:
        ev.stop()
        t.join(5)
        ev.transport.close()


def test_restart_after_stop(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    ev = make_events(do_client, calls=calls)
    events_runner.start(ev)
    events_runner.stop(ev)
    events_runner.start(ev)
    mid = researcher.send_request(DO, EP, b"again", expires_at=later())
    assert wait_response(researcher, mid).body == b"echo:again"


def test_protocol_properties_and_validation(do_client: SyftCoreClient) -> None:
    ev = TransportEvents(APP, do_client, settings=PLAIN)
    try:
        assert ev.client_email == DO
        assert ev.app_dir == do_client.datasites / DO / "app_data" / APP
        assert ev.is_running is False
        with pytest.raises(RuntimeError, match="on_request"):
            ev.run_forever()
        with pytest.raises(ValueError):
            ev.on_request("a/b", lambda b: b)
        with pytest.raises(ValueError):
            ev.on_request("/", lambda b: b)
        ev.on_request("/messages/", lambda b: b)  # slashes around one segment are fine
    finally:
        ev.transport.close()


def test_on_request_while_running_serves_the_new_endpoint(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    ev = make_events(do_client)
    events_runner.start(ev)
    ev.on_request("stats", lambda b: b"stats:" + b)
    mid = researcher.send_request(DO, "stats", b"q", expires_at=later())
    resp = wait_until(
        lambda: researcher.response_for(DO, "stats", mid), message="stats reply"
    )
    assert resp.body == b"stats:q"


def test_prepare_marks_the_owner_ready(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    assert researcher.transport.is_prepared(DO, APP, EP) is False
    events_runner.start(make_events(do_client))
    assert researcher.transport.is_prepared(DO, APP, EP) is True


# -- housekeeping ---------------------------------------------------------------------


def test_cleanup_removes_old_exchanges(
    do_client: SyftCoreClient, ds_client: SyftCoreClient, datasites_dir: Path
) -> None:
    now = time.time()
    old_writer = SyftFlwrRpc(
        ds_client.make_transport(),
        APP,
        settings=CHUNKY,
        policy=PlaintextPolicy(),
        clock=lambda: now - 2 * 86400,
    )
    new_writer = SyftFlwrRpc(
        ds_client.make_transport(), APP, settings=CHUNKY, policy=PlaintextPolicy()
    )
    ev = make_events(do_client, settings=CHUNKY, cleanup_expiry="1d", clock=lambda: now)
    try:
        old = old_writer.send_request(DO, EP, b"o" * 3000, expires_at=later())
        fresh = new_writer.send_request(DO, EP, b"f" * 3000, expires_at=later())
        ev.rpc.send_response(
            ev.rpc.read(ev.rpc.head_key(DO, EP, DS, old, "request")), body=b"r" * 3000
        )
        folder = request_folder(datasites_dir)
        assert any(p.name.startswith(old) for p in folder.iterdir())
        assert ev.cleanup() == 1
        names = sorted(p.name for p in folder.iterdir())
        assert not any(n.startswith(old) for n in names), names
        assert f"{fresh}.request" in names
        # With the clock moved on, the fresh exchange is old too.
        ev.clock = lambda: now + 3 * 86400
        assert ev.cleanup() == 1
        assert list(folder.iterdir()) == []
    finally:
        for t in (old_writer.transport, new_writer.transport, ev.transport):
            t.close()


def test_answered_responses_are_swept_once_the_request_is_gone(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    datasites_dir: Path,
    events_runner: EventsRunner,
) -> None:
    events_runner.start(make_events(do_client))
    mid = researcher.send_request(DO, EP, b"x", expires_at=later())
    wait_response(researcher, mid)
    researcher.transport.delete(researcher.head_key(DO, EP, DS, mid, "request"))
    response = request_folder(datasites_dir) / f"{mid}.response"
    wait_until(lambda: not response.exists(), timeout=5, message="response swept")


# -- regressions: bugs this suite found (fixed) -----------------------------------


def test_request_with_an_invalid_expiry_gets_400(
    do_client: SyftCoreClient, researcher: SyftFlwrRpc, events_runner: EventsRunner
) -> None:
    calls = Calls()
    mid = researcher.send_request(DO, EP, b"x", expires_at=later())
    key = researcher.head_key(DO, EP, DS, mid, "request")
    doc = json.loads(researcher.transport.get(key))
    doc["expires"] = "tomorrow"
    researcher.transport.put(key, json.dumps(doc).encode())
    events_runner.start(make_events(do_client, calls=calls))
    resp = wait_response(researcher, mid, timeout=3)
    assert resp.head.status_code == 400
    assert len(calls) == 0


def test_cleanup_sweeps_orphan_chunks_and_long_expired_requests(
    do_client: SyftCoreClient, ds_client: SyftCoreClient, datasites_dir: Path
) -> None:
    now = time.time()
    writer = SyftFlwrRpc(
        ds_client.make_transport(), APP, settings=CHUNKY, policy=PlaintextPolicy()
    )
    ev = make_events(do_client, settings=CHUNKY, cleanup_expiry=0.5, clock=lambda: now)
    try:
        folder = request_folder(datasites_dir)
        expired = writer.send_request(DO, EP, b"e" * 10, expires_at=now - 7200)
        live = writer.send_request(DO, EP, b"l" * 3000, expires_at=now + 600)
        # a writer that crashed after its chunks, before its head
        (folder / "crashed-1.request.000000.chunk").write_bytes(b"x" * 100)
        (folder / "crashed-1.request.000001.chunk").write_bytes(b"y" * 100)
        assert ev.cleanup() == 1  # the long-expired request; orphans seen once
        names = sorted(p.name for p in folder.iterdir())
        assert f"{expired}.request" not in names
        assert "crashed-1.request.000000.chunk" in names  # not yet: first sighting
        time.sleep(0.6)
        assert ev.cleanup() == 2  # orphaned for longer than cleanup_expiry
        names = sorted(p.name for p in folder.iterdir())
        assert not any(n.startswith("crashed-1") for n in names)
        # the live request and its chunks are untouched
        assert f"{live}.request" in names
        assert any(n.startswith(live) and n.endswith(".chunk") for n in names)
    finally:
        writer.transport.close()
        ev.transport.close()
