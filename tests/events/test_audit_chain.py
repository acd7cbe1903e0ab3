"""Attacks on the audit trail: edit, delete, insert, cut the end, drop old files.

Each is detected by ``syft_flwr audit --verify`` (a real process, exit non-zero,
in words) and reported by ``syft_flwr audit``; an untouched trail verifies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _support import make_syft_client

from syft_flwr.client import SyftCoreClient
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.policy import load_or_create_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.audit import AuditLog, audit_entries, verify_audit
from syft_flwr.data_owner.audit_chain import (
    HEAD_FILE,
    line_hash,
    seal_line,
)
from syft_flwr.data_owner.audit_verify import verify_trail

DO = "do1@example.org"
EVE = "eve@example.org"


@pytest.fixture
def key() -> StateKey:
    return StateKey(generate_keys(), "audit")


def _fill(log: AuditLog, n: int = 6) -> None:
    for i in range(n):
        if i % 2:
            log.record("refused", id=f"m{i}", sender=EVE, status=403, reason="no")
        else:
            log.record("run", id=f"m{i}", sender="ds@x", status=200, outcome="ok")
    log.close()


def _lines(d: Path) -> list[bytes]:
    return (d / "audit.jsonl").read_bytes().splitlines(keepends=True)


def _write(d: Path, lines: list[bytes]) -> None:
    (d / "audit.jsonl").write_bytes(b"".join(lines))


def test_an_untouched_trail_verifies_across_restarts_and_rotation(
    tmp_path: Path, key: StateKey
) -> None:
    for _ in range(3):  # three processes, each going on with the same chain
        log = AuditLog(tmp_path, max_bytes=600, keep=2, key=key)
        _fill(log, 7)
    report = verify_trail(tmp_path, key)
    assert report.status == "intact", report.summary()
    assert report.verified == report.lines > 7 and not report.notes
    # rotated out lines are gone, and that is not reported as tampering
    head = json.loads((tmp_path / HEAD_FILE).read_text())
    seqs = [e["seq"] for e in AuditLog(tmp_path, key=key).entries()]
    assert seqs == list(range(head["first"], head["seq"] + 1)) and seqs[0] > 1
    # the first line of each newer file carries the hash of the previous one's last
    older = (tmp_path / "audit.1.jsonl").read_bytes().splitlines()
    newer = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    assert json.loads(newer[0])["prev"] == line_hash(older[-1])


def test_a_deleted_middle_line_is_detected(tmp_path: Path, key: StateKey) -> None:
    _fill(AuditLog(tmp_path, key=key))
    lines = _lines(tmp_path)
    _write(tmp_path, lines[:2] + lines[3:])  # the refusal of m1... m2 gone
    report = verify_trail(tmp_path, key)
    assert report.status == "tampered"
    assert any("line #4 follows line #2 (lines removed)" in p for p in report.problems)


def test_an_edited_line_is_detected_even_with_a_recomputed_chain(
    tmp_path: Path, key: StateKey
) -> None:
    _fill(AuditLog(tmp_path, key=key))
    lines = _lines(tmp_path)
    # turn the refusal of m1 into a successful run, and re-chain what follows
    # (all an attacker without the data owner's key can do)
    entry = json.loads(lines[1])
    entry.update(event="run", status=200, outcome="ok")
    del entry["mac"], entry["seq"], entry["prev"]
    forged = [lines[0], seal_line(entry, 2, line_hash(lines[0].rstrip()), None) + b"\n"]
    prev = forged[1].rstrip()
    for raw in lines[2:]:
        e = json.loads(raw)
        seq = e.pop("seq")
        e.pop("prev"), e.pop("mac")
        forged.append(seal_line(e, seq, line_hash(prev), None) + b"\n")
        prev = forged[-1].rstrip()
    _write(tmp_path, forged)
    report = verify_trail(tmp_path, key)
    assert report.status == "tampered"
    assert any(
        "line 2 (line #2) was changed, or was not written by this data owner" in p
        for p in report.problems
    )


def test_a_cut_off_end_is_detected_and_stays_detected_after_a_restart(
    tmp_path: Path, key: StateKey
) -> None:
    _fill(AuditLog(tmp_path, key=key))
    _write(tmp_path, _lines(tmp_path)[:-2])
    report = verify_trail(tmp_path, key)
    assert report.status == "tampered"
    assert any("the last 2 line(s) are missing" in p for p in report.problems)
    # the data owner serves again: the next line chains to the head, so the
    # cut stays visible in the trail rather than being papered over
    log = AuditLog(tmp_path, key=key)
    log.record("received", id="m9", sender="ds@x", bytes=3)
    log.close()
    report = verify_trail(tmp_path, key)
    assert any("line #7 follows line #4 (lines removed)" in p for p in report.problems)


def test_removing_the_head_to_hide_a_cut_is_reported(
    tmp_path: Path, key: StateKey, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(AuditLog(tmp_path, key=key))
    _write(tmp_path, _lines(tmp_path)[:-2])
    (tmp_path / HEAD_FILE).unlink()
    report = verify_trail(tmp_path, key)
    assert any(f"head ({HEAD_FILE}) is missing" in p for p in report.problems)
    # restarting does not make it go away silently: the trail records it
    log = AuditLog(tmp_path, key=key)
    log.record("received", id="m9", sender="ds@x", bytes=3)
    log.close()
    assert "head was missing or failed its check" in caplog.text
    events = [e["event"] for e in log.entries()]
    assert events[-2:] == ["head_lost", "received"]


def test_a_forged_head_is_refused(tmp_path: Path, key: StateKey) -> None:
    _fill(AuditLog(tmp_path, key=key))
    _write(tmp_path, _lines(tmp_path)[:-2])
    head = json.loads((tmp_path / HEAD_FILE).read_text())
    head["seq"] -= 2  # hide the cut, without the key to re-MAC the head
    (tmp_path / HEAD_FILE).write_text(json.dumps(head))
    report = verify_trail(tmp_path, key)
    assert report.status == "tampered"
    assert any(
        "head (audit.head.json) failed its integrity" in p for p in report.problems
    )


def test_a_removed_old_file_is_detected(tmp_path: Path, key: StateKey) -> None:
    log = AuditLog(tmp_path, max_bytes=600, keep=3, key=key)
    _fill(log, 20)
    assert (tmp_path / "audit.3.jsonl").exists()
    (tmp_path / "audit.3.jsonl").unlink()
    report = verify_trail(tmp_path, key)
    assert report.status == "tampered"
    assert any("older lines or files were removed" in p for p in report.problems)


def test_an_inserted_unchained_line_is_detected(tmp_path: Path, key: StateKey) -> None:
    _fill(AuditLog(tmp_path, key=key))
    lines = _lines(tmp_path)
    fake = json.dumps({"ts": 1, "event": "run", "sender": EVE, "outcome": "ok"})
    _write(tmp_path, lines[:3] + [fake.encode() + b"\n"] + lines[3:])
    report = verify_trail(tmp_path, key)
    assert any("has no chain fields: it was inserted" in p for p in report.problems)


def test_a_torn_last_line_is_dropped_and_the_chain_goes_on(
    tmp_path: Path, key: StateKey, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(AuditLog(tmp_path, key=key))
    with open(tmp_path / "audit.jsonl", "ab") as f:
        f.write(b'{"event": "rec')  # a crash mid-write
    assert verify_trail(tmp_path, key).status == "intact"  # noted, not tampering
    log = AuditLog(tmp_path, key=key)
    log.record("received", id="m9", sender="ds@x", bytes=3)
    log.close()
    assert "removed a torn last line" in caplog.text
    report = verify_trail(tmp_path, key)
    assert report.status == "intact" and report.lines == 7


def test_an_old_untagged_trail_is_unverifiable_not_intact(
    tmp_path: Path, key: StateKey
) -> None:
    (tmp_path / "audit.jsonl").write_text(
        json.dumps({"ts": 1, "event": "run", "id": "old"}) + "\n"
    )
    report = verify_trail(tmp_path, key)
    assert report.status == "unverifiable"
    assert "cannot be verified" in report.summary()
    log = AuditLog(tmp_path, key=key)  # an upgraded data owner goes on chained
    log.record("received", id="new", sender="ds@x", bytes=3)
    log.close()
    report = verify_trail(tmp_path, key)
    assert (report.status, report.legacy, report.verified) == ("unverifiable", 1, 1)


def test_fake_old_lines_put_in_front_of_the_chain_are_detected(
    tmp_path: Path, key: StateKey
) -> None:
    """Rows with no chain fields pass for an older syft_flwr's: not in front of
    a chain that began without them (the head counted them at its start)."""
    (tmp_path / "audit.jsonl").write_text(
        json.dumps({"ts": 1, "event": "run", "id": "old"}) + "\n"
    )
    _fill(AuditLog(tmp_path, key=key))  # an upgraded data owner: one old line
    assert verify_trail(tmp_path, key).status == "unverifiable"
    fake = json.dumps({"ts": 2, "event": "run", "sender": EVE, "outcome": "ok"})
    _write(tmp_path, [fake.encode() + b"\n", *_lines(tmp_path)])
    report = verify_trail(tmp_path, key)
    assert report.status == "tampered"
    assert any(
        "1 line(s) with no chain fields were added in front of the chain" in p
        for p in report.problems
    )


def test_without_a_key_the_chain_is_checked_and_the_gap_is_said(
    tmp_path: Path,
) -> None:
    _fill(AuditLog(tmp_path))
    report = verify_trail(tmp_path, None)
    assert report.status == "unverifiable" and report.verified == 6
    assert any("no identity key" in n for n in report.notes)


def test_a_trail_begun_before_the_keys_existed_is_unverifiable_not_tampered(
    tmp_path: Path, key: StateKey, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(AuditLog(tmp_path))  # serving in plaintext, no keys yet
    _fill(AuditLog(tmp_path, key=key), 3)  # then keys: the chain goes on MACed
    assert "head" not in caplog.text  # the unkeyed head was taken over quietly
    report = verify_trail(tmp_path, key)
    assert report.status == "unverifiable", report.summary()
    assert (report.unauthenticated, report.verified) == (6, 3)
    assert any("before this data owner had keys" in n for n in report.notes)
    # from then on every line needs a MAC: one without is not passed off as old
    lines = _lines(tmp_path)
    e = json.loads(lines[-1])
    del e["mac"]
    lines[-1] = seal_line(
        {k: v for k, v in e.items() if k not in ("seq", "prev")},
        e["seq"],
        e["prev"],
        None,
    )
    lines[-1] += b"\n"
    _write(tmp_path, lines)
    report = verify_trail(tmp_path, key)
    assert report.status == "tampered"
    assert any("line 9 (line #9) was changed" in p for p in report.problems)


def test_a_head_without_a_mac_is_refused_once_lines_carry_one(
    tmp_path: Path, key: StateKey, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(AuditLog(tmp_path, key=key))
    _write(tmp_path, _lines(tmp_path)[:-2])  # cut the end ...
    head = json.loads((tmp_path / HEAD_FILE).read_text())
    del head["mac"]
    head["seq"] -= 2  # ... and hide it with a head "from before the keys"
    head["hash"] = line_hash(_lines(tmp_path)[-1].rstrip(b"\n"))
    (tmp_path / HEAD_FILE).write_text(json.dumps(head))
    report = verify_trail(tmp_path, key)
    assert any("carries no MAC although its lines do" in p for p in report.problems)
    log = AuditLog(tmp_path, key=key)  # the writer does not take it either
    log.record("received", id="m9", sender="ds@x", bytes=3)
    log.close()
    assert "carries no MAC although its lines do" in caplog.text
    assert [e["event"] for e in log.entries()][-2:] == ["head_lost", "received"]


# -- through the command line, in a real process --------------------------------


def _cli(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "syft_flwr", "audit", "--config", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def owner(syft_root: Path) -> tuple[SyftCoreClient, Path]:
    do = make_syft_client(syft_root, DO)
    load_or_create_keys(do, do.make_transport())
    _fill(AuditLog.for_client(do))
    return do, syft_root / "configs" / f"{DO}.json"


def test_cli_verify_passes_an_untouched_trail(owner) -> None:
    do, conf = owner
    assert verify_audit(do).status == "intact"
    r = _cli(conf, "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "audit trail intact: 6 line(s)" in r.stdout


@pytest.mark.parametrize(
    ("attack", "words"),
    [
        ("delete", "line #3 follows line #1 (lines removed)"),
        ("edit", "line 2 (line #2) was changed"),
        ("truncate", "the last 1 line(s) are missing"),
    ],
)
def test_cli_verify_and_audit_report_tampering(owner, attack: str, words: str) -> None:
    do, conf = owner
    d = Path(do.state_dir("audit"))
    lines = _lines(d)
    if attack == "delete":
        lines = lines[:1] + lines[2:]
    elif attack == "edit":  # the refusal of m1 made to look like a success
        lines[1] = lines[1].replace(b'"status": 403', b'"status": 200')
    else:
        lines = lines[:-1]
    _write(d, lines)
    r = _cli(conf, "--verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "WARNING: the audit trail was changed after it was written" in r.stdout
    assert words in r.stdout
    shown = _cli(conf)  # the plain table still shows, with the warning
    assert shown.returncode == 0, shown.stderr
    assert "refused" in shown.stdout and words in shown.stdout
    assert "the audit trail was changed" in shown.stderr
    # the entries themselves are still readable for scripts
    assert len(audit_entries(do)) == len(lines)


def test_cli_verify_says_an_old_trail_cannot_be_verified(owner) -> None:
    do, conf = owner
    d = Path(do.state_dir("audit"))
    (d / HEAD_FILE).unlink()
    (d / "audit.jsonl").write_text(json.dumps({"ts": 1, "event": "run"}) + "\n")
    r = _cli(conf, "--verify")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "cannot be fully verified" in r.stdout and "intact" not in r.stdout


_WRITER = """
import sys
from syft_flwr.client.factory import create_client
from syft_flwr.data_owner.audit import AuditLog
log = AuditLog.for_client(create_client(config_path=sys.argv[1]), max_bytes=4000, keep=100)
for i in range(int(sys.argv[3])):
    log.record("received", id=f"{sys.argv[2]}-{i}", sender="ds@x", bytes=i)
log.close()
"""


def test_two_data_owner_processes_write_one_chain(owner) -> None:
    """Two apps served at once (two processes) share one trail: one chain."""
    do, conf = owner
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(conf), name, str(n)], env=env
        )
        for name in ("a", "b")
    ]
    here = AuditLog.for_client(do, max_bytes=4000, keep=100)
    for i in range(n):
        here.record("received", id=f"c-{i}", sender="ds@x", bytes=i)
    here.close()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    report = verify_audit(do)
    assert report.status == "intact", report.summary()
    ids = [e.get("id") for e in audit_entries(do)]
    assert len(ids) == 6 + 3 * n  # the fixture's 6, then every line of all three
    assert all(f"{w}-{i}" in ids for w in "abc" for i in range(n))
    assert len(list(Path(do.state_dir("audit")).glob("audit.*.jsonl"))) > 3
