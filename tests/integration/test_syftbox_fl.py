"""Federated learning over a real SyftBox 0.4.0 network (server + 4 sync clients).

The researcher ``ds`` and the data owners ``do1``-``do3`` each have their own SyftBox
client and data dir; files move between them only through the loopback server.
Every party is a ``python -m syft_flwr party ...`` process with encryption on (the
default). Checked here:

* ``examples/fedavg_tabular`` runs to the end and its final model equals the one of
  the local-folder simulation (same app, run config and partition ids);
* a data owner never receives another pair's requests or replies;
* a model larger than SyftBox 0.4.0's 10 MB per-file limit crosses in both directions,
  while no file anywhere exceeds the 4 MiB chunk size;
* a researcher started before its data owners waits for them (readiness).

The last test (no network needed) is a regression test for a data-owner bug first
seen in every job here (a spurious 409 reply during the researcher's clean-up). The shared job runner and network monitor
live in ``assets/syftbox_fl_jobs.py`` (also used by ``benchmarks/bench_syftbox.py``).

Run with ``pytest -s -m syftbox tests/integration/test_syftbox_fl.py`` to see the
measured timings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from syft_flwr.client.syft_core_client import SyftCoreClient
from syft_flwr.crypto.keys import fingerprint, load_public_bundle
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.simulation import prepare_network
from syft_flwr.testing.syftbox_network import (
    SyftBoxNetwork,
    SyftBoxUnavailable,
    ensure_syftbox_venv,
)
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

ASSETS = Path(__file__).resolve().parent / "assets"
if str(ASSETS) not in sys.path:
    sys.path.insert(0, str(ASSETS))

from syftbox_fl_jobs import (  # noqa: E402
    JobResult,
    per_round_seconds,
    result_line,
    run_job,
    simulate_with_marks,
    unique_app_name,
    wire_app,
)

pytestmark = [pytest.mark.syftbox, pytest.mark.timeout(300)]

DS = "ds@example.org"
DO1, DO2, DO3 = "do1@example.org", "do2@example.org", "do3@example.org"
DATA_OWNERS = (DO1, DO2, DO3)

REPO = Path(__file__).resolve().parents[2]
FEDAVG_APP = REPO / "examples" / "fedavg_tabular"
BIG_APP = ASSETS / "bigmodel_app"

ROUNDS = 2
RUN_CONFIG = f"num-server-rounds={ROUNDS} round-timeout=60"
JOB_TIMEOUT = 150.0  # seconds for one whole job; it takes ~22 s on a 2-core box
ABSENCE_WAIT = 4.0  # >= 3 sync cycles of the 0.4.0 client (1 s each)
HOP_TIMEOUT = 20.0

CHUNK_SIZE = 4 * 1024 * 1024  # syft_flwr's default SYFT_FLWR_CHUNK_SIZE
SYFTBOX_LIMIT = 10 * 1000 * 1000  # 0.4.0 refuses (silently) larger uploads
# Exact float equality is not expected: FedAvg sums replies in arrival order.
RTOL, ATOL = 1e-10, 1e-12

TIMINGS: dict[str, float] = {}


def _fmt_rounds(rounds: list[float]) -> str:
    return "/".join(f"{r:.2f}" for r in rounds)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyftBoxNetwork]:
    try:
        venv = ensure_syftbox_venv()
    except SyftBoxUnavailable as exc:
        pytest.skip(f"syftbox==0.4.0 could not be installed: {exc.reason}")
    net = SyftBoxNetwork(
        tmp_path_factory.mktemp("syftbox_fl"), [DS, *DATA_OWNERS], venv=venv
    )
    net.start()
    assert net.startup_seconds is not None
    TIMINGS["network_startup_s"] = net.startup_seconds
    try:
        yield net
    finally:
        net.stop()
        if TIMINGS:
            print(
                "\n[syftbox fl timings] "
                + ", ".join(f"{k}={v:.2f}" for k, v in TIMINGS.items())
            )


@pytest.fixture(scope="module")
def fedavg_job(
    network: SyftBoxNetwork, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JobResult]:
    """examples/fedavg_tabular: researcher + 3 data owners, over SyftBox only."""
    if not (FEDAVG_APP / "pyproject.toml").is_file():
        pytest.fail(f"example app missing: {FEDAVG_APP}")
    job = run_job(
        network,
        FEDAVG_APP,
        tmp_path_factory.mktemp("fedavg_job"),
        researcher=DS,
        data_owners=DATA_OWNERS,
        app_name=unique_app_name("fedavg"),
        run_config=RUN_CONFIG,
        timeout=JOB_TIMEOUT,
    )
    TIMINGS["fedavg_job_s"] = job.seconds
    assert job.monitor.marks is not None
    rounds = per_round_seconds(job.monitor.marks.marks)
    for i, r in enumerate(rounds, 1):
        TIMINGS[f"syftbox_round{i}_s"] = r
    # Keep watching for a few more sync cycles after the run: late copies count too.
    job.extra["watch_until"] = time.monotonic() + ABSENCE_WAIT
    try:
        yield job
    finally:
        job.monitor.stop()


@pytest.fixture(scope="module")
def fedavg_sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[float]]:
    """The same app and run config on local folders (``simulate``, 3 data owners)."""
    result, marks = simulate_with_marks(
        FEDAVG_APP,
        len(DATA_OWNERS),
        tmp_path_factory.mktemp("fedavg_sim"),
        run_config=RUN_CONFIG,
        timeout=JOB_TIMEOUT,
    )
    rounds = per_round_seconds(marks)
    TIMINGS["fedavg_sim_s"] = result.seconds
    for i, r in enumerate(rounds, 1):
        TIMINGS[f"sim_round{i}_s"] = r
    return result, rounds


def _wait_after_run(job: JobResult) -> None:
    remaining = float(job.extra["watch_until"]) - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    job.monitor.net.check_alive()
    job.monitor.scan()


# ---------------------------------------------------------------- 1. FL job
def test_fedavg_job_runs_over_syftbox(fedavg_job: JobResult) -> None:
    job = fedavg_job
    assert not job.timed_out, job.report()
    for party in job.parties:
        assert party.returncode == 0, f"{party.email} failed\n" + job.report()
    result = job.result()
    assert result is not None, "no SYFT_FLWR_RESULT line\n" + job.report()
    assert result["rounds"] == ROUNDS
    assert 0.0 <= result["accuracy"] <= 1.0
    assert (job.researcher.output_dir / "final_model.npz").is_file()
    for party in job.parties:
        if party.role == "data-owner":
            assert "the researcher ended the run" in party.log(), party.tail()
    rounds = per_round_seconds(job.monitor.marks.marks)  # type: ignore[union-attr]
    assert len(rounds) == ROUNDS, job.monitor.marks.marks  # type: ignore[union-attr]
    print(f"\n[fedavg over SyftBox] {result} rounds(s)={_fmt_rounds(rounds)}")


def test_fedavg_model_equals_local_simulation(
    fedavg_job: JobResult, fedavg_sim: tuple[Any, list[float]]
) -> None:
    sim, sim_rounds = fedavg_sim
    assert sim.ok, "\n".join(
        f"--- {p.email} exit={p.returncode} ---\n{sim.log(p.email)[-3000:]}"
        for p in sim.parties
    )
    assert fedavg_job.ok, fedavg_job.report()
    net_model = np.load(fedavg_job.researcher.output_dir / "final_model.npz")
    sim_model = np.load(
        sim.workdir / "outputs" / sim.researcher.email / "final_model.npz"
    )
    assert sorted(net_model.files) == sorted(sim_model.files)
    for name in net_model.files:
        np.testing.assert_allclose(
            net_model[name], sim_model[name], rtol=RTOL, atol=ATOL, err_msg=name
        )
    net_result = fedavg_job.result()
    sim_result = result_line(sim.log(sim.researcher.email))
    assert net_result is not None and sim_result is not None
    assert net_result["accuracy"] == sim_result["accuracy"]
    assert net_result["rounds"] == sim_result["rounds"] == ROUNDS
    print(
        f"\n[model] syftbox sha={net_result['weights_sha256']} "
        f"simulation sha={sim_result['weights_sha256']} "
        f"sim rounds(s)={_fmt_rounds(sim_rounds)}"
    )


def test_messages_are_encrypted_on_the_wire(fedavg_job: JobResult) -> None:
    for owner in DATA_OWNERS:
        for viewer in (DS, owner):
            head = fedavg_job.monitor.heads.get((viewer, owner))
            assert head is not None, f"{viewer} never had a readable request to {owner}"
            assert head.get("encryption"), (
                f"plaintext request {viewer}->{owner}: {head}"
            )
            assert head["encryption"].get("alg")


def test_temp_files_are_written_outside_the_synced_folders(
    network: SyftBoxNetwork, fedavg_job: JobResult
) -> None:
    """Every party wrote through ``datasites/.syft-flwr.tmp``; the client never synced it.

    The temp folder keeps watchdog from stalling (docs/syftbox.md, "Why writes
    look like this"); SyftBox 0.4.0 must ignore it (``/.syft*``).
    """
    from syft_flwr.transports._syftbox_write import TMP_DIR

    # A temp file lives for microseconds; a file left in the folder (a crash,
    # and a name without ".tmp") shows that the folder itself is never synced.
    left = network.party(DO1).datasites / TMP_DIR / "left.request"
    left.write_bytes(b"left behind by a crash")
    _wait_after_run(fedavg_job)
    time.sleep(ABSENCE_WAIT)  # several sync cycles of the 1 s client
    for email in (DS, *DATA_OWNERS):
        assert (network.party(email).datasites / TMP_DIR).is_dir(), email
    for email in (DS, DO2):
        assert not (network.party(email).datasites / TMP_DIR / left.name).exists()
    server = network.server_snapshot
    assert not list(server.rglob(f"{TMP_DIR}*")), "the temp folder reached the server"
    assert not list(server.rglob("*.tmp")), "a temp file reached the server"
    assert not list(server.rglob(left.name)), "the left-over file reached the server"


# ---------------------------------------------------------------- 2. permissions
def test_third_datasite_never_sees_another_pairs_messages(
    network: SyftBoxNetwork, fedavg_job: JobResult
) -> None:
    mon = fedavg_job.monitor
    _wait_after_run(fedavg_job)
    assert mon.scans >= 20, f"monitor polled only {mon.scans} times"
    assert not mon.errors, mon.errors
    app = wire_app(fedavg_job.app_name)
    for owner in DATA_OWNERS:
        # The grants are private to their owner, even for the requester.
        ds_rpc = network.party(DS).datasite(owner) / "app_data" / app / "rpc"
        assert (ds_rpc / "rpc.schema.json").is_file()
        assert not (ds_rpc / "syftperm.yaml").exists()
        assert not (ds_rpc / "syft.pub.yaml").exists()
        # Positive controls: the pair itself saw the traffic ...
        assert mon.visible_to(owner, owner), f"{owner} never saw its own requests"
        assert mon.visible_to(DS, owner), f"{DS} never saw its requests to {owner}"
        for viewer in DATA_OWNERS:
            if viewer == owner:
                continue
            # ... and the third datasite syncs the owner's world-readable schema,
            rpc = network.party(viewer).datasite(owner) / "app_data" / app / "rpc"
            assert (rpc / "rpc.schema.json").is_file(), (
                f"{viewer} does not sync {owner}'s app folder at all"
            )
            # ... but never a request or reply of the ds<->owner pair.
            leaked = mon.visible_to(viewer, owner)
            assert not leaked, f"{viewer} saw {owner}<->{DS} files: {sorted(leaked)}"
            folder = mon.messages_dir(viewer, owner)
            files = (
                [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
            )
            assert not files, f"{viewer} holds {files}"
            # The grant itself is private to its owner.
            assert not (rpc / "syftperm.yaml").exists()
    mon.stop()  # the later tests do not need it; spare the CPU


def test_third_datasite_cannot_write_into_another_pairs_folder(
    network: SyftBoxNetwork, fedavg_job: JobResult
) -> None:
    do2 = network.party(DO2)
    app = wire_app(fedavg_job.app_name)
    rel = f"app_data/{app}/rpc/messages/{DS}"
    forged = do2.datasite(DO1) / rel / "forged.request"
    forged.parent.mkdir(parents=True, exist_ok=True)
    tmp = forged.with_name("forged.request.tmp")
    tmp.write_bytes(b'{"forged": true}')
    os.replace(tmp, forged)
    rejected = forged.with_name("forged.syftrejected.request")
    deadline = time.monotonic() + HOP_TIMEOUT
    while not rejected.exists() and time.monotonic() < deadline:
        network.check_alive()
        time.sleep(0.05)
    assert rejected.is_file(), f"do2's forged request next to {forged} was not rejected"
    time.sleep(ABSENCE_WAIT)
    assert not (network.party(DO1).datasite(DO1) / rel / "forged.request").exists()
    assert not (network.party(DS).datasite(DO1) / rel / "forged.request").exists()
    assert not (network.server_snapshot / DO1 / rel / "forged.request").exists()


def test_keys_command_matches_the_published_did(
    network: SyftBoxNetwork, fedavg_job: JobResult
) -> None:
    """``syft_flwr keys`` shows the fingerprint peers compute from the synced DID."""
    ds = network.party(DS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFTBOX_")}
    proc = subprocess.run(
        [sys.executable, "-m", "syft_flwr", "keys", "--config", str(ds.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"fingerprint: ([0-9a-f ]+)", proc.stdout)
    assert m, proc.stdout
    did = json.loads(
        (network.party(DO1).datasite(DS) / "public" / "did.json").read_text()
    )
    assert fingerprint(load_public_bundle(did, email=DS)) == m.group(1).strip()


# ---------------------------------------------------------------- 3. >10 MB model
@pytest.fixture(scope="module")
def big_job(
    network: SyftBoxNetwork, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JobResult]:
    job = run_job(
        network,
        BIG_APP,
        tmp_path_factory.mktemp("big_job"),
        researcher=DS,
        data_owners=(DO1, DO2),
        app_name=unique_app_name("bigmodel"),
        timeout=JOB_TIMEOUT,
        monitor_interval=0.05,
    )
    TIMINGS["big_job_s"] = job.seconds
    try:
        yield job
    finally:
        job.monitor.stop()


def test_big_model_crosses_in_chunks(big_job: JobResult) -> None:
    job = big_job
    assert job.ok, job.report()
    result = job.result()
    assert result is not None, job.report()
    assert result["model_nbytes"] > SYFTBOX_LIMIT
    assert result["num_replies"] == 2, result
    for reply in result["replies"]:
        assert "error" not in reply, reply
        assert reply["received_sha256"] == result["sent_sha256"], "request corrupted"
        assert reply["returned_sha256"] == result["expected_returned_sha256"], (
            "reply corrupted"
        )
        assert reply["returned_nbytes"] == result["model_nbytes"]
    TIMINGS["big_round_trip_s"] = float(result["round_trip_s"])

    mon = job.monitor
    mon.scan()
    assert not mon.errors, mon.errors
    # No file anywhere (any party's datasites, the server) ever exceeded a chunk ...
    assert mon.max_file_size <= CHUNK_SIZE, (
        f"{mon.max_file_path} reached {mon.max_file_size} bytes"
    )
    # ... and the chunks really were there (the monitor would have seen bigger files).
    assert mon.max_file_size > CHUNK_SIZE // 2, mon.max_file_size
    for viewer in (DS, DO1):
        names = mon.visible_to(viewer, DO1)
        req_chunks = [n for n in names if ".request." in n and n.endswith(".chunk")]
        resp_chunks = [n for n in names if ".response." in n and n.endswith(".chunk")]
        # The model went to both data owners through the researcher's shared
        # folder (written once, synced to those two only), not next to the requests.
        assert not req_chunks, (viewer, sorted(names))
        assert len(resp_chunks) >= 3, (viewer, sorted(names))
    for viewer in (DO2, DO3):
        assert not mon.visible_to(viewer, DO1)
    # The shared folder is gone once both answered (on the server too).
    shared = (
        job.monitor.net.server_snapshot
        / DS
        / "app_data"
        / wire_app(job.app_name)
        / "blobs"
    )
    deadline = time.monotonic() + HOP_TIMEOUT
    while time.monotonic() < deadline and any(shared.rglob("*.chunk")):
        time.sleep(0.2)
    assert not any(shared.rglob("*.chunk")), sorted(shared.rglob("*"))
    print(
        f"\n[big model] {result['model_nbytes'] / 1e6:.1f} MB each way, "
        f"round trip {result['round_trip_s']:.2f} s, largest file "
        f"{mon.max_file_size} bytes ({Path(mon.max_file_path).name})"
    )


# ---------------------------------------------------------------- readiness
def test_researcher_started_first_waits_for_the_data_owners(
    network: SyftBoxNetwork, tmp_path: Path
) -> None:
    """The wrong start order still works: requests wait until the owners serve."""
    job = run_job(
        network,
        FEDAVG_APP,
        tmp_path,
        researcher=DS,
        data_owners=DATA_OWNERS,
        app_name=unique_app_name("fedavg_late_owners"),
        run_config="num-server-rounds=1 round-timeout=60",
        timeout=JOB_TIMEOUT,
        researcher_lead=4.0,
    )
    job.monitor.stop()
    TIMINGS["researcher_first_job_s"] = job.seconds
    assert job.ok, job.report()
    result = job.result()
    assert result is not None and result["rounds"] == 1, job.report()
    log = job.researcher.log()
    assert "has not started serving the app" in log, job.researcher.tail()
    assert "rejected" not in log and "refused" not in log, job.researcher.tail()


# ------------------------------------------- regression: spurious 409 during clean-up
def test_answered_request_is_not_answered_again_during_cleanup(
    tmp_path: Path,
) -> None:
    """What the SyftBox 0.4.0 client does to a data owner's folder after a run.

    Seen on every data owner of every job above: the researcher deletes request and
    response; the sync client applies the response deletion first and reads (hashes)
    the request before deleting it. That read must not trigger a new response.
    Deterministic, on local folders (no network needed).
    """
    configs = prepare_network(tmp_path, [DS, DO1], encryption=False)
    ds = SyftCoreClient.load(configs[DS])
    do1 = SyftCoreClient.load(configs[DO1])
    events = TransportEvents("flwr/x", do1, policy=PlaintextPolicy(), poll_interval=60)
    events.on_request("messages", lambda body: b"pong")
    server = threading.Thread(target=events.run_forever, daemon=True)
    server.start()
    try:
        rpc = SyftFlwrRpc(ds.make_transport(), "flwr/x", policy=PlaintextPolicy())
        mid = rpc.send_request(DO1, "messages", b"ping", expires_at=time.time() + 60)
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            reply = rpc.response_for(DO1, "messages", mid)
            time.sleep(0.05)
        assert reply is not None and reply.body == b"pong"
        folder = tmp_path / f"SyftBox/datasites/{DO1}/app_data/flwr/x/rpc/messages/{DS}"
        (folder / f"{mid}.response").unlink()  # clean-up, first half
        (folder / f"{mid}.request").read_bytes()  # the sync client hashes the file
        time.sleep(1.0)
        assert not (folder / f"{mid}.response").exists(), (
            "the data owner answered an already answered request again"
        )
    finally:
        events.stop()
        server.join(timeout=5)
        events.transport.close()
