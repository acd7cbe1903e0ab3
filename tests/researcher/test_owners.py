"""Issue 25: the grid's small owners of state keep the grid's behaviour and names."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading

from flwr.app import ConfigRecord, Error, Message, RecordDict

from syft_flwr._flwr_compat import SYSTEM_MESSAGE_TYPE, set_task_identity
from syft_flwr.researcher.deadline import WaitTimers
from syft_flwr.researcher.wakeup import Wakeup


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_wait_timers_sleep_until_the_first_timer_and_reschedule_what_fired() -> None:
    clock = _Clock()
    timers = WaitTimers(
        30.0, rescan=5.0, progress_every=10.0, beat_every=7.0, clock=clock
    )
    assert timers.full_pass_due(clock())  # the first pass reads everything
    assert not timers.full_pass_due(clock())  # then only every 5 s
    assert timers.sleep_for(clock(), step=60.0) == 5.0  # the next full pass
    clock.t += 5.0
    assert timers.full_pass_due(clock())
    assert timers.sleep_for(clock(), step=0.25) == 0.25  # deferred requests retry
    assert not timers.progress_due(clock())
    clock.t = 110.0
    assert timers.progress_due(clock()) and not timers.progress_due(clock())
    clock.t = 129.0
    assert timers.full_pass_due(clock()) and timers.progress_due(clock())
    assert timers.sleep_for(clock(), step=60.0) == 1.0  # the deadline comes first
    assert not timers.expired(clock())
    clock.t = 130.0
    assert timers.expired(clock()) and timers.sleep_for(clock(), 60.0) == 0.0
    assert timers.elapsed() == 30.0


def test_wait_timers_never_sleep_past_a_heartbeat() -> None:
    clock = _Clock()
    timers = WaitTimers(
        300.0, rescan=60.0, progress_every=60.0, beat_every=2.0, clock=clock
    )
    timers.full_pass_due(clock())
    assert timers.sleep_for(clock(), step=60.0) == 2.0


def test_a_hint_wakes_a_waiter_once_and_is_then_consumed() -> None:
    wake = Wakeup()
    woke = threading.Event()

    def waiter() -> None:
        wake.wait(lambda: False, timeout=30.0)
        woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    wake.hint()
    assert woke.wait(10), "a hint did not wake the waiter"
    t.join(10)
    # Consumed: a second wait sees no hint and runs out its (short) timeout.
    hit: list[bool] = []
    wake.wait(lambda: hit.append(True) or False, timeout=0.05)
    assert hit  # the predicate was evaluated: nothing else ended the wait


def test_a_waiter_that_ignores_hints_leaves_them_for_the_next() -> None:
    wake = Wakeup()
    wake.hint()
    wake.wait(lambda: False, timeout=0.01, on_hint=False)
    done: list[bool] = []

    def waiter() -> None:
        wake.wait(lambda: False, timeout=30.0)
        done.append(True)

    t = threading.Thread(target=waiter)
    t.start()
    t.join(10)
    assert done, "the hint left by on_hint=False was lost"


def test_notify_wakes_a_waiter_whose_condition_now_holds() -> None:
    wake = Wakeup()
    flag = threading.Event()
    t = threading.Thread(target=lambda: wake.wait(flag.is_set, timeout=30.0))
    t.start()
    flag.set()
    wake.notify()
    t.join(10)
    assert not t.is_alive(), "notify did not wake the waiter"


def test_work_tally_is_the_plain_record_it_was() -> None:
    from syft_flwr.researcher.grid import WorkTally
    from syft_flwr.researcher.tally import WorkTally as Moved

    assert WorkTally is Moved
    t = WorkTally(2, 1, 1)
    assert dataclasses.asdict(t) == {"sent": 2, "succeeded": 1, "failed": 1}
    assert copy.deepcopy(t) == t and pickle.loads(pickle.dumps(t)) == t
    assert repr(t) == "WorkTally(sent=2, succeeded=1, failed=1)"


def test_work_tally_counts_work_not_system_messages() -> None:
    from syft_flwr.researcher.tally import WorkTally

    set_task_identity(7)
    work = Message(RecordDict({"c": ConfigRecord({"x": 1})}), 1, "train", ttl=60)
    stop = Message(RecordDict(), 1, SYSTEM_MESSAGE_TYPE, ttl=60)
    ok = Message(RecordDict(), reply_to=work)
    bad = Message(Error(code=0, reason="raised"), reply_to=work)
    ack = Message(RecordDict(), reply_to=stop)
    t = WorkTally()
    for msg in (work, work, stop):
        t.count_sent(msg)
    t.count([ok, bad, ack])
    assert (t.sent, t.succeeded, t.failed) == (2, 1, 1)
    assert not t.all_failed
    t2 = WorkTally()
    t2.count_sent(work)
    t2.count([bad])
    assert t2.all_failed


def test_work_tally_keeps_the_latest_budget_refusal_of_each_site() -> None:
    from syft_flwr.researcher.tally import WorkTally

    set_task_identity(7)
    work = Message(RecordDict({"c": ConfigRecord({"x": 1})}), 1, "train", ttl=60)
    spent = "dataset 'd' is out of privacy budget: epsilon {} of 5 is spent"
    first = Message(Error(code=0, reason=spent.format(4)), reply_to=work)
    later = Message(Error(code=0, reason=spent.format(4.5)), reply_to=work)
    raised = Message(Error(code=0, reason="ClientApp raised ValueError"), reply_to=work)
    t = WorkTally()
    t.count([first, raised, later])
    assert t.failed == 3
    # Only budget refusals are kept, by site, the latest one (spent/left now).
    assert t.out_of_budget == {work.metadata.dst_node_id: spent.format(4.5)}


def test_journal_pieces_are_reexported_where_they_were() -> None:
    from syft_flwr.fl_orchestrator import checkpoint
    from syft_flwr.researcher import (
        fingerprint,
        journal,
        journal_file,
        journal_writer,
        reply_cache,
    )

    assert checkpoint is journal
    assert journal.ReplyCache is reply_cache.ReplyCache
    assert journal.request_fingerprint is fingerprint.request_fingerprint
    assert journal.request_fingerprints is fingerprint.request_fingerprints
    assert journal.Kept is journal_file.Kept and journal.Entry is journal_file.Entry
    assert journal.DEFAULT_CACHED_REPLIES == 8
    # Private names tests and tools reached for keep working.
    assert journal._pack is journal_file.pack and journal._unpack is journal_file.unpack
    assert journal._Writer is journal_writer.JournalWriter
