"""Integration tests against a real SyftBox 0.4.0 network (server + 3 clients).

The researcher ``ds`` sends a request into its local copy of the data owner ``do1``'s
datasite; it must reach ``do1`` only through the loopback server, ``do1``'s response
must come back, and the third datasite ``do2`` must see neither. Run with
``pytest -s -m syftbox`` to see the measured timings.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syft_flwr.testing.syftbox_network import (
    SyftBoxNetwork,
    SyftBoxUnavailable,
    ensure_syftbox_venv,
)

pytestmark = [pytest.mark.syftbox, pytest.mark.timeout(180)]

DS = "ds@example.org"
DO1 = "do1@example.org"
DO2 = "do2@example.org"
APP = "x"
RPC_REL = f"app_data/{APP}/rpc"  # inside do1's datasite
MSG_REL = f"{RPC_REL}/msg/{DS}"  # where ds's requests to do1 live

HOP_TIMEOUT = 20.0  # one sync hop is ~1-2.5 s; generous for a loaded 2-core CI box
ABSENCE_WAIT = 4.0  # >= 3 sync cycles of the 0.4.0 client (1 s each)

# Old-format (Python SyftBox 0.4.0) permission file: everyone may read/create/write
# inside ``<endpoint>/<own email>/``. The 0.4.0 server ignores ``syft.pub.yaml``.
RPC_SYFTPERM = """\
- path: '*/{useremail}/*'
  user: '*'
  permissions: [read, create, write]
