"""Flower Message <-> bytes: every metadata field, every record type, errors, garbage."""

from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import ErrorCode

from syft_flwr.errors import SerializationError
from syft_flwr.serde import (
    bytes_to_flower_message,
    flower_message_to_bytes,
    message_from_bytes,
    message_to_bytes,
)

U64_MAX = 2**64 - 1


def _metadata(message_type: str = "train", **changes: object) -> Metadata:
    values: dict[str, object] = {
        "run_id": 987654321012,
        "message_id": "msg-0001",
        "src_node_id": 1,
        "dst_node_id": 2891336453,
        "reply_to_message_id": "",
        "group_id": "round_7",
        "created_at": 1767268800.123456,
        "ttl": 123.25,
        "message_type": message_type,
    }
    values.update(changes)
    return Metadata(**values)  # type: ignore[arg-type]


def _roundtrip(msg: Message) -> Message:
    data = flower_message_to_bytes(msg)
    assert isinstance(data, bytes)
    return bytes_to_flower_message(data)


def _full_content() -> RecordDict:
    rng = np.random.default_rng(1)
    return RecordDict(
        {
            "arrays": ArrayRecord(
                {
                    "w": Array(rng.standard_normal((3, 4)).astype(np.float32)),
                    "b": Array(np.arange(5, dtype=np.int64)),
                    "scalar": Array(np.array(2.5, dtype=np.float64)),
                    "empty": Array(np.zeros((0,), dtype=np.float32)),
                }
            ),
            "metrics": MetricRecord(
                {
                    "loss": 0.125,
                    "num-examples": 1234,
                    "neg": -7,
                    "per-class": [0.1, 0.2, 0.7],
                    "counts": [1, 2, 3],
                }
            ),
            "config": ConfigRecord(
                {
                    "int": 42,
                    "big": 2**62,
                    "float": -1.5e-9,
                    "str": "héllo wörld ✓",
                    "empty_str": "",
                    "true": True,
                    "false": False,
                    "bytes": b"\x00\xff\x10binary",
                    "empty_bytes": b"",
                    "ints": [1, -2, 3],
                    "floats": [0.5, 1.5],
                    "strs": ["a", "b"],
                    "bools": [True, False, True],
                    "bytes_list": [b"x", b"\x00"],
                }
            ),
        }
    )


@pytest.mark.parametrize(
    "message_type",
    ["train", "evaluate", "query", "train.custom", "query.stats", "system"],
)
def test_every_metadata_field_survives(message_type: str) -> None:
    md = _metadata(message_type)
    msg = Message(metadata=md, content=RecordDict({"c": ConfigRecord({"x": 1})}))
    out = _roundtrip(msg)
    got = out.metadata
    assert got.message_id == "msg-0001"
    assert got.reply_to_message_id == ""
    assert got.group_id == "round_7"
    assert got.ttl == 123.25
    assert got.created_at == 1767268800.123456
    assert got.src_node_id == 1
    assert got.dst_node_id == 2891336453
    assert got.run_id == 987654321012
    assert got.message_type == message_type
    assert got == md


def test_reply_metadata_survives_including_reply_to() -> None:
    ins = Message(metadata=_metadata(), content=RecordDict())
    reply = Message(RecordDict({"m": MetricRecord({"acc": 0.9})}), reply_to=ins)
    reply.metadata.__dict__["_message_id"] = "reply-1"
    out = _roundtrip(reply)
    assert out.metadata.reply_to_message_id == "msg-0001"
    assert out.metadata.message_id == "reply-1"
    assert out.metadata.src_node_id == 2891336453
    assert out.metadata.dst_node_id == 1
    assert out.metadata.run_id == 987654321012
    assert out.metadata.group_id == "round_7"
    assert out.metadata == reply.metadata


def test_extreme_node_ids_survive() -> None:
    md = _metadata(src_node_id=U64_MAX, dst_node_id=2, run_id=U64_MAX)
    out = _roundtrip(Message(metadata=md, content=RecordDict()))
    assert out.metadata.src_node_id == U64_MAX
    assert out.metadata.dst_node_id == 2
    assert out.metadata.run_id == U64_MAX


def test_node_id_outside_uint64_is_a_serialization_error() -> None:
    msg = Message(metadata=_metadata(dst_node_id=2**64), content=RecordDict())
    with pytest.raises(SerializationError):
        flower_message_to_bytes(msg)


