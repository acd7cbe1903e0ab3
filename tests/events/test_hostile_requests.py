"""The bad-input corpus, part 2: hostile files in a data owner's request folder.

Real SyftBox folders, real watchdog, the events loop in a thread. For every case:
the loop does not crash, the reason is logged, the handler never runs on the
hostile file, and a genuine request sent afterwards is still answered.
"""

from __future__ import annotations

import json
import logging
import os
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import APP, PLAIN, EventsRunner, wait_until

from syft_flwr.client import SyftCoreClient
from syft_flwr.errors import UnsafeFileError
from syft_flwr.events import TransportEvents
from syft_flwr.wire.envelope import (
    MAX_HEAD_BYTES,
    PlainCodec,
    SealContext,
    encode_message,
    format_time,
)
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"


def _head(mid: str, body: bytes = b"hello") -> dict:
    ctx = SealContext(
        message_id=mid,
        sender=DS,
        recipient=DO,
        app=APP,
        endpoint=EP,
        kind="request",
        expires=format_time(time.time() + 600),
    )
    head, chunks = encode_message(
        ctx=ctx,
        url=f"syft://{DO}/app_data/{APP}/rpc/{EP}",
        body=body,
        created=format_time(time.time()),
        codec=PlainCodec(),
        chunk_size=PLAIN.chunk_size,
        inline_limit=PLAIN.inline_limit,
    )
    assert chunks == []
    return json.loads(head)


def _folder(datasites: Path) -> Path:
    d = datasites / DO / "app_data" / APP / "rpc" / EP / DS
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_json(folder: Path, name: str, doc: object) -> None:
    (folder / name).write_bytes(json.dumps(doc).encode())


# Each case plants files in the researcher's request folder and returns the id
# that must never run (its answer, if any, must be a refusal).
Plant = Callable[[Path, Path], str]


def _plant_head(mutate: Callable[[dict], object]) -> Plant:
    def plant(folder: Path, tmp: Path) -> str:
        mid = str(uuid.uuid4())
        out = mutate(_head(mid))
        data = out if isinstance(out, bytes) else json.dumps(out).encode()
        (folder / f"{mid}.request").write_bytes(data)
        return mid

    return plant


def _symlink_to(target_of: Callable[[Path], Path]) -> Plant:
    def plant(folder: Path, tmp: Path) -> str:
        mid = str(uuid.uuid4())
        os.symlink(target_of(tmp), folder / f"{mid}.request")
        return mid

    return plant


def _outside_request(tmp: Path) -> Path:
    # A perfectly valid request, but outside the datasites: never to be executed.
    p = tmp / "outside.request"
    p.write_bytes(json.dumps(_head("outside-1", b"run me")).encode())
    return p


def _fifo(folder: Path, tmp: Path) -> str:
    mid = str(uuid.uuid4())
    os.mkfifo(folder / f"{mid}.request")
    return mid


def _directory(folder: Path, tmp: Path) -> str:
    mid = str(uuid.uuid4())
    (folder / f"{mid}.request").mkdir()
    return mid


def _huge_head(folder: Path, tmp: Path) -> str:
    mid = str(uuid.uuid4())
    with open(folder / f"{mid}.request", "wb") as f:
        f.truncate(MAX_HEAD_BYTES + 10)  # sparse: costs no disk
    return mid


def _newline_id(folder: Path, tmp: Path) -> str:
    mid = "abc\ndef"
    _write_json(folder, f"{mid}.request", _head("abc-def"))
    return mid


def _symlinked_folder(folder: Path, tmp: Path) -> str:
    # The whole sender folder replaced by a link to a folder outside.
    outside = tmp / "elsewhere"
    outside.mkdir()
    mid = str(uuid.uuid4())
    (outside / f"{mid}.request").write_bytes(json.dumps(_head(mid)).encode())
    link = folder.parent / "eve@example.org"
    os.symlink(outside, link)
    return mid


def _oversized_chunk(folder: Path, tmp: Path) -> str:
    mid = str(uuid.uuid4())
    doc = _head(mid, b"x" * 10)
    doc["syft_flwr"].update(
        storage="chunks",
        body=None,
        chunks=[{"size": 10, "sha256": "0" * 64}],
    )
    doc["syft_flwr"].pop("body")
    doc["body"] = ""
    with open(folder / f"{mid}.request.000000.chunk", "wb") as f:
        f.truncate(1 << 30)  # a sparse 1 GiB "chunk"
    _write_json(folder, f"{mid}.request", doc)
    return mid