"""

TIMINGS: dict[str, float] = {}


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via ``*.tmp`` + rename so the sync client never uploads a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rpc_message(
    sender: str, rid: str, body: str, *, status: int | None = None
) -> bytes:
    msg = {
        "id": rid,
        "sender": sender,
        "url": f"syft://{DO1}/{RPC_REL}/msg",
        "body": body,
        "headers": {},
        "created": "2026-01-01T00:00:00+00:00",
        "expires": "2099-01-01T00:00:00+00:00",
    }
    if status is None:
        msg["method"] = "POST"
    else:
        msg["status_code"] = status
    return json.dumps(msg).encode()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyftBoxNetwork]:
    t0 = time.monotonic()
    try:
        venv = ensure_syftbox_venv()
    except SyftBoxUnavailable as exc:
        pytest.skip(f"syftbox==0.4.0 could not be installed: {exc.reason}")
    TIMINGS["venv_check_s"] = time.monotonic() - t0
    net = SyftBoxNetwork(tmp_path_factory.mktemp("syftbox"), [DS, DO1, DO2], venv=venv)
    net.start()
    assert net.startup_seconds is not None
    TIMINGS["startup_s"] = net.startup_seconds
    try:
        yield net
    finally:
        pids = [p.pid for p in net.parties]
        net.stop()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        if TIMINGS:
            print(
                "\n[syftbox timings] "
                + ", ".join(f"{k}={v:.2f}" for k, v in TIMINGS.items())
            )


@pytest.fixture(scope="module")
def rpc_granted(network: SyftBoxNetwork) -> float:
    """do1 grants per-sender access in its ``rpc/``; returns once the server has it."""
    do1 = network.party(DO1)
    t0 = time.monotonic()
    _write_atomic(do1.my_datasite / RPC_REL / "syftperm.yaml", RPC_SYFTPERM.encode())
    network.wait_for_server_file(f"{DO1}/{RPC_REL}/syftperm.yaml", HOP_TIMEOUT)
    TIMINGS["grant_upload_s"] = time.monotonic() - t0
    return time.monotonic()


@pytest.fixture(scope="module")
def round_trip(network: SyftBoxNetwork, rpc_granted: float) -> dict[str, object]:
    """ds -> do1 request, do1 -> ds response; returns ids and timings."""
    ds, do1 = network.party(DS), network.party(DO1)
    rid = str(uuid.uuid4())
    request = _rpc_message(DS, rid, "cGluZw==")
    response = _rpc_message(DO1, rid, "cG9uZw==", status=200)
    req_rel = f"datasites/{DO1}/{MSG_REL}/{rid}.request"
    resp_rel = f"datasites/{DO1}/{MSG_REL}/{rid}.response"

    t0 = time.monotonic()
    _write_atomic(ds.data_dir / req_rel, request)
    got_req = network.wait_for_file(DO1, req_rel, HOP_TIMEOUT, size=len(request))
    t1 = time.monotonic()
    received = got_req.read_bytes()
    _write_atomic(do1.data_dir / resp_rel, response)
    got_resp = network.wait_for_file(DS, resp_rel, HOP_TIMEOUT, size=len(response))
    t2 = time.monotonic()

    TIMINGS["request_hop_s"] = t1 - t0
    TIMINGS["response_hop_s"] = t2 - t1
    TIMINGS["round_trip_s"] = t2 - t0
    return {
        "rid": rid,
        "request": request,
        "received_request": received,
        "response": response,
        "received_response": got_resp.read_bytes(),
        "req_rel": req_rel,
        "resp_rel": resp_rel,
        "sent_at": t0,
    }


def test_client_configs_load_with_syft_core(network: SyftBoxNetwork) -> None:
    from syft_core import Client

    assert [p.email for p in network.parties] == [DS, DO1, DO2]
    data_dirs = {p.data_dir.resolve() for p in network.parties}
    assert len(data_dirs) == 3, "each party must have its own data dir"
    for party in network.parties:
        client = Client.load(party.config_path)
        assert client.email == party.email
        assert Path(client.config.data_dir).resolve() == party.data_dir.resolve()
        assert Path(client.my_datasite).resolve() == party.my_datasite.resolve()
        assert client.my_datasite.is_dir()
        assert str(client.config.server_url).rstrip("/") == network.server_url
        # every party already has everyone's public folder (the readiness criterion)
        for other in (DS, DO1, DO2):
            assert (party.datasite(other) / "public" / "syftperm.yaml").is_file()


def test_one_way_sync_latency(network: SyftBoxNetwork) -> None:
    do1 = network.party(DO1)
    payload = b"hello from do1 " + uuid.uuid4().bytes
    rel = f"datasites/{DO1}/public/ping.txt"
    t0 = time.monotonic()
    _write_atomic(do1.data_dir / rel, payload)
    got_ds = network.wait_for_file(DS, rel, HOP_TIMEOUT, size=len(payload))
    TIMINGS["one_way_s"] = time.monotonic() - t0
    got_do2 = network.wait_for_file(DO2, rel, HOP_TIMEOUT, size=len(payload))
    assert got_ds.read_bytes() == payload
    assert got_do2.read_bytes() == payload


def test_request_response_round_trip(
    network: SyftBoxNetwork, round_trip: dict[str, object]
) -> None:
    assert round_trip["received_request"] == round_trip["request"]
    assert round_trip["received_response"] == round_trip["response"]
    assert json.loads(round_trip["received_response"])["status_code"] == 200  # type: ignore[arg-type]
    # The request travelled through the server, not a shared folder.
    assert (
        network.server_snapshot / DO1 / MSG_REL / f"{round_trip['rid']}.request"
    ).is_file()
    assert network.party(DS).data_dir != network.party(DO1).data_dir
    assert TIMINGS["round_trip_s"] < 2 * HOP_TIMEOUT


def test_third_datasite_does_not_see_the_request(
    network: SyftBoxNetwork, round_trip: dict[str, object]
) -> None:
    do2 = network.party(DO2)
    # Positive control: do2 syncs do1's public data, so absence below means "hidden".
    network.wait_for_file(DO2, f"datasites/{DO1}/public/syftperm.yaml", HOP_TIMEOUT)
    remaining = float(round_trip["sent_at"]) + ABSENCE_WAIT - time.monotonic()  # type: ignore[arg-type]
    if remaining > 0:
        time.sleep(remaining)
    network.check_alive()
    assert not (do2.data_dir / str(round_trip["req_rel"])).exists()
    assert not (do2.data_dir / str(round_trip["resp_rel"])).exists()
    assert not (do2.datasite(DO1) / RPC_REL / "msg").exists()
    assert not (do2.datasite(DO1) / RPC_REL / "syftperm.yaml").exists()


def test_write_without_grant_is_rejected(
    network: SyftBoxNetwork, rpc_granted: float
) -> None:
    ds = network.party(DS)
    local = ds.datasite(DO1) / f"app_data/{APP}/private.request"
    rejected = local.with_name("private.syftrejected.request")
    t0 = time.monotonic()
    _write_atomic(local, b'{"evil": true}')
    deadline = t0 + HOP_TIMEOUT
    while not rejected.exists() and time.monotonic() < deadline:
        network.check_alive()
        time.sleep(0.05)
    TIMINGS["rejection_s"] = time.monotonic() - t0
    assert rejected.is_file(), f"no *.syftrejected.* file next to {local}"
    assert rejected.read_bytes() == b'{"evil": true}'
    assert not local.exists()
    time.sleep(ABSENCE_WAIT)
    assert not (
        network.party(DO1).my_datasite / f"app_data/{APP}/private.request"
    ).exists()
    assert not (
        network.server_snapshot / DO1 / f"app_data/{APP}/private.request"
    ).exists()


def test_file_size_limit(network: SyftBoxNetwork) -> None:
    do1 = network.party(DO1)
    small = os.urandom(3_900_000)
    big = os.urandom(12_000_000)
    small_rel = f"datasites/{DO1}/public/small.bin"
    big_rel = f"datasites/{DO1}/public/big.bin"
    t0 = time.monotonic()
    _write_atomic(do1.data_dir / big_rel, big)
    _write_atomic(do1.data_dir / small_rel, small)
    got = network.wait_for_file(DS, small_rel, 2 * HOP_TIMEOUT, size=len(small))
    TIMINGS["3.9MB_one_way_s"] = time.monotonic() - t0
    assert got.read_bytes() == small
    time.sleep(ABSENCE_WAIT)
    network.check_alive()
    assert not (network.party(DS).data_dir / big_rel).exists()
    assert not (network.server_snapshot / DO1 / "public/big.bin").exists()
    assert (do1.data_dir / big_rel).stat().st_size == len(big), (
        "big file must stay local"
    )
    assert "larger than 10MB" in do1.log_path.read_text(errors="replace")
