"""Flower ``Message`` <-> bytes, over Flower's own protobuf. Never pickle.

Every metadata field survives the round trip (``message_id``,
``reply_to_message_id``, ``group_id``, ``ttl``, ``created_at``, task ids), and
so do content and errors.
"""

from __future__ import annotations

from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # type: ignore[attr-defined]
from google.protobuf.message import DecodeError

from syft_flwr.errors import SerializationError

__all__ = [
    "bytes_to_flower_message",
    "flower_message_to_bytes",
    "message_from_bytes",
    "message_to_bytes",
]


def flower_message_to_bytes(message: Message) -> bytes:
    """Serialize a Flower ``Message`` to protobuf bytes.

    Parameters
    ----------
    message:
        Any Flower message: instruction, reply or error reply.

    Returns
    -------
    bytes
        ``flwr.proto.message_pb2.Message`` wire bytes.

    Raises
    ------
    SerializationError
        If Flower cannot encode the message (e.g. a node id outside uint64).
    """
    try:
        return message_to_proto(message).SerializeToString()
    except (ValueError, TypeError) as exc:
        raise SerializationError(f"cannot serialize Flower message: {exc}") from exc


def bytes_to_flower_message(data: bytes | bytearray | memoryview) -> Message:
    """Parse protobuf bytes produced by :func:`flower_message_to_bytes`.

    Raises
    ------
    SerializationError
        If the bytes are not a valid Flower message.
    """
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


# Paired names in the style of Flower's ``*_to_proto`` / ``*_from_proto``.
message_to_bytes = flower_message_to_bytes
message_from_bytes = bytes_to_flower_message
