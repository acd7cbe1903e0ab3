"""The data owner's audit trail: durable, bounded, no private values, readable by CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import APP, PLAIN, EventsRunner, wait_until

from syft_flwr.client import SyftCoreClient
from syft_flwr.data_owner.audit import AuditLog, audit_entries, format_audit, read_audit
from syft_flwr.events import TransportEvents
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EVE = "eve@example.org"
EP = "messages"
SECRET = b"private-patient-value-12345"


def test_rotation_keeps_the_trail_bounded(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, max_bytes=2000, keep=2)
    for i in range(200):
        log.record("received", id=f"m{i}", bytes=i)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [
        "audit.1.jsonl",
        "audit.2.jsonl",
        "audit.head.json",
        "audit.jsonl",
        "audit.lock",
    ]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 3 * 2000 + 400
    entries = read_audit(tmp_path)
    ids = [e["id"] for e in entries]
    assert ids[-1] == "m199" and ids == sorted(ids, key=lambda x: int(x[1:]))


def test_torn_line_and_since(tmp_path: Path) -> None:
    now = [1000.0]
    log = AuditLog(tmp_path, clock=lambda: now[0])
    log.record("received", id="a")
    now[0] = 2000.0
    log.record("replied", id="a", status=200, bytes=3)
    with open(tmp_path / "audit.jsonl", "a") as f:
        f.write('{"ts": 3000, "event": "rec')  # crash mid-write
    assert [e["event"] for e in log.entries()] == ["received", "replied"]
    assert [e["event"] for e in log.entries(since=1500.0)] == ["replied"]
    mem = AuditLog(None)
    mem.record("refused", id="x", status=403, reason="unknown sender")
    assert mem.entries()[0]["reason"] == "unknown sender"


def test_a_served_run_and_a_refused_request_are_audited_across_a_restart(
    make_client: Callable[[str], SyftCoreClient],
    events_runner: EventsRunner,
) -> None:
    do = make_client(DO)
    rpcs = {
        who: SyftFlwrRpc(
            make_client(who).make_transport(),
            APP,
            settings=PLAIN,
            policy=PlaintextPolicy(),
        )
        for who in (DS, EVE)
    }

    def make() -> TransportEvents:
        ev = TransportEvents(
            APP, do, settings=PLAIN, poll_interval=0.25, allowed_senders=[DS]
        )
        ev.drain_timeout = 0.0
        ev.on_request(EP, lambda body: b"update of " + str(len(body)).encode())
        return ev

    try:
        first = make()
        events_runner.start(first)
        good = rpcs[DS].send_request(DO, EP, SECRET, expires_at=time.time() + 60)
        wait_until(lambda: rpcs[DS].response_for(DO, EP, good), timeout=10)
        bad = rpcs[EVE].send_request(DO, EP, b"let me in", expires_at=time.time() + 60)
        wait_until(lambda: rpcs[EVE].response_for(DO, EP, bad), timeout=10)
        events_runner.stop(first)
        first.transport.close()
        # a restart: the trail is still there, and grows
        second = make()
        events_runner.start(second)
        again = rpcs[DS].send_request(DO, EP, b"x", expires_at=time.time() + 60)
        wait_until(lambda: rpcs[DS].response_for(DO, EP, again), timeout=10)
        events_runner.stop(second)
    finally:
        for r in rpcs.values():
            r.transport.close()
    entries = audit_entries(do)
    by_id: dict[str, list[str]] = {}
    for e in entries:
        by_id.setdefault(e["id"], []).append(e["event"])
    assert by_id[good] == ["received", "run", "replied"]
    assert by_id[again] == ["received", "run", "replied"]
    assert by_id[bad] == ["refused"]
    refused = next(e for e in entries if e["id"] == bad)
    assert refused["sender"] == EVE and refused["status"] == 403
    assert "not an allowed sender" in refused["reason"]
    run = next(e for e in entries if e["id"] == good and e["event"] == "run")
    assert run["sender"] == DS and run["end"] >= run["start"] and run["status"] == 200
    replied = next(e for e in entries if e["id"] == good and e["event"] == "replied")
    assert replied["bytes"] == len(b"update of 27")
    # sizes and names only: the private value never reaches the trail
    audit_dir = do.state_dir("audit")
    assert audit_dir is not None
    raw = b"".join(p.read_bytes() for p in Path(audit_dir).iterdir())
    assert SECRET not in raw
    table = format_audit(entries)
    assert "refused" in table and "\x1b[" not in table


@pytest.mark.slow
def test_cli_audit_after_a_simulated_run(tmp_path: Path) -> None:
    toy = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
    work = tmp_path / "work"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "syft_flwr",
            "simulate",
            str(toy),
            "-n",
            "2",
            "--workdir",
            str(work),
            "--run-config",
            "num-server-rounds=1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    conf = work / "configs" / "do1@example.org.json"
    out = subprocess.run(
        [sys.executable, "-m", "syft_flwr", "audit", "--config", str(conf), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    runs = [e for e in entries if e["event"] == "run"]
    # one round: train and evaluate, then the researcher's stop signal
    assert sorted(e["message_type"] for e in runs) == ["evaluate", "system", "train"]
    runs = [e for e in runs if e["message_type"] != "system"]
    assert all(
        e["outcome"] == "ok" and e["sender"] == "researcher@example.org" for e in runs
    )
    assert all(e.get("fingerprint") for e in entries if e["event"] == "received")
    text = subprocess.run(
        [
            sys.executable,
            "-m",
            "syft_flwr",
            "audit",
            "--config",
            str(conf),
            "--since",
            "1h",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert (
        text.returncode == 0 and "replied" in text.stdout and "\x1b[" not in text.stdout
    )
    # the trail the real run wrote is chained, MACed and complete
    verified = subprocess.run(
        [sys.executable, "-m", "syft_flwr", "audit", "--config", str(conf), "--verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit trail intact" in verified.stdout
