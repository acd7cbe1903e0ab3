"""A data owner never blocks and never loses a result (real folders, watchdog, threads).

* A ClientApp that hangs gets an error reply at the request's deadline; the next
  request is refused at its own deadline rather than run beside it; stop()
  works while it hangs.
* A reply that cannot be written is kept and retried until it can; the
  handler ran once.
* SYFT_FLWR_POLL_INTERVAL reaches the data owner.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import APP, PLAIN, EventsRunner, wait_until

from syft_flwr.client import SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.events import TransportEvents, create_events_watcher
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"


@pytest.fixture
def researcher(make_client: Callable[[str], SyftCoreClient]):
    c = make_client(DS)
    rpc = SyftFlwrRpc(c.make_transport(), APP, settings=PLAIN, policy=PlaintextPolicy())
    yield rpc
    rpc.transport.close()


def _events(
    client: SyftCoreClient, handler: Callable[[bytes], bytes]
) -> TransportEvents:
    ev = TransportEvents(APP, client, settings=PLAIN, poll_interval=0.25)
    ev.drain_timeout = 0.0
    ev.on_request(EP, handler)
    return ev


def test_a_hanging_clientapp_gets_an_error_at_the_deadline_and_stop_still_works(
    make_client: Callable[[str], SyftCoreClient],
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="syft_flwr")
    release = threading.Event()
    calls: list[bytes] = []

    def hang(body: bytes) -> bytes:
        calls.append(body)
        release.wait(30)
        return b"late"

    ev = _events(make_client(DO), hang)
    events_runner.start(ev)
    try:
        first = researcher.send_request(
            DO, EP, b"one", expires_at=time.time() + 1.5, message_id="a-one"
        )
        second = researcher.send_request(
            DO, EP, b"two", expires_at=time.time() + 2.5, message_id="b-two"
        )
        r1 = wait_until(lambda: researcher.response_for(DO, EP, first), timeout=10)
        r2 = wait_until(lambda: researcher.response_for(DO, EP, second), timeout=10)
        # Whichever ran first hung and got an error at its deadline; the other
        # was never run beside it (refused when it expired, waiting or not).
        assert len(calls) == 1
        ran, other = (r1, r2) if calls == [b"one"] else (r2, r1)
        assert ran.head.status_code == 504 and b"did not finish" in ran.body
        assert other.head.status_code in (419, 504), other.body
        assert b"was not run" in other.body or b"not executed" in other.body
        assert "did not finish request" in caplog.text
        t0 = time.monotonic()
        ev.stop()
        wait_until(lambda: not ev.is_running, timeout=5)
        assert time.monotonic() - t0 < 3  # the stop signal works while it hangs
    finally:
        release.set()


def test_stop_while_a_clientapp_runs_returns_at_once(
    make_client: Callable[[str], SyftCoreClient],
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(body: bytes) -> bytes:
        started.set()
        release.wait(30)
        return b"done"

    ev = _events(make_client(DO), slow)
    events_runner.start(ev)
    try:
        researcher.send_request(DO, EP, b"x", expires_at=time.time() + 60)
        assert started.wait(10)
        t0 = time.monotonic()
        ev.stop()
        wait_until(lambda: not ev.is_running, timeout=5)
        assert time.monotonic() - t0 < 3
    finally:
        release.set()


def test_a_reply_that_cannot_be_written_is_kept_and_retried(
    make_client: Callable[[str], SyftCoreClient],
    researcher: SyftFlwrRpc,
    datasites_dir: Path,
    events_runner: EventsRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="syft_flwr")
    calls: list[bytes] = []
    do = make_client(DO)
    ev = _events(do, lambda body: calls.append(body) or b"result:" + body)
    mid = "blocked-reply-1"
    folder = datasites_dir / DO / "app_data" / APP / "rpc" / EP / DS
    # A directory sits where the reply must go: every write fails.
    (folder / f"{mid}.response").mkdir(parents=True)
    researcher.send_request(
        DO, EP, b"work", expires_at=time.time() + 60, message_id=mid
    )
    events_runner.start(ev)
    wait_until(lambda: "it is kept and retried" in caplog.text, timeout=10)
    assert calls == [b"work"]
    shutil.rmtree(folder / f"{mid}.response")  # the obstacle goes away
    resp = wait_until(lambda: researcher.response_for(DO, EP, mid), timeout=15)
    assert resp.head.status_code == 200 and resp.body == b"result:work"
    assert calls == [b"work"]  # the result was kept, not recomputed
    # The ledger is marked just after the reply file is written: wait for it.
    wait_until(lambda: ev.ledger.state(mid) == "replied", timeout=5)


def test_the_poll_interval_setting_reaches_the_data_owner(
    make_client: Callable[[str], SyftCoreClient],
) -> None:
    ev = create_events_watcher(
        APP,
        make_client(DO),
        settings=Settings(encryption_enabled=False, poll_interval=0.7),
    )
    assert isinstance(ev, TransportEvents) and ev.poll_interval == 0.7
    ev2 = create_events_watcher(
        APP,
        make_client(DO),
        settings=Settings(encryption_enabled=False, poll_interval=0.7),
        poll_interval=0.3,
    )
    assert (
        isinstance(ev2, TransportEvents) and ev2.poll_interval == 0.3
    )  # explicit wins
    ev.close()
    ev2.close()
