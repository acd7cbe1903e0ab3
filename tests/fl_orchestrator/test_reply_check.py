"""reply_check: hostile values in an authentic reply never reach the strategy.

Unit tests of :func:`check_reply` / :func:`screen_reply` on real Flower messages
(each attack asserts the refusal, the reason and the log line), then the grid over
real SyftBox folders with a data owner answering NaN in a large (chunked) reply.
"""

from __future__ import annotations

import io
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _support import APP, PLAIN, RESEARCHER, EventsRunner, make_syft_client
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode, SType

from syft_flwr._flwr_compat import set_message_id, set_task_identity
from syft_flwr.config import Settings
from syft_flwr.errors import ConfigError, SecurityError, UnacceptableReply
from syft_flwr.events import create_events_watcher
from syft_flwr.researcher import reply_check
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.researcher.journal import Journal
from syft_flwr.researcher.reply_check import check_reply, screen_reply
from syft_flwr.serde import (
    SpillableArray,
    bytes_to_flower_message,
    flower_message_to_bytes,
)

OWNER = "do1@example.org"
HONEST = "do2@example.org"


def _request(
    *arrays: np.ndarray, message_type: str = "train", name: str = "arrays"
) -> Message:
    set_task_identity(7)
    msg = Message(
        RecordDict(
            {name: ArrayRecord(list(arrays)), "config": ConfigRecord({"lr": 0.1})}
        ),
        dst_node_id=12345,
        message_type=message_type,
    )
    set_message_id(msg, "req-1")
    return msg


def _reply(request: Message, records: dict[str, ArrayRecord]) -> Message:
    content = RecordDict(
        {**records, "metrics": MetricRecord({"num-examples": 10})}  # type: ignore[dict-item]
    )
    return Message(content, reply_to=request)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _object_npy() -> bytes:
    """The .npy of an object array (np.save refuses to write one without pickle)."""
    buf = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 8


MODEL = np.zeros(1000, dtype=np.float32)


def _with(value: float, dtype: type = np.float32, at: int = -1) -> np.ndarray:
    arr = np.ones(1000, dtype=dtype)
    arr[at] = value
    return arr


# -- accepted ------------------------------------------------------------------------


def test_an_honest_reply_is_returned_as_it_is(caplog) -> None:
    req = _request(MODEL, np.zeros((3, 4), dtype=np.float64))
    reply = _reply(
        req,
        {"arrays": ArrayRecord([MODEL + 1, np.ones((3, 4), dtype=np.float64)])},
    )
    with caplog.at_level(logging.WARNING, "syft_flwr"):
        assert screen_reply(req, reply, sender=OWNER) is reply
    assert caplog.records == []


def test_finite_values_within_range_are_not_refused() -> None:
    """1e38 fits float32: within-range poisoning, left to robust strategies."""
    req = _request(MODEL)
    huge = np.full(1000, 1e38, dtype=np.float32)
    extreme = np.full(1000, np.finfo(np.float32).max, dtype=np.float32)
    check_reply(req, _reply(req, {"arrays": ArrayRecord([huge])}))
    check_reply(req, _reply(req, {"arrays": ArrayRecord([-extreme])}))


def test_new_arrays_are_checked_for_finiteness_only() -> None:
    """Arrays the request did not carry (custom stats) may have any shape or type."""
    req = _request(MODEL, message_type="query.stats")
    stats = ArrayRecord(
        {
            "hist": Array(np.arange(7, dtype=np.int64)),
            "mean": Array(np.zeros((2, 2), dtype=np.float64)),
        }
    )
    check_reply(req, _reply(req, {"stats": stats}))
    bad = ArrayRecord({"mean": Array(np.array([np.nan]))})
    with pytest.raises(UnacceptableReply, match=r"'stats'/'mean' holds values that"):
        check_reply(req, _reply(req, {"stats": bad}))


