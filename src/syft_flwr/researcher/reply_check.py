"""Check the values in a data owner's reply before the ServerApp sees them.

A sealed reply proves who sent it, not that its numbers are usable: one data
owner returning NaN turns the global model into NaN, and one returning an array
of another shape or type makes aggregation raise, which ends the run for every
participant. :func:`screen_reply` turns such a reply into a Flower error reply
for that data owner only (as Flower does for a node that failed), so strategies
skip it and the round goes on with the others.

What is refused, per ``Array`` of every ``ArrayRecord`` of a reply:

* an array the request carried under the same record name and key (for legacy
  strategies: ``fitres.parameters`` answering ``fitins.parameters``), whose
  serialization type, dtype or shape differ from the request's;
* a floating-point (or complex) array, or a metric (FedAvg weights replies by
  ``num-examples``), holding NaN or +-Inf, unless the researcher allowed it (``SyftGrid(allow_nonfinite=True)`` or
  ``SYFT_FLWR_ALLOW_NONFINITE=true``);
* a ``numpy.ndarray`` array whose bytes are not a plain ``.npy`` array (what
  ``Array.numpy()`` would fail on, or read as objects);
* a reply whose message type is not the request's.

Arrays the request did not carry (new keys, e.g. statistics of a custom message
type) are checked for finiteness only. Finite values within range (large but
representable, or merely wrong) are *not* refused here: that is value poisoning,
for robust strategies to bound (see ``docs/security.md``).

The check reads the ``.npy`` header and looks at the array's bytes in place
(``numpy.frombuffer``), a block at a time: no copy of the array is made and the
scratch memory is one block of booleans, whatever the model's size.
"""

from __future__ import annotations

import io
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, Error, Message, MetricRecord
from flwr.common.constant import ErrorCode, SType

from syft_flwr._flwr_compat import set_message_id
from syft_flwr.errors import UnacceptableReply

__all__ = ["check_reply", "screen_reply"]

logger = logging.getLogger("syft_flwr.grid")

#: Elements checked for finiteness at a time (1 Mi elements: 1 MiB of scratch).
BLOCK = 1 << 20
#: Largest ``.npy`` header read (numpy's own default limit for ``np.load``).
_MAX_HEADER = 10_000
#: Legacy (``FitIns``/``FitRes``) strategies send the model under one record name
#: and get it back under another (Flower's compat names): compare across them.
_SENT_AS = {"fitres.parameters": "fitins.parameters"}


@dataclass(frozen=True)
class ArrayLayout:
    """What ``Array.numpy()`` would return: element type, shape, where data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int


def array_layout(arr: Array) -> ArrayLayout:
    """Read the ``.npy`` header of a ``numpy.ndarray`` array, without its data.

    Raises
    ------
    UnacceptableReply
        The bytes are not a plain ``.npy`` array of the size its header names.
    """
    data = arr.data
    f = io.BytesIO(data)  # shares the bytes; only the header is read
    try:
        version = np.lib.format.read_magic(f)
        read = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read is None:
            raise ValueError(f".npy format version {version} is not accepted")
        shape, _fortran, dtype = read(f, max_header_size=_MAX_HEADER)
    except (ValueError, TypeError, SyntaxError, OSError) as exc:
        raise UnacceptableReply(f"is not a readable numpy array ({exc})") from exc
    if dtype.hasobject:
        raise UnacceptableReply("holds Python objects, not numbers")
    offset = f.tell()
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        raise UnacceptableReply(
            f"has {len(data) - offset} bytes of data, its header says {expected}"
        )
    return ArrayLayout(dtype, tuple(int(n) for n in shape), offset)


def sent_layout(sent: Array) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and shape of an array the researcher sent.

    Its declared fields when Flower filled them (``Array(ndarray)``): the
    researcher built it, and its bytes are not read (they may have been spilled
    to disk). Legacy ``Parameters`` leave them empty: then its ``.npy`` header.
    """
    if sent.dtype:
        try:
            return np.dtype(sent.dtype), tuple(int(n) for n in sent.shape)
        except (TypeError, ValueError):
            pass
    layout = array_layout(sent)
    return layout.dtype, layout.shape


def _blocks(arr: Array, layout: ArrayLayout) -> Iterator[np.ndarray]:
    """The array's elements as views of its bytes, ``BLOCK`` at a time."""
    flat = np.frombuffer(
        arr.data,
        dtype=layout.dtype,
        count=int(np.prod(layout.shape, dtype=np.int64)),
        offset=layout.offset,
    )
    for start in range(0, flat.size, BLOCK):
        yield flat[start : start + BLOCK]


