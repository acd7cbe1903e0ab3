"""Flower ``Message`` <-> bytes, over Flower's own protobuf. Never pickle.

Every metadata field survives the round trip (``message_id``,
``reply_to_message_id``, ``group_id``, ``ttl``, ``created_at``, task ids), and
so do content and errors, with every record type and exact scalar type.

Large arrays skip the protobuf: protobuf copies a ``bytes`` field several times
on the way in and out (about 1 s for a 95 MB model). A message with an
``Array`` of at least :data:`PART_MIN_BYTES` is written as a framed body
(:mod:`syft_flwr.wire.frames`): the protobuf of everything else (the *skeleton*,
those arrays' ``data`` left empty) plus the arrays' bytes as separate parts,
taken from and given back to ``Array.data`` as they are. Smaller messages stay
plain protobuf, byte for byte what earlier versions wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.serde import (
    config_record_to_proto,
    error_to_proto,
    message_from_proto,
    message_to_proto,
    metadata_to_proto,
    metric_record_to_proto,
)
from flwr.proto.message_pb2 import Message as ProtoMessage  # type: ignore[attr-defined]
from flwr.proto.recorddict_pb2 import (  # type: ignore[attr-defined]
    Array as ProtoArray,
)
from flwr.proto.recorddict_pb2 import (  # type: ignore[attr-defined]
    ArrayRecord as ProtoArrayRecord,
)
from flwr.proto.recorddict_pb2 import (  # type: ignore[attr-defined]
    RecordDict as ProtoRecordDict,
)
from google.protobuf.message import DecodeError

from syft_flwr.errors import SerializationError
from syft_flwr.wire import frames

__all__ = [
    "PART_MIN_BYTES",
    "has_large_array",
    "SpillableArray",
    "SplitMessage",
    "bytes_to_flower_message",
    "flower_message_to_bytes",
    "join_message",
    "message_from_bytes",
    "message_to_bytes",
    "split_message",
]

#: Arrays at least this large travel as separate parts, outside the protobuf.
PART_MIN_BYTES = 1024 * 1024


class SplitMessage:
    """A message as a small framed prefix plus the large arrays' bytes.

    ``prefix`` is a detached framed body (:mod:`syft_flwr.wire.frames`); ``parts`` are
    the ``Array.data`` objects themselves (not copies), in table order. A message
    without large arrays has ``parts == ()`` and ``prefix`` is its plain protobuf.
    """

    __slots__ = ("parts", "prefix")

    def __init__(self, prefix: bytes, parts: tuple[bytes, ...]) -> None:
        self.prefix = prefix
        self.parts = parts

    def inline(self) -> bytes:
        """The self-contained bytes (prefix and parts joined)."""
        if not self.parts:
            return self.prefix
        return b"".join((self.prefix, *self.parts))

    def framed(self) -> bytes:
        """The message as bytes without joining: a FramedBody when it has parts.

        For handing a reply to code that writes it out (the event loop, the
        ledger, the transport), which writes the prefix and each part from
        their own buffers; never a 95 MB join.
        """
        if not self.parts:
            return self.prefix
        return frames.FramedBody(self.prefix, self.parts)


class SpillableArray(Array):
    """An ``Array`` whose bytes can leave memory and be read back when needed.

    Used for large received arrays that are also kept on disk (the researcher's
    resume journal holds each reply's sealed chunks). Until :meth:`spill` it is
    an ordinary ``Array``; after it, every access to :attr:`data` reads the bytes
    back with ``reload`` (checked and decrypted again) and does not keep them,
    so replies Flower no longer needs stop holding memory while code that still
    reads them gets the same bytes.

    With ``release_on_read`` the bytes also leave memory once they have been
    read: a strategy aggregating replies one after the other (``numpy()``
    copies them) frees each reply as it goes instead of holding them all.
    """

    def __init__(  # noqa: D107 - documented on the class
        self,
        dtype: str,
        shape: tuple[int, ...],
        stype: str,
        data: bytes,
        reload: Callable[[], bytes],
        *,
        release_on_read: bool = False,
    ) -> None:
        fields = {"dtype": dtype, "shape": tuple(shape), "stype": stype}
        self.__dict__.update(
            fields, _data=data, _reload=reload, _release=release_on_read
        )

    @property  # type: ignore[override]
    def data(self) -> bytes:
        """The array's bytes (read back from disk after :meth:`spill`)."""
        held = self.__dict__.get("_data")
        if held is not None:
            if self.__dict__.get("_release"):
                self.spill()  # the caller holds them now; later reads reload
            return held
        reload = self.__dict__.get("_reload")
        if reload is None:  # pragma: no cover - data was set to None by hand
            raise SerializationError("array has no data")
        return reload()

    @data.setter
    def data(self, value: bytes) -> None:
        # Assigned bytes are the array's own from now on: nothing to reload.
        self.__dict__.update(_data=value, _reload=None, _release=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles are plain Arrays holding the bytes.
        return (Array, (self.dtype, self.shape, self.stype, self.data))

    def spill(self) -> None:
        """Drop the bytes from memory if they can be read back."""
        if self.__dict__.get("_reload") is not None:
            self.__dict__["_data"] = None

    @property
    def spilled(self) -> bool:
        """Whether the bytes are out of memory."""
        return self.__dict__.get("_data") is None


def _skeleton(
    message: Message, min_bytes: int
) -> tuple[bytes, list[frames.PartSlot], list[bytes]]:
    """Protobuf of ``message`` without large arrays' data, and those arrays."""
    slots: list[frames.PartSlot] = []
    parts: list[bytes] = []
    content = None
    if message.has_content():
        items = []
        item_cls = ProtoRecordDict.Item
        for name, record in message.content.items():
            if isinstance(record, ArrayRecord):
                arrays = []
                for key, arr in record.items():
                    data = arr.data
                    if len(data) >= min_bytes:
                        slots.append(frames.PartSlot(name, key, len(data)))
                        parts.append(data)
                        data = b""
                    arrays.append(
                        ProtoArrayRecord.Item(
                            key=key,
                            value=ProtoArray(
                                dtype=arr.dtype,
                                shape=arr.shape,
                                stype=arr.stype,
                                data=data,
                            ),
                        )
                    )
                items.append(
                    item_cls(key=name, array_record=ProtoArrayRecord(items=arrays))
                )
            elif isinstance(record, MetricRecord):
                items.append(
                    item_cls(key=name, metric_record=metric_record_to_proto(record))
                )
            elif isinstance(record, ConfigRecord):
                items.append(
                    item_cls(key=name, config_record=config_record_to_proto(record))
                )
            else:
                raise ValueError(f"Unsupported record type: {type(record)}")
        content = ProtoRecordDict(items=items)
    proto = ProtoMessage(
        metadata=metadata_to_proto(message.metadata),
        content=content,
        error=error_to_proto(message.error) if message.has_error() else None,
    )
    return proto.SerializeToString(), slots, parts


def split_message(
    message: Message,
    *,
    min_bytes: int = PART_MIN_BYTES,
    content_id: str | None = None,
) -> SplitMessage:
    """Split ``message`` into a small framed prefix and its large arrays' bytes.

    Parameters
    ----------
    message:
        Any Flower message.
    min_bytes:
        Arrays at least this large become parts.
    content_id:
        The content's hash (``message.content.object_id``) to name in a framed
        body, so the receiver need not hash the arrays again; ignored for a
        message without large arrays.

    Returns
    -------
    SplitMessage
        ``parts`` are the ``Array.data`` objects themselves (no copy).

    Raises
    ------
    SerializationError
        If Flower cannot encode the message.
    """
    try:
        if not has_large_array(message, min_bytes):
            # Flower's own serializer: small messages stay exactly as before.
            return SplitMessage(message_to_proto(message).SerializeToString(), ())
        skeleton, slots, parts = _skeleton(message, min_bytes)
    except (ValueError, TypeError) as exc:
        raise SerializationError(f"cannot serialize Flower message: {exc}") from exc
    prefix = frames.pack(slots, skeleton, content_id=content_id)
    return SplitMessage(prefix, tuple(parts))


def has_large_array(message: Message, min_bytes: int = PART_MIN_BYTES) -> bool:
    """Whether ``message`` has an array that :func:`split_message` keeps apart."""
    if not message.has_content():
        return False
    return any(
        len(arr.data) >= min_bytes
        for record in message.content.array_records.values()
        for arr in record.values()
    )


def join_message(
    prefix: bytes | memoryview, parts: Sequence[bytes | memoryview]
) -> Message:
    """Rebuild a message from a detached framed prefix and its parts.

    Parts that are ``bytes`` become ``Array.data`` as they are (no copy).

    Raises
    ------
    SerializationError
        The prefix is malformed, or the parts do not match its table.
    """
    frame = frames.parse_frame(prefix)
    if frame.parts:
        raise SerializationError("framed body is inline, but parts were given too")
    return _from_frame(frame, parts)


def _from_frame(frame: frames.Frame, parts: Sequence[bytes | memoryview]) -> Message:
    if len(parts) != len(frame.slots):
        raise SerializationError(
            f"framed body lists {len(frame.slots)} parts, {len(parts)} were given"
        )
    message = _parse_proto(frame.skeleton)
    if not message.has_content():
        raise SerializationError("framed body has parts but no content")
    records = message.content.array_records
    for slot, part in zip(frame.slots, parts, strict=True):
        if len(part) != slot.size:
            raise SerializationError(
                f"part {slot.record}/{slot.key} is {len(part)} bytes, not {slot.size}"
            )
        record = records.get(slot.record)
        arr = record.get(slot.key) if record is not None else None
        if not isinstance(arr, Array) or arr.data != b"":
            raise SerializationError(
                f"framed body part {slot.record}/{slot.key} has no empty array slot"
            )
        arr.data = part if isinstance(part, bytes) else bytes(part)
    return message


def _parse_proto(data: bytes | bytearray | memoryview) -> Message:
    proto = ProtoMessage()
    try:
        proto.ParseFromString(bytes(data))
        if not proto.HasField("metadata"):
            raise SerializationError("bytes are not a Flower message (no metadata)")
        return message_from_proto(proto)
    except SerializationError:
        raise
    except (DecodeError, ValueError, TypeError, KeyError) as exc:
        raise SerializationError(f"bytes are not a Flower message: {exc}") from exc


def flower_message_to_bytes(message: Message) -> bytes:
    """Serialize a Flower ``Message`` to self-contained bytes.

    Parameters
    ----------
    message:
        Any Flower message: instruction, reply or error reply.

    Returns
    -------
    bytes
        ``flwr.proto.message_pb2.Message`` wire bytes, or a framed body
        (:mod:`syft_flwr.wire.frames`) when the message has arrays of at least
        :data:`PART_MIN_BYTES`.

    Raises
    ------
    SerializationError
        If Flower cannot encode the message (e.g. a node id outside uint64).
    """
    return split_message(message).inline()


def bytes_to_flower_message(data: bytes | bytearray | memoryview) -> Message:
    """Parse bytes produced by :func:`flower_message_to_bytes`.

    Also takes a :class:`~syft_flwr.wire.frames.FramedBody` (a prefix read with its
    parts as separate buffers).

    Raises
    ------
    SerializationError
        If the bytes are not a valid Flower message.
    """
    if isinstance(data, frames.FramedBody):
        return join_message(data, data.parts)
    if frames.is_framed(data):
        frame = frames.parse_frame(data)
        if len(frame.slots) and not frame.parts:
            raise SerializationError("framed body without its parts")
        return _from_frame(frame, frame.parts)
    return _parse_proto(data)


# Paired names in the style of Flower's ``*_to_proto`` / ``*_from_proto``.
message_to_bytes = flower_message_to_bytes
message_from_bytes = bytes_to_flower_message