def test_integer_arrays_need_no_finiteness_check() -> None:
    req = _request(np.zeros(10, dtype=np.int32))
    check_reply(req, _reply(req, {"arrays": ArrayRecord([np.full(10, -1, np.int32)])}))


def test_error_replies_and_empty_replies_pass_through() -> None:
    from flwr.app import Error

    req = _request(MODEL)
    err = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION), reply_to=req)
    assert screen_reply(req, err, sender=OWNER) is err
    empty = Message(RecordDict(), reply_to=req)
    assert screen_reply(req, empty, sender=OWNER) is empty


# -- refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (np.nan, np.float32),
        (np.inf, np.float32),
        (-np.inf, np.float32),
        (np.nan, np.float64),
        (np.inf, np.float16),
    ],
    ids=["nan32", "inf32", "-inf32", "nan64", "inf16"],
)
def test_non_finite_values_are_refused_with_an_error_reply_and_a_log_line(
    value: float, dtype: type, caplog
) -> None:
    req = _request(np.zeros(1000, dtype=dtype))
    reply = _reply(req, {"arrays": ArrayRecord([_with(value, dtype)])})
    with caplog.at_level(logging.WARNING, "syft_flwr.grid"):
        out = screen_reply(req, reply, sender=OWNER)
    assert out is not reply and out.has_error() and not out.has_content()
    assert out.error.code == ErrorCode.MESSAGE_UNAVAILABLE
    assert out.metadata.reply_to_message_id == "req-1"
    assert out.metadata.message_type == "train"
    assert OWNER in out.error.reason and "'arrays'/'0'" in out.error.reason
    assert "not finite" in out.error.reason
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"refused the reply of {OWNER}" in line
    assert "'arrays'/'0' holds values that are not finite numbers (NaN or Inf)" in line
    assert "the round goes on with the other data owners" in line


@pytest.mark.parametrize(
    "metrics",
    [
        {"num-examples": float("nan")},
        {"num-examples": 10, "loss": float("inf")},
        {"num-examples": 10, "per-class": [0.5, float("-inf")]},
    ],
    ids=["nan-weight", "inf-metric", "inf-in-list"],
)
def test_non_finite_metrics_are_refused_they_weight_the_aggregation(
    metrics: dict, caplog
) -> None:
    req = _request(MODEL)
    content = RecordDict(
        {"arrays": ArrayRecord([MODEL + 1]), "metrics": MetricRecord(metrics)}
    )
    reply = Message(content, reply_to=req)
    with caplog.at_level(logging.WARNING, "syft_flwr.grid"):
        out = screen_reply(req, reply, sender=OWNER)
    assert out.has_error() and "metric 'metrics'/" in out.error.reason
    assert "is not a finite number" in caplog.records[0].getMessage()
    check_reply(req, reply, allow_nonfinite=True)  # the opt-down covers metrics
    big = {"num-examples": 2**62, "loss": 1e308, "ids": [1, 2]}
    finite = Message(
        RecordDict({"arrays": ArrayRecord([MODEL]), "m": MetricRecord(big)}),
        reply_to=req,
    )
    check_reply(req, finite)


def test_complex_arrays_are_checked_too() -> None:
    req = _request(np.zeros(4, dtype=np.complex64))
    bad = np.zeros(4, dtype=np.complex64)
    bad[2] = complex(0.0, np.nan)
    with pytest.raises(UnacceptableReply, match="not finite"):
        check_reply(req, _reply(req, {"arrays": ArrayRecord([bad])}))


def test_a_nan_in_the_last_block_of_a_large_array_is_found() -> None:
    """The scan goes block by block; the last, partial block is scanned too."""
    n = reply_check.BLOCK * 2 + 3
    req = _request(np.zeros(n, dtype=np.float32))
    bad = np.zeros(n, dtype=np.float32)
    bad[-1] = np.nan
    with pytest.raises(UnacceptableReply, match="not finite"):
        check_reply(req, _reply(req, {"arrays": ArrayRecord([bad])}))
    bad[-1] = 0.0
    bad[reply_check.BLOCK] = np.inf  # first element of the second block
    with pytest.raises(UnacceptableReply, match="not finite"):
        check_reply(req, _reply(req, {"arrays": ArrayRecord([bad])}))


