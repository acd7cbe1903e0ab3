"""``Resume``: the resume journal's side of ``SyftGrid.send_and_receive``.

A call recorded before a crash is answered from the journal; a completed live
call is recorded before the ServerApp sees its replies. Large replies are not
rewritten: their sealed attachments are linked into the journal, and their
arrays are backed by those files so they can leave memory (spilling).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence

from flwr.app import Message

from syft_flwr._flwr_compat import set_reply_to
from syft_flwr.researcher.journal import Entry, Journal, Kept, request_fingerprints
from syft_flwr.serde import SpillableArray, bytes_to_flower_message
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import BlobRef
from syft_flwr.wire.mailbox import Incoming, SyftFlwrRpc

__all__ = ["Resume"]

logger = logging.getLogger("syft_flwr.grid")


class Resume:
    """Answers calls from the journal, records live ones, spills large replies.

    Parameters
    ----------
    journal : Journal
        The researcher's resume record.
    rpc : SyftFlwrRpc
        The researcher's mailbox (links a reply's sealed attachments).
    """

    def __init__(self, journal: Journal, rpc: SyftFlwrRpc) -> None:
        self.journal = journal
        self._rpc = rpc
        self._lock = threading.Lock()
        # Replies whose attachments were linked into the journal (message id ->
        # prefix, references, stems), while a journaled call is in flight.
        self._kept: dict[str, Kept] = {}
        self._keeping = False
        # Large reply arrays backed by the journal, released at the next call.
        self._spillable: list[SpillableArray] = []

    def call(
        self,
        messages: list[Message],
        live: Callable[[list[Message]], list[Message]],
        route: Callable[[list[Message]], None],
    ) -> tuple[list[Message], bool]:
        """Answer ``messages`` from the journal, or by ``live`` and record them.

        ``route(messages)`` gives replayed messages the routing and ids a live
        push would. Returns the replies and whether they were replayed.
        """
        fps = request_fingerprints(messages)
        recorded = self.journal.replay(fps)
        if recorded is not None:
            return self._replay(messages, recorded, route), True
        self._spill()
        self._keeping = True
        try:
            replies = live(messages)
        finally:
            self._keeping = False
            with self._lock:
                kept, self._kept = self._kept, {}
        by_id = {r.metadata.reply_to_message_id: r for r in replies}
        entries: list[tuple[str, Entry]] = []
        for fp, m in zip(fps, messages, strict=True):
            mid = m.metadata.message_id
            entries.append((fp, kept.get(mid) or by_id.get(mid)))
        self.journal.record(entries)
        return replies, False

    def _replay(
        self,
        messages: list[Message],
        recorded: list[bytes | None],
        route: Callable[[list[Message]], None],
    ) -> list[Message]:
        route(messages)
        replies: list[Message] = []
        for msg, body in zip(messages, recorded, strict=True):
            if body is None:
                continue  # it was not answered in the interrupted run either
            reply = bytes_to_flower_message(body)
            set_reply_to(reply, msg.metadata.message_id)
            replies.append(reply)
        logger.debug("replayed %d replies from the checkpoint", len(replies))
        return replies

    @property
    def keeping(self) -> bool:
        """Whether a live journaled call is in flight (replies are kept)."""
        return self._keeping

    def keep(self, mid: str, inc: Incoming, reply: Message) -> None:
        """Link a large reply's sealed attachments into the journal (no rewrite)."""
        if not self._keeping:
            return
        try:
            stems = self._rpc.keep_attachments(inc, self.journal.parts_dir)
        except OSError as exc:
            logger.debug("could not keep the attachments of %s: %s", mid, exc)
            return
        if stems is not None:
            prefix = bytes(inc.body)  # the FramedBody's prefix, without its parts
            with self._lock:
                self._kept[mid] = (prefix, inc.attachments, stems)
            self._make_spillable(reply, prefix, inc.attachments, stems)

    def _make_spillable(
        self,
        reply: Message,
        prefix: bytes,
        refs: Sequence[BlobRef],
        stems: Sequence[str],
    ) -> None:
        """Back the reply's large arrays by their kept chunks (see :meth:`_spill`)."""
        journal = self.journal
        slots = frames.parse_frame(prefix).slots
        records = reply.content.array_records
        for slot, ref, stem in zip(slots, refs, stems, strict=True):
            record = records[slot.record]
            arr = record[slot.key]
            spillable = SpillableArray(
                arr.dtype,
                arr.shape,
                arr.stype,
                arr.data,
                functools.partial(journal.read_kept, ref, stem),
                # Aggregation reads each reply once (``numpy()`` copies it):
                # then it need not stay in memory beside the others.
                release_on_read=True,
            )
            record[slot.key] = spillable
            with self._lock:
                self._spillable.append(spillable)

    def _spill(self) -> None:
        """Release the previous call's large reply arrays that were never read.

        Flower's strategy loops keep the previous phase's replies referenced
        while the next phase runs; their bytes are on disk (the journal), so
        they leave memory here and are read back only if somebody reads them.
        """
        with self._lock:
            spillable, self._spillable = self._spillable, []
        for arr in spillable:
            arr.spill()
