"""The privacy step inside the data owner's handler: what leaves is clipped,
noised and paid for, or nothing leaves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from _privacy_support import policy
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from syft_flwr._flwr_compat import set_message_id, set_task_identity
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.privacy import BudgetLedger, PrivacyGuard
from syft_flwr.data_owner.privacy.accountant import epsilon_spent, event_key
from syft_flwr.data_owner.reply_cache import ReplyCache
from syft_flwr.data_owner.worker import RequestInfo, _current
from syft_flwr.ids import node_id_for
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes

DO = "do1@example.org"
SHAPE = (20, 10)


def _evil_app(runs: list[int]) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:  # type: ignore[no-untyped-def]
        runs.append(1)
        w = msg.content["arrays"]["w"].numpy()
        # A malicious update: the data itself, scaled up, in every weight.
        huge = ArrayRecord({"w": Array((w + 1e6).astype(np.float32))})
        return Message(
            RecordDict({"arrays": huge, "metrics": MetricRecord({"num-examples": 50})}),
            reply_to=msg,
        )

    return app


def _request(mid: str = "m-1") -> Message:
    set_task_identity(5)
    rd = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(SHAPE, np.float32))})})
    msg = Message(rd, dst_node_id=node_id_for(DO), message_type="train")
    set_message_id(msg, mid)
    return msg


def _handler(tmp_path: Path, eps: float, runs: list[int], **kw) -> ClientAppHandler:  # type: ignore[no-untyped-def]
    p = policy(
        clip_norm=1.0,
        noise_multiplier=kw.pop("sigma", 1.0),
        epsilon=eps,
        sensitivities={"num-examples": 1.0},
    )
    key = StateKey(generate_keys(), "privacy-budget")
    guard = PrivacyGuard(
        p,
        BudgetLedger(tmp_path / "budget", key),
        rng=np.random.default_rng(0),
        default_project="flwr/toy",
    )
    return ClientAppHandler(_evil_app(runs), email=DO, privacy=guard, **kw)


def _call(h: ClientAppHandler, msg: Message, audit: dict[str, object]) -> Message:
    req = RequestInfo(
        id="r-" + msg.metadata.message_id,
        sender="ds@example.org",
        endpoint="/",
        created="",
        expires="",
        headers={},
        encrypted=False,
        audit=audit,
    )
    token = _current.set(req)
    try:
        return bytes_to_flower_message(bytes(h(flower_message_to_bytes(msg))))
    finally:
        _current.reset(token)


def test_malicious_clientapp_cannot_avoid_clipping(tmp_path: Path) -> None:
    runs: list[int] = []
    h = _handler(tmp_path, 100.0, runs)
    audit: dict[str, object] = {}
    reply = _call(h, _request(), audit)
    assert not reply.has_error() and runs == [1]
    sent = reply.content["arrays"]["w"].numpy().astype(np.float64)
    # Clipped to norm 1, then noise of std 1 * sqrt(2) (update + one metric):
    # nowhere near the 1e6 the ClientApp put in every weight.
    assert np.abs(sent).max() < 10
    k = np.sqrt(2)
    assert abs(sent.std() / k - 1) < 0.15  # 200 draws of the noise
    assert "charged to dataset 'default'" in str(audit["privacy"])
    assert isinstance(
        reply.content["metrics"]["num-examples"], int
    )  # noised, still int


def test_budget_refuses_exactly_and_nothing_leaves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one = epsilon_spent({event_key(1.0, 1.0): 2}, 1e-5)
    two = epsilon_spent({event_key(1.0, 1.0): 3}, 1e-5)
    runs: list[int] = []
    h = _handler(tmp_path, (one + two) / 2, runs)
    for i in range(2):
        assert not _call(h, _request(f"m-{i}"), {}).has_error()
    audit: dict[str, object] = {}
    with caplog.at_level(logging.WARNING, "syft_flwr.data_owner.privacy"):
        reply = _call(h, _request("m-9"), audit)
    assert reply.has_error()
    assert "out of privacy budget" in reply.error.reason
    assert "left" in reply.error.reason and "spent" in reply.error.reason
    assert not reply.has_content()  # nothing of the update leaves
    assert str(audit["outcome"]).startswith(
        "refused: dataset 'default' is out of privacy budget"
    )
    assert "out of privacy budget" in caplog.text
    assert h.refused == 1 and h.succeeded == 2


def test_resent_request_is_answered_from_kept_reply_without_a_second_charge(
    tmp_path: Path,
) -> None:
    runs: list[int] = []
    h = _handler(tmp_path, 100.0, runs, reply_cache=ReplyCache(tmp_path / "rc"))
    first = _call(h, _request(), {})
    again = _call(h, _request(), {})
    assert runs == [1]  # ran once
    ledger = h.privacy.ledger  # type: ignore[union-attr]
    assert ledger.read("default").all_counts() == {event_key(1.0, 1.0): 1}
    # The kept reply is the noised one: the very same numbers leave again.
    assert np.array_equal(
        first.content["arrays"]["w"].numpy(), again.content["arrays"]["w"].numpy()
    )


def test_crash_after_charge_never_lets_a_reply_out_uncharged(tmp_path: Path) -> None:
    # The reply cache fails (the process "dies") after the charge was written:
    # the charge is already durable; the re-sent request runs again and pays again
    # (over-counting, never under-counting).
    class Dying(ReplyCache):
        def put(self, fp: str, data: bytes) -> None:  # type: ignore[override]
            raise SystemExit("killed")

    runs: list[int] = []
    h = _handler(tmp_path, 100.0, runs, reply_cache=Dying(tmp_path / "rc"))
    with pytest.raises(SystemExit):
        _call(h, _request(), {})
    ledger = h.privacy.ledger  # type: ignore[union-attr]
    assert ledger.read("default").all_counts() == {event_key(1.0, 1.0): 1}
    h2 = _handler(tmp_path, 100.0, runs, reply_cache=ReplyCache(tmp_path / "rc"))
    h2.privacy.ledger = ledger  # type: ignore[union-attr]  # same files, same key
    assert not _call(h2, _request(), {}).has_error()
    assert ledger.read("default").all_counts() == {event_key(1.0, 1.0): 2}


def test_reply_with_unmatched_arrays_is_refused(tmp_path: Path) -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:  # type: ignore[no-untyped-def]
        bad = ArrayRecord({"w": Array(np.zeros((3, 3), np.float32))})
        return Message(RecordDict({"arrays": bad}), reply_to=msg)

    h = _handler(tmp_path, 100.0, [])
    h.client_app = app
    audit: dict[str, object] = {}
    reply = _call(h, _request(), audit)
    assert reply.has_error() and "privacy policy refused" in reply.error.reason
    assert "shape" in reply.error.reason
    assert h.privacy.ledger.datasets() == []  # type: ignore[union-attr]
    assert "refused" in str(audit["privacy"])


def test_tampered_budget_refuses_every_reply(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []
    h = _handler(tmp_path, 100.0, runs)
    assert not _call(h, _request("m-1"), {}).has_error()
    f = h.privacy.ledger.path("default")  # type: ignore[union-attr]
    doc = json.loads(f.read_text())
    for counts in doc["body"]["projects"].values():  # a "refund"
        for k in counts:
            counts[k] = 0
    f.write_text(json.dumps(doc))
    audit: dict[str, object] = {}
    with caplog.at_level(logging.ERROR, "syft_flwr.data_owner.privacy"):
        reply = _call(h, _request("m-2"), audit)
    assert reply.has_error() and not reply.has_content()
    assert "privacy budget could not be checked" in reply.error.reason
    assert "failed its integrity check" in caplog.text
    assert str(audit["outcome"]).startswith("refused:")
