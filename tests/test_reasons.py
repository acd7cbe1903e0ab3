"""An error reply's reason is shown only as the text its data owner wrote."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, Metadata, RecordDict

from syft_flwr.serde import flower_message_to_bytes
from syft_flwr.wire.reasons import MAX_REASON_CHARS, reason_text


def test_a_written_reason_is_shown_as_it_is() -> None:
    assert reason_text(b"RuntimeError: out of memory") == "RuntimeError: out of memory"
    assert reason_text("données refusées".encode()) == "données refusées"


def test_a_serialized_message_is_never_shown_as_a_reason() -> None:
    md = Metadata(
        run_id=7,
        message_id="m1",
        src_node_id=2,
        dst_node_id=1,
        reply_to_message_id="r1",
        group_id="g",
        created_at=1767268800.0,
        ttl=60.0,
        message_type="train",
    )
    content = RecordDict({"config": ConfigRecord({"weights": "SECRET-MODEL-VALUES"})})
    body = flower_message_to_bytes(Message(metadata=md, content=content))
    shown = reason_text(body)
    assert "SECRET-MODEL-VALUES" not in shown
    assert shown == f"(a {len(body)}-byte reason that is not text; not shown)"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"\xff\xfe binary", "(a 9-byte reason that is not text; not shown)"),
        (b"ok\x1b[2K\rREFUSED->ok", "(a 18-byte reason that is not text; not shown)"),
        ("bidi \u202e flip".encode(), "bidi \\u202e flip"),
        ("c1 \u009b31m".encode(), "c1 \\x9b31m"),
        (b"line one\nline two\r", "line one\\nline two\\r"),
    ],
)
def test_terminal_tricks_are_escaped_or_refused(raw: bytes, shown: str) -> None:
    assert reason_text(raw) == shown


def test_a_long_reason_is_cut_and_says_so() -> None:
    shown = reason_text(b"x" * (MAX_REASON_CHARS + 5))
    assert shown == "x" * MAX_REASON_CHARS + " ... (5 more characters)"