def is_finite(arr: Array, layout: ArrayLayout) -> bool:
    """Whether a floating-point array holds no NaN or +-Inf (others: always True)."""
    if layout.dtype.kind not in "fc":
        return True
    # Block by block: a bool scratch of BLOCK elements, never one of the
    # model's size, and the first bad block ends the scan.
    return all(bool(np.isfinite(block).all()) for block in _blocks(arr, layout))


def _check_array(arr: Array, sent: Array | None, *, allow_nonfinite: bool) -> None:
    """Raise :class:`UnacceptableReply` (reason without the array's name)."""
    if sent is not None and arr.stype != sent.stype:
        raise UnacceptableReply(
            f"is serialized as {arr.stype!r}, the model sent was {sent.stype!r}"
        )
    if arr.stype != SType.NUMPY:
        # Not numpy: nothing here can read its values; compare what it declares.
        if sent is not None and (arr.dtype, arr.shape) != (sent.dtype, sent.shape):
            raise UnacceptableReply(
                f"is {arr.dtype} of shape {tuple(arr.shape)}, the model sent was "
                f"{sent.dtype} of shape {tuple(sent.shape)}"
            )
        return
    layout = array_layout(arr)
    if sent is not None:
        dtype, shape = sent_layout(sent)
        if (layout.dtype, layout.shape) != (dtype, shape):
            raise UnacceptableReply(
                f"is {layout.dtype} of shape {layout.shape}, the model sent was "
                f"{dtype} of shape {shape}"
            )
    if not allow_nonfinite and not is_finite(arr, layout):
        raise UnacceptableReply("holds values that are not finite numbers (NaN or Inf)")


def check_reply(
    request: Message, reply: Message, *, allow_nonfinite: bool = False
) -> None:
    """Raise if ``reply`` carries arrays a strategy must not aggregate.

    Parameters
    ----------
    request:
        The instruction the grid sent (its arrays are the reference shapes).
    reply:
        The data owner's reply, already matched to ``request``.
    allow_nonfinite:
        Accept NaN and +-Inf in floating-point arrays.

    Raises
    ------
    UnacceptableReply
        Naming the record and key of the first array (or metric: strategies
        weight by them) refused, and why.
    """
    if reply.has_error() or not reply.has_content():
        return
    want_type = request.metadata.message_type
    if reply.metadata.message_type != want_type:
        raise UnacceptableReply(
            f"answers a {reply.metadata.message_type!r} request, "
            f"but it was sent a {want_type!r} request"
        )
    sent_records = request.content.array_records if request.has_content() else {}
    for name, record in reply.content.array_records.items():
        sent_record = sent_records.get(name, sent_records.get(_SENT_AS.get(name, "")))
        for key, arr in record.items():
            sent = sent_record.get(key) if sent_record is not None else None
            try:
                _check_array(arr, sent, allow_nonfinite=allow_nonfinite)
            except UnacceptableReply as exc:
                raise UnacceptableReply(f"array {name!r}/{key!r} {exc}") from None
    if not allow_nonfinite:
        for name, metrics in reply.content.metric_records.items():
            _check_metrics(name, metrics)


def _check_metrics(name: str, metrics: MetricRecord) -> None:
    """Metrics weight the aggregation (``num-examples``): NaN/Inf poison it too."""
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        # Ints are always finite (and may not fit a float): floats only.
        if not all(math.isfinite(v) for v in values if isinstance(v, float)):
            raise UnacceptableReply(
                f"metric {name!r}/{key!r} is not a finite number ({value!r})"
            )


def screen_reply(
    request: Message, reply: Message, *, sender: str, allow_nonfinite: bool = False
) -> Message:
    """Return ``reply``, or an error reply for ``sender`` if it is refused.

    The refusal is logged (which data owner, which array, why) and becomes a
    Flower error reply (``ErrorCode.MESSAGE_UNAVAILABLE``), so strategies count
    it among the failures and aggregate the other data owners' replies.
    """
    try:
        check_reply(request, reply, allow_nonfinite=allow_nonfinite)
    except UnacceptableReply as exc:
        logger.warning(
            "refused the reply of %s to %s request %s: %s; it counts as a failed "
            "reply from %s and the round goes on with the other data owners",
            sender,
            request.metadata.message_type,
            request.metadata.message_id,
            exc,
            sender,
        )
        refused = Message(
            Error(
                code=ErrorCode.MESSAGE_UNAVAILABLE,
                reason=f"{sender}: reply refused: {exc}",
            ),
            reply_to=request,
        )
        set_message_id(refused, str(uuid.uuid4()))
        return refused
    return reply
