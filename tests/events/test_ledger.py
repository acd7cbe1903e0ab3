"""The data owner's ledger: states only move forward, durably; stored replies; trimming."""

from __future__ import annotations

import json
from pathlib import Path

from syft_flwr.data_owner.ledger import (
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


def test_an_aliased_reply_is_one_file_found_by_id_and_by_alias(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.mark("a", RUNNING, 100.0)
    led.store_reply("a", 200, b"trained", 100.0, durable=False, alias="fp-1")
    assert led.alias_reply("fp-1") == led.stored_reply("a") == (200, b"trained")
    assert [p.name for p in (tmp_path / Ledger.REPLIES).iterdir()] == ["a.reply"]
    again = Ledger(tmp_path)  # a restart: the alias is in the log
    assert again.alias_reply("fp-1") == (200, b"trained")
    assert again.state("a") == STORED and again.alias_reply("fp-2") is None


def test_aliased_replies_outlive_their_request_until_newer_ones_push_them_out(
    tmp_path: Path,
) -> None:
    now = [10_000.0]
    led = Ledger(tmp_path, clock=lambda: now[0], keep_aliases=2)
    led.store_reply("a", 200, b"A", 10_500.0, alias="fa")
    led.drop_reply("a")  # the researcher read it: kept, an alias names it
    assert led.alias_reply("fa") == (200, b"A")
    now[0] = 1e6  # long past every expiry: entries go, aliased replies stay
    led.store_reply("b", 200, b"B", 10_500.0, alias="fb")
    assert led.trim() == 2
    assert led.alias_reply("fa") == (200, b"A") and led.alias_reply("fb") == (200, b"B")
    again = Ledger(tmp_path, keep_aliases=2)  # compaction kept the aliases
    assert again.alias_reply("fa") == (200, b"A") and again.state("a") is None
    led.store_reply("c", 200, b"C", 2e6, alias="fc")  # pushes "fa" out
    assert led.alias_reply("fa") is None and led.stored_reply("a") is None
    led.store_reply("d", 200, b"D", 2e6, alias="fd")  # pushes "fb" (expired) out
    assert led.stored_reply("b") is None
    led.store_reply("e", 200, b"E", 2e6, alias="fe")  # "c" is live: kept for it
    assert led.alias_reply("fc") is None and led.stored_reply("c") == (200, b"C")
    names = sorted(p.name for p in (tmp_path / Ledger.REPLIES).iterdir())
    assert names == ["c.reply", "d.reply", "e.reply"]


def test_a_reply_kept_under_an_alias_only(tmp_path: Path) -> None:
    led = Ledger(tmp_path, keep_aliases=1)
    led.keep_alias("fp-x", b"cached")
    assert led.alias_reply("fp-x") == (200, b"cached")
    assert len(led) == 0  # no request id: no entry
    assert Ledger(tmp_path).alias_reply("fp-x") == (200, b"cached")
    led.keep_alias("fp-y", b"newer")
    assert led.alias_reply("fp-x") is None
    assert len(list((tmp_path / Ledger.REPLIES).iterdir())) == 1


def test_aliased_replies_are_kept_within_a_byte_budget(tmp_path: Path) -> None:
    # Large replies: 8 of a 1 GB model would hold 8 GB of the data owner's
    # disk; the oldest go once the kept ones pass the budget, never the newest.
    led = Ledger(tmp_path, keep_aliases=8, keep_alias_bytes=2500)
    for mid in ("a", "b", "c"):
        led.store_reply(mid, 200, mid.encode() * 1000, 1e12, alias=f"f{mid}")
        led.drop_reply(mid)  # the researcher has read it: kept for the alias only
    assert led.alias_reply("fa") is None and led.stored_reply("a") is None
    assert led.alias_reply("fb") == (200, b"b" * 1000)
    assert led.alias_reply("fc") == (200, b"c" * 1000)
    names = sorted(p.name for p in (tmp_path / Ledger.REPLIES).iterdir())
    assert names == ["b.reply", "c.reply"]
    # One reply larger than the whole budget is still kept: the newest always is.
    led.store_reply("d", 200, b"d" * 5000, 1e12, alias="fd")
    led.drop_reply("d")
    assert led.alias_reply("fd") == (200, b"d" * 5000)
    assert led.alias_reply("fb") is None and led.alias_reply("fc") is None
    # The sizes are known again after a restart (read from the files).
    again = Ledger(tmp_path, keep_alias_bytes=5500)
    again.store_reply("e", 200, b"e" * 1000, 1e12, alias="fe")
    assert again.alias_reply("fd") is None  # 5000 + 1000 > 5500
    assert again.alias_reply("fe") == (200, b"e" * 1000)


def test_sync_reply_and_trim_sweep_stray_files(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.store_reply("a", 200, b"x", 1e12, durable=False)
    led.sync_reply("a")  # fsynced in place; nothing else changes
    assert led.stored_reply("a") == (200, b"x")
    stray = tmp_path / Ledger.REPLIES / "gone.reply"  # written, never recorded
    stray.write_bytes(b"\x00\xc8y")
    led.trim()
    assert not stray.exists() and led.stored_reply("a") == (200, b"x")


def test_a_framed_reply_is_stored_self_contained_without_a_join(tmp_path: Path) -> None:
    from syft_flwr.wire import frames

    parts = [b"a" * 5000, b"b" * 7000]
    slots = [frames.PartSlot("r", f"k{i}", len(p)) for i, p in enumerate(parts)]
    prefix = frames.pack(slots, b"\x0askel")
    body = frames.FramedBody(prefix, parts)
    for folder in (tmp_path / "l", None):
        ledger = Ledger(folder)
        ledger.store_reply("m1", 200, body, 9e9, durable=True)
        status, stored = ledger.stored_reply("m1")  # type: ignore[misc]
        # The inline framed form: prefix then parts, readable on its own.
        assert status == 200 and stored == prefix + b"".join(parts)
        assert [bytes(p) for p in frames.parse_frame(stored).parts] == parts


# -- authenticated with the data owner's own key ---------------------------------
def _key(keys=None):
    from syft_flwr.crypto.keys import generate_keys
    from syft_flwr.crypto.state_mac import StateKey

    return StateKey(keys or generate_keys(), "ledger")


def _rewrite(path: Path, change) -> None:
    lines = [json.dumps(change(json.loads(x))) for x in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def test_a_changed_line_taints_its_id_and_is_never_cleared(tmp_path, caplog) -> None:
    import pytest

    from syft_flwr.data_owner.ledger import TAINTED
    from syft_flwr.errors import StateIntegrityError

    key = _key()
    led = Ledger(tmp_path, state_key=key)
    led.mark("a", RUNNING, 100.0)
    led.store_reply("b", 200, b"reply b", 1e12, peer="ds@example.org")
    led.mark("c", REPLIED, 1e12)

    def forge(rec):  # "a" ran (side effects): pretend it was only received
        if rec["id"] == "a":
            rec["s"] = RECEIVED
        return rec

    _rewrite(tmp_path / Ledger.FILE, forge)
    again = Ledger(tmp_path, state_key=key)
    assert again.state("a") == TAINTED and again.state("c") == REPLIED
    assert "1 record(s)" in caplog.text and ": a" in caplog.text
    with pytest.raises(StateIntegrityError, match="record of request a"):
        again.stored_reply("a")
    again.mark("a", RUNNING, 100.0)  # no later line clears it
    again.trim()  # nor does compaction: it is kept, refused, under our tag
    assert Ledger(tmp_path, state_key=key).state("a") == TAINTED
    assert again.stored_reply("b", peer="ds@example.org") == (200, b"reply b")


def test_a_ledger_from_another_party_or_an_older_version_is_not_trusted(
    tmp_path,
) -> None:
    from syft_flwr.data_owner.ledger import TAINTED

    Ledger(tmp_path / "other", state_key=_key()).mark("x", REPLIED, 100.0)
    (tmp_path / "old").mkdir()
    Ledger(tmp_path / "old").mark("y", RUNNING, 100.0)  # untagged (no key)
    mine = _key()
    assert Ledger(tmp_path / "other", state_key=mine).state("x") == TAINTED
    assert Ledger(tmp_path / "old", state_key=mine).state("y") == TAINTED


def test_a_kept_reply_is_refused_when_altered_untagged_or_for_another_sender(
    tmp_path,
) -> None:
    import pytest

    from syft_flwr.errors import StateIntegrityError

    key = _key()
    led = Ledger(tmp_path, state_key=key)
    led.store_reply("a", 200, b"the model", 100.0, peer="ds@example.org")
    path = tmp_path / Ledger.REPLIES / "a.reply"
    good = path.read_bytes()
    assert b"the model" in good  # plaintext, with a tag after it
    path.write_bytes(good.replace(b"the model", b"the modeX"))
    with pytest.raises(StateIntegrityError, match="kept reply to request a"):
        led.stored_reply("a")
    path.write_bytes(good.replace(b"ds@example.org", b"ev@example.org"))
    with pytest.raises(StateIntegrityError):  # re-addressed to another sender
        led.stored_reply("a")
    path.write_bytes((200).to_bytes(2, "big") + b"the model")  # older format
    with pytest.raises(StateIntegrityError, match="no integrity tag"):
        led.stored_reply("a")
    path.write_bytes(good)
    assert led.stored_reply("a", peer="ds@example.org") == (200, b"the model")
    assert led.stored_reply("a", peer="eve@example.org") is None  # not theirs
    # Under another data owner's key it does not verify either.
    with pytest.raises(StateIntegrityError):
        Ledger(tmp_path, state_key=_key()).stored_reply("a")
    # Without a key (encryption off, no identity) it is read on trust.
    assert Ledger(tmp_path).stored_reply("a") == (200, b"the model")


def test_an_altered_cached_reply_is_computed_again(tmp_path) -> None:
    from syft_flwr.crypto.keys import generate_keys
    from syft_flwr.crypto.state_mac import StateKey
    from syft_flwr.researcher.journal import ReplyCache

    keys = generate_keys()
    led = Ledger(tmp_path, state_key=StateKey(keys, "ledger"))
    ReplyCache.on_ledger(led).ledger.keep_alias("fp-1", b"cached bytes")
    path = next((tmp_path / Ledger.REPLIES).glob("alias+*.reply"))
    path.write_bytes(path.read_bytes().replace(b"cached", b"forged"))
    assert ReplyCache.on_ledger(led).get("fp-1") is None  # not used: recomputed
    # An older version's untagged cache folder is not used on a keyed ledger.
    legacy = tmp_path / "reply_cache"
    ReplyCache(legacy).put("fp-2", b"\x00not a message")
    assert ReplyCache.on_ledger(led, legacy=legacy)._legacy is False
    # A cache kept in a folder of its own is tagged as well.
    own = ReplyCache(tmp_path / "own", state_key=StateKey(keys, "reply-cache"))
    own.put("fp-3", b"x" * 10)
    f = tmp_path / "own" / "fp-3.reply"
    f.write_bytes(b"y" + f.read_bytes()[1:])
    assert own.get("fp-3") is None
