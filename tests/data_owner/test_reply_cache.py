"""``ReplyCache`` in its home (issue 25): kept replies come back only as written."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, RecordDict

from syft_flwr._flwr_compat import set_message_id, set_routing, set_task_identity
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import TAG_LEN, StateKey
from syft_flwr.data_owner.reply_cache import ReplyCache
from syft_flwr.serde import split_message
from syft_flwr.wire import frames


def _reply(value: float, size: int = 4) -> Message:
    set_task_identity(5)  # Flower needs a run to build a message in
    msg = Message(
        RecordDict({"arrays": ArrayRecord([np.full(size, value)])}), 3, "train"
    )
    set_routing(msg, run_id=5, src_node_id=1)
    set_message_id(msg, f"m{value}")
    return Message(
        RecordDict({"arrays": ArrayRecord([np.full(size, value)])}), reply_to=msg
    )


def _values(msg: Message) -> list[float]:
    return msg.content["arrays"].to_numpy_ndarrays()[0].tolist()


def test_a_tagged_reply_comes_back_whole(tmp_path: Path) -> None:
    key = StateKey(generate_keys(), "reply-cache")
    cache = ReplyCache(tmp_path, state_key=key)
    cache.put("fp", _reply(2.5))
    data = (tmp_path / "fp.reply").read_bytes()
    assert len(data) > TAG_LEN  # the reply, then its tag
    got = cache.get("fp")
    assert got is not None and _values(got) == [2.5] * 4


def test_a_framed_reply_is_written_from_its_parts(tmp_path: Path) -> None:
    # A large reply arrives as a FramedBody (prefix + parts): written without a
    # join, read back as the same message.
    key = StateKey(generate_keys(), "reply-cache")
    body = split_message(_reply(1.0, size=64), min_bytes=64).framed()
    assert isinstance(body, frames.FramedBody) and body.parts
    cache = ReplyCache(tmp_path, state_key=key)
    cache.put("fp", body)
    got = cache.get("fp")
    assert got is not None and _values(got) == [1.0] * 64


def test_a_reply_altered_on_disk_is_not_used_and_the_reason_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = StateKey(generate_keys(), "reply-cache")
    cache = ReplyCache(tmp_path, state_key=key)
    cache.put("fp", _reply(2.5))
    path = tmp_path / "fp.reply"
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0x01
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="syft_flwr.checkpoint"):
        assert cache.get("fp") is None  # computed again, never re-sent
    assert "not using a cached reply" in caplog.text
    assert "integrity check" in caplog.text