@pytest.mark.parametrize(
    ("sent", "returned", "words"),
    [
        (
            MODEL,
            np.ones(999, np.float32),
            "is float32 of shape (999,), the model sent was float32 of shape (1000,)",
        ),
        (MODEL, np.ones((1000, 1), np.float32), "of shape (1000, 1)"),
        (MODEL, np.ones(1000, np.float64), "is float64 of shape (1000,)"),
        (MODEL, np.ones(1000, ">f4"), "is >f4 of shape (1000,)"),
        (MODEL, np.ones(1000, np.int32), "is int32 of shape (1000,)"),
    ],
    ids=["shorter", "extra-axis", "float64", "big-endian", "int32"],
)
def test_an_array_unlike_the_one_sent_is_refused(
    sent: np.ndarray, returned: np.ndarray, words: str, caplog
) -> None:
    req = _request(sent)
    reply = _reply(req, {"arrays": ArrayRecord([returned])})
    with caplog.at_level(logging.WARNING, "syft_flwr.grid"):
        out = screen_reply(req, reply, sender=OWNER)
    assert out.has_error() and words in out.error.reason
    assert "'arrays'/'0'" in out.error.reason
    assert words in caplog.records[0].getMessage()


def test_the_shape_check_holds_with_non_finite_values_allowed() -> None:
    req = _request(MODEL)
    nan = _reply(req, {"arrays": ArrayRecord([_with(np.nan)])})
    check_reply(req, nan, allow_nonfinite=True)  # the opt-down: NaN accepted
    short = _reply(req, {"arrays": ArrayRecord([np.full(3, np.nan, np.float32)])})
    with pytest.raises(UnacceptableReply, match=r"shape \(3,\)"):
        check_reply(req, short, allow_nonfinite=True)


def test_an_array_whose_header_disagrees_with_what_it_declares_is_judged_by_its_bytes():
    """``Array.numpy()`` reads the .npy header; declared fields cannot hide a shape."""
    req = _request(MODEL)
    liar = Array(
        dtype="float32",
        shape=(1000,),
        stype=SType.NUMPY,
        data=_npy(np.ones(10, dtype=np.float32)),
    )
    with pytest.raises(UnacceptableReply, match=r"shape \(10,\)"):
        check_reply(req, _reply(req, {"arrays": ArrayRecord({"0": liar})}))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not an npy file at all", "is not a readable numpy array"),
        (_npy(np.ones(1000, np.float32))[:-4], "bytes of data, its header says 4000"),
        (_npy(np.ones(1000, np.float32)) + b"\0" * 4, "its header says 4000"),
        (_object_npy(), "holds Python objects"),
        (
            b"\x93NUMPY\x03\x00" + b"\x00" * 4,
            "format version (3, 0) is not accepted",
        ),
    ],
    ids=["garbage", "truncated", "trailing-bytes", "object-dtype", "npy-v3"],
)
def test_bytes_that_are_not_a_plain_numpy_array_are_refused(
    data: bytes, words: str
) -> None:
    req = _request(message_type="train")
    arr = Array(dtype="float32", shape=(1000,), stype=SType.NUMPY, data=data)
    with pytest.raises(UnacceptableReply, match="'weights'/'w'") as info:
        check_reply(req, _reply(req, {"weights": ArrayRecord({"w": arr})}))
    assert words in str(info.value)
    assert isinstance(info.value, SecurityError)


def test_another_serialization_than_the_one_sent_is_refused() -> None:
    req = _request(MODEL)
    raw = Array(dtype="float32", shape=(1000,), stype="raw.bytes", data=b"\0" * 4000)
    with pytest.raises(UnacceptableReply, match="serialized as 'raw.bytes'"):
        check_reply(req, _reply(req, {"arrays": ArrayRecord({"0": raw})}))


