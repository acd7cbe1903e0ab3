"""Helpers shared by the syft_flwr test-suite (imported by tests; not a test module).

Everything here runs against real folders and the real watchdog: the helpers only
build SyftBox identities on a shared data dir, run events loops in threads, and
wait on conditions with a deadline (never a long fixed sleep).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from syft_core import Client
from syft_core.config import SyftClientConfig

from syft_flwr.client import SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes

T = TypeVar("T")

#: Unreachable server URL: nothing in these tests talks to a SyftBox server.
SERVER_URL = "http://127.0.0.1:9"
APP = "flwr/test_app"
RESEARCHER = "ds@example.org"
DATA_OWNERS = ("do1@example.org", "do2@example.org", "do3@example.org")

#: Plaintext, with a quick fallback rescan (events are still the primary signal).
PLAIN = Settings(encryption_enabled=False, poll_interval=0.25)
#: Encrypted (the default of the package), quick rescan.
ENCRYPTED = Settings(encryption_enabled=True, poll_interval=0.25)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.005,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def make_syft_client(root: Path, email: str) -> SyftCoreClient:
    """A SyftBox identity whose data dir ``<root>/SyftBox`` is shared by every party."""
    cfg = SyftClientConfig(
        path=root / "configs" / f"{email}.json",
        data_dir=root / "SyftBox",
        email=email,
        server_url=SERVER_URL,
    )
    cfg.save()
    return SyftCoreClient(Client(cfg))


def files_under(folder: Path) -> list[Path]:
    """All regular files below ``folder`` (recursive, sorted)."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file())


# -- Flower message helpers ----------------------------------------------------------


def config_of(msg: Message, name: str = "config") -> dict[str, Any]:
    return dict(msg.content.config_records[name])


def echo_reply(msg: Message, owner: str) -> Message:
    """A reply that proves who answered which request (used as ClientApp stand-in)."""
    cfg = config_of(msg) if "config" in msg.content.config_records else {}
    content = RecordDict(
        {
            "echo": ConfigRecord(
                {
                    "owner": owner,
                    "request_type": msg.metadata.message_type,
                    "request_group": msg.metadata.group_id,
                    **{f"in_{k}": v for k, v in cfg.items()},
                }
            ),
            "metrics": MetricRecord({"num-examples": 1}),
        }
    )
    # Keep arrays (large-message tests): the reply carries the request's arrays back.
    for key, rec in msg.content.array_records.items():
        content[key] = rec
    return Message(content, reply_to=msg)


@dataclass
class OwnerLog:
    """What a data owner's handler saw."""

    email: str
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, msg: Message) -> None:
        with self.lock:
            self.messages.append(msg)

    def snapshot(self) -> list[Message]:
        with self.lock:
            return list(self.messages)


def flower_handler(
    owner: str, log: OwnerLog | None = None, *, fail: bool = False
) -> Callable[[bytes], bytes]:
    """A ``MessageHandler`` that decodes a Flower message and answers like a ClientApp."""

    def handler(body: bytes) -> bytes:
        msg = bytes_to_flower_message(body)
        if log is not None:
            log.add(msg)
        if fail:
            raise RuntimeError(f"client app of {owner} failed on purpose")
        return flower_message_to_bytes(echo_reply(msg, owner))

    return handler


# -- running events loops ---------------------------------------------------------------


class EventsRunner:
    """Start ``TransportEvents`` loops in threads; stop and join them at teardown."""

    def __init__(self) -> None:
        self._running: list[tuple[TransportEvents, threading.Thread]] = []

    def start(
        self, events: TransportEvents, *, wait_ready: bool = True
    ) -> threading.Thread:
        t = threading.Thread(target=events.run_forever, daemon=True, name="events")
        t.start()
        self._running.append((events, t))
        if wait_ready:
            wait_until(
                lambda: events.is_running, timeout=5, message="events loop start"
            )
            # run_forever prepares every endpoint (permission files, watch) first.
            wait_until(
                lambda: bool(events._watches) or not t.is_alive(),  # noqa: SLF001
                timeout=5,
                message="events watches",
            )
        return t

    def stop(self, events: TransportEvents, timeout: float = 5.0) -> None:
        for ev, t in list(self._running):
            if ev is events:
                ev.stop()
                t.join(timeout)
                assert not t.is_alive(), "run_forever did not stop"
                self._running.remove((ev, t))

    def stop_all(self) -> None:
        for ev, _t in self._running:
            ev.stop()
        for ev, t in self._running:
            t.join(5)
            ev.transport.close()
        self._running.clear()


@contextmanager
def running(runner: EventsRunner, events: TransportEvents) -> Iterator[TransportEvents]:
    runner.start(events)
    try:
        yield events
    finally:
        runner.stop(events)
