"""The data owner's ledger: states only move forward, durably; stored replies; trimming."""

from __future__ import annotations

import json
from pathlib import Path

from syft_flwr.events.ledger import (
    RECEIVED,
    REPLIED,
    RUNNING,
    STORED,
    Ledger,
)


def test_states_move_forward_and_survive_a_restart(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.mark("a", RECEIVED, 100.0)
    led.mark("a", RUNNING, 100.0)
    led.mark("a", RECEIVED, 100.0)  # never backwards
    assert led.state("a") == RUNNING
    led.store_reply("a", 200, b"the reply", 100.0)
    assert led.state("a") == STORED
    led.mark("a", REPLIED, 100.0)
    again = Ledger(tmp_path)
    assert again.state("a") == REPLIED
    assert again.stored_reply("a") == (200, b"the reply")
    assert again.state("b") is None and "b" not in again


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.mark("a", RUNNING, 100.0)
    with open(tmp_path / Ledger.FILE, "a") as f:
        f.write('{"id": "b", "s": "repl')  # crash mid-write
    again = Ledger(tmp_path)
    assert again.state("a") == RUNNING and again.state("b") is None


def test_ids_of_older_versions_count_as_replied(tmp_path: Path) -> None:
    (tmp_path / Ledger.LEGACY_FILE).write_text("old-1\nold-2\n")
    led = Ledger(tmp_path)
    assert led.state("old-1") == REPLIED and led.stored_reply("old-1") is None
    led.trim()  # compaction folds them into the new log
    assert not (tmp_path / Ledger.LEGACY_FILE).exists()
    assert Ledger(tmp_path).state("old-2") == REPLIED


def test_trim_drops_expired_entries_and_their_replies(tmp_path: Path) -> None:
    now = [10_000.0]
    led = Ledger(tmp_path, clock=lambda: now[0])
    led.store_reply("old", 200, b"x", expires_at=1_000.0)
    led.store_reply("new", 200, b"y", expires_at=20_000.0)
    assert led.trim() == 1
    assert led.state("old") is None and led.stored_reply("old") is None
    assert led.stored_reply("new") == (200, b"y")
    lines = (tmp_path / Ledger.FILE).read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["new"]  # compacted
    assert Ledger(tmp_path).state("new") == STORED


def test_drop_reply_and_memory_mode(tmp_path: Path) -> None:
    led = Ledger(None)
    led.store_reply("a", 500, b"err", 1.0)
    assert led.stored_reply("a") == (500, b"err")
    led.drop_reply("a")
    assert led.stored_reply("a") is None and led.state("a") == STORED
    disk = Ledger(tmp_path)
    disk.store_reply("b", 200, b"z", 1.0)
    disk.drop_reply("b")
    assert not list((tmp_path / Ledger.REPLIES).iterdir())