def test_a_reply_of_another_message_type_is_refused() -> None:
    req = _request(MODEL, message_type="evaluate")
    reply = _reply(req, {"arrays": ArrayRecord([MODEL])})
    reply.metadata.__dict__["_message_type"] = "train"
    with pytest.raises(UnacceptableReply, match="answers a 'train' request"):
        check_reply(req, reply)


def test_the_finiteness_check_makes_no_copy_of_the_model() -> None:
    """A 32 MB float32 reply is checked with a scratch far below its size."""
    n = 8 * 1024 * 1024
    req = _request(np.zeros(n, dtype=np.float32))
    reply = _reply(req, {"arrays": ArrayRecord([np.ones(n, dtype=np.float32)])})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        check_reply(req, reply)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # model: 32 MiB; one block of bools: 1 MiB


def test_the_model_sent_is_never_read_back_from_disk_to_be_compared() -> None:
    """A sent array whose bytes were spilled is compared by its declared fields."""

    def reload() -> bytes:
        raise AssertionError("the sent model's bytes were read")

    sent = SpillableArray("float32", (1000,), SType.NUMPY, _npy(MODEL), reload)
    sent.spill()
    req = _request(MODEL)
    req.content["arrays"]["0"] = sent
    check_reply(req, _reply(req, {"arrays": ArrayRecord([MODEL + 1])}))
    with pytest.raises(UnacceptableReply, match=r"shape \(999,\)"):
        check_reply(req, _reply(req, {"arrays": ArrayRecord([MODEL[:999]])}))


def test_the_opt_down_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).allow_nonfinite is False
    on = Settings.from_env({"SYFT_FLWR_ALLOW_NONFINITE": "true"})
    assert on.allow_nonfinite is True
    with pytest.raises(ConfigError):
        Settings.from_env({"SYFT_FLWR_ALLOW_NONFINITE": "maybe"})


# -- through the grid, over real SyftBox folders ------------------------------------


def _nan_in_the_model(body: bytes) -> bytes:
    msg = bytes_to_flower_message(body)
    model = msg.content["arrays"].to_numpy_ndarrays()[0].copy()
    model[-1] = np.nan
    return flower_message_to_bytes(_reply(msg, {"arrays": ArrayRecord([model])}))


def _plus_one(body: bytes) -> bytes:
    msg = bytes_to_flower_message(body)
    model = msg.content["arrays"].to_numpy_ndarrays()[0]
    return flower_message_to_bytes(_reply(msg, {"arrays": ArrayRecord([model + 1])}))


def _grid_round(
    root: Path, runner: EventsRunner, *, serve: bool = True, **grid_kwargs: object
) -> tuple[SyftGrid, dict[str, Message]]:
    """One train round: OWNER answers NaN, HONEST the model + 1 (if ``serve``)."""
    for email, handler in ((OWNER, _nan_in_the_model), (HONEST, _plus_one)):
        if not serve:
            break
        ev = create_events_watcher(
            APP, make_syft_client(root, email), poll_interval=0.25, settings=PLAIN
        )
        ev.drain_timeout = 0.0
        ev.on_request("messages", handler)
        runner.start(ev)
    grid = SyftGrid(
        APP,
        datasites=[OWNER, HONEST],
        client=make_syft_client(root, RESEARCHER),
        settings=PLAIN,
        **grid_kwargs,  # type: ignore[arg-type]
    )
    grid.set_run(42)
    # 2 MiB: larger than PART_MIN_BYTES, so the reply's array travels as a part.
    model = ArrayRecord([np.zeros(512 * 1024, dtype=np.float32)])
    msgs = [
        grid.create_message(RecordDict({"arrays": model}), "train", nid, "round_1")
        for nid in grid.get_node_ids()
    ]
    try:
        replies = grid.send_and_receive(msgs, timeout=30)
    finally:
        grid.close()
        grid.transport.close()
    return grid, {grid.email_of(r.metadata.src_node_id): r for r in replies}


