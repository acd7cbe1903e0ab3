"""In-memory transport specifics: hub isolation, size limit, rejections, the doc example."""

from __future__ import annotations

import doctest
import threading

import pytest

import syft_flwr.transports.memory as memory_module
from syft_flwr.errors import MessageNotFound, PermissionDenied, TransportError
from syft_flwr.transports.memory import MemoryHub, MemoryTransport
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
KEY = f"{DO}/app_data/a/rpc/messages/{DS}/x.request"


def test_module_doctest() -> None:
    result = doctest.testmod(memory_module)
    assert result.attempted > 0 and result.failed == 0


def test_hubs_are_isolated() -> None:
    a, b = MemoryHub(), MemoryHub()
    MemoryTransport(a, DS).put(KEY, b"1")
    with pytest.raises(MessageNotFound):
        MemoryTransport(b, DO).get(KEY)
    assert MemoryTransport(a, DO).get(KEY) == b"1"


def test_max_file_size_is_enforced_and_tracked() -> None:
    hub = MemoryHub(max_file_size=100)
    t = MemoryTransport(hub, DS)
    assert t.max_file_size == 100
    t.put(KEY, b"x" * 100)
    with pytest.raises(TransportError, match="exceeds"):
        t.put(KEY + "2", b"x" * 101)
    assert hub.largest_file == 100
    assert hub.writes == 1
    assert set(hub.snapshot()) == {KEY}


def test_snapshot_is_a_copy() -> None:
    hub = MemoryHub()
    MemoryTransport(hub, DS).put(KEY, b"1")
    snap = hub.snapshot()
    snap.clear()
    assert KEY in hub.snapshot()


def test_rejected_writes_are_invisible_and_reported() -> None:
    hub = MemoryHub(
        reject=lambda writer, key: writer == DS and key.endswith(".request")
    )
    ds = MemoryTransport(hub, DS)
    ds.put(KEY, b"1")
    assert ds.is_rejected(KEY) is True
    assert ds.exists(KEY) is False
    with pytest.raises(MessageNotFound):
        MemoryTransport(hub, DO).get(KEY)
    rpc = SyftFlwrRpc(ds, "a", policy=PlaintextPolicy())
    with pytest.raises(PermissionDenied):
        rpc.response_for(DO, "messages", "x")
    # Other writers are not rejected.
    MemoryTransport(hub, DO).put(KEY, b"2")
    assert ds.get(KEY) == b"2"


def test_callbacks_run_in_the_writers_thread() -> None:
    hub = MemoryHub()
    threads: list[threading.Thread] = []
    MemoryTransport(hub, DO).watch(
        f"{DO}/app_data", lambda k: threads.append(threading.current_thread())
    )
    MemoryTransport(hub, DS).put(KEY, b"1")
    assert threads == [threading.current_thread()]


def test_watch_is_not_called_for_deletes() -> None:
    hub = MemoryHub()
    seen: list[str] = []
    ds = MemoryTransport(hub, DS)
    ds.put(KEY, b"1")
    MemoryTransport(hub, DO).watch(f"{DO}/app_data", seen.append)
    ds.delete(KEY)
    assert seen == []


def test_stored_bytes_are_immutable_copies() -> None:
    hub = MemoryHub()
    buf = bytearray(b"abc")
    MemoryTransport(hub, DS).put(KEY, buf)  # type: ignore[arg-type]
    buf[0] = ord("z")
    assert MemoryTransport(hub, DO).get(KEY) == b"abc"