def test_content_with_every_record_and_scalar_type_survives() -> None:
    content = _full_content()
    out = _roundtrip(Message(metadata=_metadata(), content=content))
    assert out.has_content() and not out.has_error()
    got = out.content
    assert set(got.keys()) == {"arrays", "metrics", "config"}

    arrays = got.array_records["arrays"]
    want = content.array_records["arrays"]
    assert list(arrays.keys()) == list(want.keys())
    for key in want:
        a, b = arrays[key].numpy(), want[key].numpy()
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)

    assert dict(got.metric_records["metrics"]) == dict(
        content.metric_records["metrics"]
    )
    cfg = dict(got.config_records["config"])
    assert cfg == dict(content.config_records["config"])
    # Types survive, not only values (True must not become 1, bytes not str).
    for key, value in content.config_records["config"].items():
        assert type(cfg[key]) is type(value), key
        if isinstance(value, list):
            assert [type(v) for v in cfg[key]] == [type(v) for v in value], key


def test_empty_content_survives() -> None:
    out = _roundtrip(Message(metadata=_metadata(), content=RecordDict()))
    assert out.has_content()
    assert len(out.content) == 0


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
        ErrorCode.NODE_UNAVAILABLE,
        ErrorCode.UNKNOWN,
    ],
)
def test_error_reply_survives(code: int) -> None:
    ins = Message(metadata=_metadata(), content=RecordDict())
    err = Message(Error(code=code, reason=f"reason {code}: ✗"), reply_to=ins)
    out = _roundtrip(err)
    assert out.has_error() and not out.has_content()
    assert out.error.code == code
    assert out.error.reason == f"reason {code}: ✗"
    assert out.metadata.reply_to_message_id == "msg-0001"


def test_roundtrip_is_stable() -> None:
    msg = Message(metadata=_metadata(), content=_full_content())
    data = flower_message_to_bytes(msg)
    assert flower_message_to_bytes(bytes_to_flower_message(data)) == data


def test_accepts_bytearray_and_memoryview() -> None:
    data = flower_message_to_bytes(Message(metadata=_metadata(), content=RecordDict()))
    assert bytes_to_flower_message(bytearray(data)).metadata.message_id == "msg-0001"
    assert bytes_to_flower_message(memoryview(data)).metadata.message_id == "msg-0001"


def test_paired_aliases() -> None:
    assert message_to_bytes is flower_message_to_bytes
    assert message_from_bytes is bytes_to_flower_message


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"hello world",
        b'{"id": "not protobuf"}',
        bytes(range(256)),
        b"\x0a\x00",  # a metadata field that is empty: no valid message_type
        b"\xff" * 64,
    ],
)
def test_garbage_is_a_serialization_error(garbage: bytes) -> None:
    with pytest.raises(SerializationError):
        bytes_to_flower_message(garbage)