def test_the_grid_turns_a_nan_reply_into_an_error_for_that_owner_only(
    syft_root: Path, events_runner: EventsRunner, caplog
) -> None:
    with caplog.at_level(logging.INFO, "syft_flwr"):
        grid, by_owner = _grid_round(syft_root, events_runner)
    bad, good = by_owner[OWNER], by_owner[HONEST]
    assert bad.has_error() and bad.error.code == ErrorCode.MESSAGE_UNAVAILABLE
    assert f"{OWNER}: reply refused: array 'arrays'/'0'" in bad.error.reason
    assert not good.has_error()
    assert np.array_equal(
        good.content["arrays"].to_numpy_ndarrays()[0], np.ones(512 * 1024, np.float32)
    )
    refusals = [
        r.getMessage() for r in caplog.records if "refused the reply" in r.getMessage()
    ]
    assert len(refusals) == 1 and OWNER in refusals[0] and HONEST not in refusals[0]
    assert (grid.tally.sent, grid.tally.succeeded, grid.tally.failed) == (2, 1, 1)


def test_the_grid_accepts_nan_when_the_researcher_opts_down(
    syft_root: Path, events_runner: EventsRunner, caplog
) -> None:
    with caplog.at_level(logging.INFO, "syft_flwr"):
        grid, by_owner = _grid_round(syft_root, events_runner, allow_nonfinite=True)
    got = by_owner[OWNER].content["arrays"].to_numpy_ndarrays()[0]
    assert np.isnan(got[-1]) and not by_owner[HONEST].has_error()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("refused the reply" in m for m in messages)
    assert sum("replies holding NaN or Inf are accepted" in m for m in messages) == 1
    assert grid.tally.failed == 0


def test_a_legacy_fitres_is_compared_with_the_fitins_it_answers() -> None:
    """Legacy strategies: the model goes as ``fitins.parameters``, returns as
    ``fitres.parameters`` (Flower's compat names, declared dtype/shape empty)."""
    from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    model = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]
    set_task_identity(7)
    ins = compat.fitins_to_recorddict(
        FitIns(ndarrays_to_parameters(model), {}), keep_input=True
    )
    req = Message(ins, dst_node_id=12345, message_type="train")
    set_message_id(req, "req-legacy")

    def fitres(arrays: list[np.ndarray]) -> Message:
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 10, {})
        return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=req)

    check_reply(req, fitres([a + 1 for a in model]))
    with pytest.raises(
        UnacceptableReply,
        match=r"'fitres.parameters'/'0' is float32 of shape \(3, 4\), the model "
        r"sent was float32 of shape \(4, 3\)",
    ):
        check_reply(req, fitres([np.ones((3, 4), np.float32), model[1]]))
    with pytest.raises(UnacceptableReply, match=r"'fitres.parameters'/'1' holds"):
        check_reply(req, fitres([model[0], np.full(3, np.nan, np.float32)]))


def test_a_refused_reply_is_journaled_as_refused_and_resume_replays_the_refusal(
    syft_root: Path, events_runner: EventsRunner
) -> None:
    """The journal records what the ServerApp saw: the error, never the NaN."""
    journal = Journal(syft_root / "journal", "run-key")
    journal.begin(42)
    _, live = _grid_round(syft_root, events_runner, journal=journal)
    journal.flush()
    events_runner.stop_all()  # nobody answers now: replies come from the journal
    resumed = Journal(syft_root / "journal", "run-key")
    assert resumed.resuming
    _, replayed = _grid_round(syft_root, events_runner, serve=False, journal=resumed)
    assert set(replayed) == {OWNER, HONEST}  # nobody serves: from the journal
    for by_owner in (live, replayed):
        assert by_owner[OWNER].has_error()
        assert "reply refused: array 'arrays'/'0'" in by_owner[OWNER].error.reason
        model = by_owner[HONEST].content["arrays"].to_numpy_ndarrays()[0]
        assert np.array_equal(model, np.ones(512 * 1024, np.float32))