CASES: dict[str, Plant] = {
    "1e999 in the head": _plant_head(
        lambda d: json.dumps(d).replace('"size": 5', '"size": 1e999').encode()
    ),
    "deep nesting": _plant_head(lambda d: b"[" * 200_000 + b"]" * 200_000),
    "NaN size": _plant_head(
        lambda d: json.dumps(d).replace('"size": 5', '"size": NaN').encode()
    ),
    "300,000 chunks": _plant_head(
        lambda d: {
            **d,
            "body": "",
            "syft_flwr": {
                **d["syft_flwr"],
                "storage": "chunks",
                "chunks": [{"size": 1, "sha256": "0" * 64}] * 300_000,
            },
        }
    ),
    "unknown field": _plant_head(lambda d: {**d, "exec": "x"}),
    "size over the limit": _plant_head(
        lambda d: {**d, "syft_flwr": {**d["syft_flwr"], "size": 2**40}}
    ),
    "symlink to /dev/zero": _symlink_to(lambda tmp: Path("/dev/zero")),
    "symlink to a request outside": _symlink_to(_outside_request),
    "FIFO": _fifo,
    "directory": _directory,
    "head over 8 MiB": _huge_head,
    "newline in the id": _newline_id,
    "symlinked sender folder": _symlinked_folder,
    "1 GiB chunk": _oversized_chunk,
}


#: Cases the listing never reports, so the loop never sees them at all.
UNSEEN = {"directory", "symlinked sender folder"}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_hostile_request_file(
    case: str,
    make_client: Callable[[str], SyftCoreClient],
    datasites_dir: Path,
    tmp_path: Path,
    events_runner: EventsRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    do = make_client(DO)
    ds = make_client(DS)
    rpc = SyftFlwrRpc(
        ds.make_transport(), APP, settings=PLAIN, policy=PlaintextPolicy()
    )
    folder = _folder(datasites_dir)
    bad = CASES[case](folder, tmp_path)
    ran: list[bytes] = []

    def handler(body: bytes) -> bytes:
        ran.append(body)
        return b"ok:" + body

    ev = TransportEvents(APP, do, settings=PLAIN, poll_interval=0.25)
    ev.drain_timeout = 0.0
    ev.on_request(EP, handler)
    caplog.set_level(logging.INFO, logger="syft_flwr")
    tracemalloc.start()
    try:
        events_runner.start(ev)
        # the genuine request still gets its answer
        good = rpc.send_request(DO, EP, b"genuine", expires_at=time.time() + 60)
        resp = wait_until(lambda: rpc.response_for(DO, EP, good), timeout=15)
        assert resp.head.status_code == 200 and resp.body == b"ok:genuine"
        time.sleep(0.6)  # a rescan or two over the hostile file
        assert ran == [b"genuine"], f"{case}: the hostile file ran"
        assert ev.is_running, f"{case}: the loop died"
        log = caplog.text
        assert "unexpected error" not in log, log
        assert "Traceback" not in log, log
        # the reason is logged in words (refused, ignored, or not a regular file)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 64 * 1024 * 1024, f"{case}: {peak} bytes allocated"
        answer = folder / f"{bad}.response"
        if answer.is_file():  # a refusal, never a result
            assert json.loads(answer.read_bytes())["status_code"] in (400, 403)
        if case in UNSEEN:
            # Never listed (not a file, or behind a folder link that listing
            # does not follow): nothing to refuse, and no reply is written.
            assert not answer.exists()
        else:
            assert any(
                w in log
                for w in ("refused request", "ignored a request file", "not read")
            ), log
    finally:
        tracemalloc.stop()
        rpc.transport.close()


def test_read_limited_refuses_links_fifos_and_oversize(
    make_client: Callable[[str], SyftCoreClient], datasites_dir: Path, tmp_path: Path
) -> None:
    t = make_client(DO).make_transport()
    base = datasites_dir / DO / "x"
    base.mkdir(parents=True)
    (base / "ok").write_bytes(b"12345")
    assert t.read_limited(f"{DO}/x/ok", 5) == b"12345"
    with pytest.raises(UnsafeFileError, match="more than the 4"):
        t.read_limited(f"{DO}/x/ok", 4)
    os.symlink("/dev/zero", base / "zero")
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        t.read_limited(f"{DO}/x/zero", 100)
    os.mkfifo(base / "fifo")
    started = time.monotonic()
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        t.read_limited(f"{DO}/x/fifo", 100)
    assert time.monotonic() - started < 5  # never blocks on a FIFO
    t.close()
