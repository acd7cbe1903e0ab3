"""Refusal floods: aggregated per sender and folder, never rotating real entries out,
and never logged again after a restart (a real data owner loop on real folders)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import APP, PLAIN, EventsRunner, wait_until

from syft_flwr.client import SyftCoreClient
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.audit import AuditLog, format_audit
from syft_flwr.data_owner.audit_verify import verify_trail
from syft_flwr.data_owner.refusals import DETAIL, FILE, MAX_GROUPS, RefusalLog
from syft_flwr.events import TransportEvents
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EVE = "eve@example.org"
EP = "messages"
FLOOD = 40


def _refusal_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "refused" in r.getMessage()
    ]


def test_a_flood_is_aggregated_keeps_real_entries_and_is_not_logged_after_a_restart(
    make_client: Callable[[str], SyftCoreClient],
    events_runner: EventsRunner,
    datasites_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="syft_flwr")
    do = make_client(DO)
    key = StateKey(generate_keys(), "audit")
    audit_dir = Path(do.state_dir("audit"))
    ds, eve = (
        SyftFlwrRpc(
            make_client(who).make_transport(),
            APP,
            settings=PLAIN,
            policy=PlaintextPolicy(),
        )
        for who in (DS, EVE)
    )
    ran: list[bytes] = []

    def make() -> TransportEvents:
        # A trail small enough that FLOOD one-line refusals would rotate the
        # real entries out of it (each line is over 300 bytes).
        audit = AuditLog(audit_dir, max_bytes=3000, keep=1, key=key)
        ev = TransportEvents(
            APP,
            do,
            settings=PLAIN,
            poll_interval=0.25,
            allowed_senders=[DS],
            audit=audit,
        )
        ev.drain_timeout = 0.0
        ev.on_request(EP, lambda body: ran.append(body) or b"ok")
        return ev

    eve_folder = datasites_dir / DO / "app_data" / APP / "rpc" / EP / EVE

    def eve_answered() -> int:
        return len(list(eve_folder.glob("*.response")))

    def remembered() -> int:
        return len((audit_dir / FILE).read_bytes().splitlines())

    def seen_again() -> int:
        return sum("(logged before)" in r.getMessage() for r in caplog.records)

    try:
        first = make()
        events_runner.start(first)
        good = ds.send_request(DO, EP, b"real work", expires_at=time.time() + 60)
        wait_until(lambda: ds.response_for(DO, EP, good), timeout=10)
        for i in range(FLOOD):
            eve.send_request(DO, EP, b"x%d" % i, expires_at=time.time() + 120)
        (eve_folder / "bad name\x1b[2K.request").write_bytes(b"{}")  # bad name
        wait_until(lambda: eve_answered() == FLOOD, timeout=30, message="refusals")
        # every file was seen (the bad name gets no reply): all are remembered
        wait_until(lambda: remembered() == FLOOD + 1, timeout=10, message="memory")
        events_runner.stop(first)
        first.transport.close()

        # -- what the first run logged
        entries = first.audit.entries()
        assert [e["event"] for e in entries if e.get("id") == good] == [
            "received",
            "run",
            "replied",
        ]  # the real entries are still in the trail
        from_eve = [e for e in entries if e.get("sender") == EVE]
        detailed = [e for e in from_eve if "count" not in e]
        [summary] = [e for e in from_eve if "count" in e]
        assert len(detailed) == DETAIL
        assert all(e["status"] == 403 for e in detailed)
        # the count row keeps the last refusal's words
        assert summary["status"] in (400, 403) and summary["reason"]
        # FLOOD requests and one bad file name: one row with the count of the rest
        assert summary["count"] == FLOOD + 1 - DETAIL
        assert summary["folder"] == f"{APP}/{EP}"
        table = format_audit(entries)
        assert f"{FLOOD + 1 - DETAIL} more refusal(s) in {APP}/{EP} since" in table
        assert len(_refusal_warnings(caplog)) == DETAIL + 1
        assert ran == [b"real work"]  # nothing of eve's ran
        assert verify_trail(audit_dir, key).status == "intact"

        # -- restart: eve's replies are gone, her requests are still there
        for p in eve_folder.glob("*.response"):
            p.unlink()
        caplog.clear()
        lines_before = len(first.audit.entries())
        second = make()
        events_runner.start(second)
        # the refusals are answered again (the requester still gets them) ...
        wait_until(lambda: eve_answered() == FLOOD, timeout=30, message="re-refusals")
        wait_until(lambda: seen_again() == FLOOD + 1, timeout=10, message="re-seen")
        events_runner.stop(second)
        second.transport.close()
    finally:
        ds.transport.close()
        eve.transport.close()
    # ... but not logged again: no new rows, no warnings
    assert len(second.audit.entries()) == lines_before
    assert _refusal_warnings(caplog) == []
    assert "logged before" in caplog.text
    assert ran == [b"real work"]


def test_the_memory_is_authenticated_and_bounded_in_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = StateKey(generate_keys(), "audit")
    now = [1_000_000.0]
    audit = AuditLog(tmp_path, key=key)
    log = RefusalLog(audit, clock=lambda: now[0])
    assert log.first_time("a") and not log.first_time("a")
    log.close()
    # a line added by someone else (to silence the log for their file) is ignored
    with open(tmp_path / FILE, "a") as f:
        f.write("0" * 32 + " 1000000 " + "f" * 64 + "\n")
    again = RefusalLog(audit, clock=lambda: now[0])
    assert not again.first_time("a")  # remembered across a restart
    assert "1 line(s) of" in caplog.text and "failed their integrity" in caplog.text
    again.close()
    # the memory of another data owner (another key) is not taken either
    other = RefusalLog(AuditLog(tmp_path, key=StateKey(generate_keys(), "audit")))
    assert other.first_time("a")
    other.close()
    # a week later the entry is forgotten (the request expired long before)
    now[0] += 8 * 86400
    later = RefusalLog(AuditLog(tmp_path, key=key), clock=lambda: now[0])
    assert later.first_time("a")


def test_many_senders_are_counted_together_past_the_limit(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    log = RefusalLog(audit)
    for i in range(MAX_GROUPS + 50):
        log.refused(
            f"k{i}", mid=f"m{i}", app="a", folder="a/ep", sender=f"s{i}@x",
            status=403, reason="not allowed",
        )  # fmt: skip
    log.close()
    rows = audit.entries()
    assert len(rows) == MAX_GROUPS + 1  # one each, then one row for the rest
    assert rows[-1]["sender"] == "(other senders)" and rows[-1]["count"] == 50