def test_random_and_truncated_bytes_only_raise_serialization_error() -> None:
    rng = random.Random(1234)
    valid = flower_message_to_bytes(
        Message(metadata=_metadata(), content=_full_content())
    )
    samples = [
        bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 80))) for _ in range(300)
    ]
    samples += [valid[:n] for n in range(0, len(valid), max(1, len(valid) // 150))]
    flipped = bytearray(valid)
    for i in range(0, len(flipped), 7):
        flipped[i] ^= 0x5A
    samples.append(bytes(flipped))
    errors = 0
    for data in samples:
        try:
            out = bytes_to_flower_message(data)
        except SerializationError:
            errors += 1
        else:
            assert isinstance(out, Message)
    # Most of them are not messages at all; the point is that nothing else leaks out.
    assert errors > len(samples) // 2


# -- large arrays: the framed body (no protobuf copies) ---------------------------------

BIG = 2 * 1024 * 1024  # above serde.PART_MIN_BYTES


def _big_content(seed: int = 0) -> RecordDict:
    rng = np.random.default_rng(seed)
    content = _full_content()
    content["model"] = ArrayRecord(
        {
            "w": Array(rng.standard_normal(BIG // 4).astype(np.float32)),
            "b": Array(np.arange(5, dtype=np.int64)),  # small: stays in the skeleton
            "v": Array(rng.integers(0, 9, BIG // 8 + 3).astype(np.int64)),
        }
    )
    return content


def test_large_arrays_use_the_framed_body_and_survive_exactly() -> None:
    from syft_flwr.wire import frames

    content = _big_content()
    msg = Message(metadata=_metadata(), content=content)
    data = flower_message_to_bytes(msg)
    assert frames.is_framed(data)
    out = bytes_to_flower_message(data)
    assert out.metadata == msg.metadata
    for name, record in content.items():
        got = out.content[name]
        assert type(got) is type(record)
        if isinstance(record, ArrayRecord):
            for key, arr in record.items():
                assert got[key].dtype == arr.dtype and got[key].shape == arr.shape
                assert got[key].data == arr.data
        else:
            # exact scalar types (int stays int, bytes stays bytes, ...)
            assert {k: (type(v), v) for k, v in got.items()} == {
                k: (type(v), v) for k, v in record.items()
            }


def test_small_messages_stay_plain_protobuf_byte_for_byte() -> None:
    from flwr.common.serde import message_to_proto

    msg = Message(metadata=_metadata(), content=_full_content())
    assert flower_message_to_bytes(msg) == message_to_proto(msg).SerializeToString()


def test_split_message_does_not_copy_the_arrays() -> None:
    from syft_flwr.serde import join_message, split_message

    content = _big_content(1)
    msg = Message(metadata=_metadata(), content=content)
    split = split_message(msg)
    assert len(split.prefix) < 64 * 1024
    assert [
        p is content["model"][k].data for p, k in zip(split.parts, "wv", strict=True)
    ] == [
        True,
        True,
    ]
    out = join_message(split.prefix, split.parts)
    # The received parts become Array.data as they are.
    assert out.content["model"]["w"].data is split.parts[0]
    assert np.array_equal(
        out.content["model"]["v"].numpy(), content["model"]["v"].numpy()
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # a part one byte short
        lambda d: d + b"x",  # trailing bytes
        lambda d: d[:4] + b"\x09" + d[5:],  # unknown framing version
        lambda d: d[:12] + b"\xff\xff\xff\xff" + d[16:],  # absurd skeleton length
    ],
)
def test_damaged_framed_bodies_are_refused(mutate) -> None:  # noqa: ANN001
    data = flower_message_to_bytes(
        Message(metadata=_metadata(), content=_big_content())
    )
    with pytest.raises(SerializationError):
        bytes_to_flower_message(mutate(data))


def test_framed_table_must_match_the_skeleton() -> None:
    from syft_flwr.serde import join_message, split_message
    from syft_flwr.wire import frames

    split = split_message(Message(metadata=_metadata(), content=_big_content()))
    frame = frames.parse_frame(split.prefix)
    wrong = frames.pack(
        [frames.PartSlot("model", "nope", s.size) for s in frame.slots[:1]]
        + list(frame.slots[1:]),
        bytes(frame.skeleton),
    )
    with pytest.raises(SerializationError, match="no empty array slot"):
        join_message(wrong, split.parts)
    with pytest.raises(SerializationError, match="lists 2 parts, 1 were given"):
        join_message(split.prefix, split.parts[:1])


def test_a_framed_body_may_name_its_content_hash() -> None:
    from syft_flwr.errors import SerializationError
    from syft_flwr.serde import split_message
    from syft_flwr.wire import frames

    msg = Message(
        metadata=_metadata(),
        content=RecordDict({"a": ArrayRecord({"w": Array(np.zeros(300_000))})}),
    )
    plain = split_message(msg)
    named = split_message(msg, content_id="0f" * 32)
    # Version 1 unless a hash is named; readers see the same message either way.
    assert plain.prefix[4] == frames.VERSION and named.prefix[4] == frames.VERSION_NAMED
    assert frames.content_id(plain.prefix) is None
    assert frames.content_id(named.prefix) == "0f" * 32
    assert frames.content_id(named.inline()) == "0f" * 32
    back = bytes_to_flower_message(named.inline())
    assert back.content["a"]["w"].data == msg.content["a"]["w"].data
    # A small message is plain protobuf: nothing to name.
    small = split_message(
        Message(metadata=_metadata(), content=RecordDict()), content_id="0f" * 32
    )
    assert frames.content_id(small.prefix) is None
    with pytest.raises(SerializationError, match="64 lowercase hex"):
        split_message(msg, content_id="NOT-HEX")


@pytest.mark.parametrize(
    ("table", "why"),
    [
        (b'{"parts":[],"content":"zz"}', "64 hex"),
        (b'{"parts":[],"content":"' + b"ab" * 32 + b'","more":1}', "exactly"),
        (b'[["a","w",0]]', "exactly"),
        (b'{"content":"' + b"ab" * 32 + b'"}', "exactly"),
    ],
)
def test_a_named_table_is_parsed_strictly(table: bytes, why: str) -> None:
    import struct

    from syft_flwr.errors import SerializationError
    from syft_flwr.wire import frames

    body = struct.pack(">4sBIQ", frames.MAGIC, 2, len(table), 0) + table
    with pytest.raises(SerializationError, match=why):
        frames.parse_frame(body)
    assert frames.content_id(body) is None  # never raises


def test_a_framed_body_of_a_newer_version_asks_for_an_upgrade() -> None:
    import struct

    from syft_flwr.errors import SerializationError
    from syft_flwr.wire import frames

    body = struct.pack(">4sBIQ", frames.MAGIC, 3, 2, 0) + b"[]"
    with pytest.raises(SerializationError, match="upgrade syft_flwr"):
        frames.parse_frame(body)
