"""The worker's pipe protocol: length-prefixed binary frames, never pickle.

A frame is one kind byte, a 4-byte big-endian length, then the payload. Control
frames carry strict JSON; requests and replies carry Flower Message bytes
(:mod:`syft_flwr.serde`). Both ends read with a size limit, and the data owner's
side reads every frame from the worker as untrusted input. Stdlib only: the
child imports it before anything else.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from collections.abc import Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "APP_ERROR",
    "EXIT",
    "FrameError",
    "READY",
    "REPLY",
    "REQUEST",
    "START",
    "UNAVAILABLE",
    "FrameReader",
    "parse_json",
    "grow",
    "read_frame",
    "write_frame",
    "write_parts",
]

START = b"S"  # data owner -> worker: JSON start frame
REQUEST = b"Q"  # data owner -> worker: 8-byte run id + Message bytes
EXIT = b"X"  # data owner -> worker: leave now
READY = b"R"  # worker -> data owner: JSON {"enforced": ...}
UNAVAILABLE = b"U"  # worker -> data owner: JSON {"unavailable": ..., "layers": [...]}
REPLY = b"A"  # worker -> data owner: the reply Message bytes
APP_ERROR = b"E"  # worker -> data owner: JSON {"type": ..., "text": ...}

_HEAD = struct.Struct(">cI")
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031
#: Control frames are small: anything bigger is not a control frame.
MAX_JSON = 64 * 1024


class FrameError(ValueError):
    """A frame broke the protocol (garbled, oversized, cut short, or late)."""


def write_frame(
    fd: int, kind: bytes, payload: bytes, deadline: float | None = None
) -> None:
    """Write one frame to ``fd``; with ``deadline`` (monotonic) never block past it."""
    write_parts(fd, kind, (payload,), deadline)


def write_parts(
    fd: int,
    kind: bytes,
    parts: Sequence[bytes | bytearray | memoryview],
    deadline: float | None = None,
) -> None:
    """Write one frame whose payload is ``parts`` joined, without joining them.

    A 95 MB model travels as its own buffers (the framed Message's prefix and
    array parts), never copied into one.
    """
    size = sum(len(p) for p in parts)
    for piece in (_HEAD.pack(kind, size), *parts):
        data = memoryview(piece).cast("B")
        while data:
            if deadline is not None:
                _wait(fd, deadline, write=True)
            n = os.write(fd, data[:_CHUNK])
            data = data[n:]


def grow(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (Linux): fewer switches for a large model."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
    except (OSError, AttributeError):
        pass  # not Linux, or over the system's limit: the default still works


def _wait(fd: int, deadline: float, *, write: bool) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], left)
    if not (r or w):
        raise TimeoutError("the deadline passed")


class FrameReader:
    """Reads frames from one file descriptor, each at most ``limit`` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit

    def read(self, deadline: float | None = None) -> tuple[bytes, bytearray]:
        """The next frame's kind and payload.

        Raises
        ------
        FrameError
            The worker closed the pipe, or the frame is over the limit.
        TimeoutError
            ``deadline`` (monotonic) passed first.
        """
        kind, size = _HEAD.unpack(self._exact(_HEAD.size, deadline))
        if size > self.limit:
            raise FrameError(
                f"a frame of {size} bytes is over the limit of {self.limit}"
            )
        return kind, self._exact(size, deadline)

    def _exact(self, n: int, deadline: float | None) -> bytearray:
        """Exactly ``n`` bytes, read into one buffer (no join of pieces)."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            if deadline is not None:
                _wait(self.fd, deadline, write=False)
            k = os.readv(self.fd, [view[got : got + _CHUNK]])
            if not k:
                raise FrameError(
                    "the pipe closed in the middle of a frame"
                    if got
                    else "the pipe closed"
                )
            got += k
        view.release()
        return buf


def read_frame(fd: int, limit: int) -> tuple[bytes, bytearray]:
    """One frame from ``fd`` (blocking), at most ``limit`` bytes."""
    return FrameReader(fd, limit).read()


def parse_json(payload: bytes | bytearray) -> dict[str, object]:
    """A control frame's payload: one JSON object, strictly, or :class:`FrameError`."""
    if len(payload) > MAX_JSON:
        raise FrameError("a control frame over 64 KiB")
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"a control frame that is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FrameError("a control frame that is not a JSON object")
    return data


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
