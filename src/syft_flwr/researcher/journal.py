"""Resume after a crash: the researcher's journal and the data owner's reply cache.

Where Flower lets us hook
-------------------------
A ServerApp is opaque: ``@app.main()`` code, a Message-API strategy's
``strategy.start(...)`` loop or the legacy ``Server`` all keep their round
counter and aggregation state in local variables and in strategy objects we
never see. Flower offers no "start at round k" entry point, and wrapping a
strategy would mean re-implementing ``Strategy.start`` (and the legacy
``Server.fit``) for every Flower version. The one seam every kind of app goes
through is the ``Grid``: ``send_and_receive`` (and, for hand-written loops,
``push_messages``/``pull_messages``). So the checkpoint is a Grid-level record:

* after each completed ``send_and_receive`` call (a round's train or evaluate
  phase) the researcher durably appends every reply it returned (or "no reply")
  to a :class:`Journal` in its private state;
* on the next start the same command re-runs the ServerApp from the beginning,
  and the grid answers the calls it finds in the journal at once, from disk,
  without any data owner. The strategy therefore rebuilds exactly the arrays,
  state and history it had (aggregation is cheap next to training), and the
  first call with no record, the interrupted round, goes out for real.

For a deterministic app the result is the same as an uninterrupted run. If the
app asks for something the journal does not hold while records are still
unused (random node sampling without a seed, wall-clock based config), the
grid says so and goes on live from there.

The journal is private state the researcher acts on, so it is authenticated
(:class:`~syft_flwr.crypto.state_mac.StateKey`, purpose ``"journal"``, derived
from the researcher's identity key): ``run.json`` is tagged over the command key,
run id, a random run nonce written when the run starts and the researcher's email,
and each exchange file carries a trailing tag over its name, that nonce and the
hash of its bytes (computed as they are written). A journal that was changed,
copied from another researcher or run, or written by a version without tags stops
the resume with a clear error and a ``--fresh`` hint; nothing of it is replayed.

The cost is disk: the journal keeps every reply of the run (about the size of
the model per data owner per phase); it is deleted when the run completes. Large
replies cost no writing where the backend allows: their attachment chunks, as
received and still sealed, are linked into the journal (a hard link on local
folders) instead of being written again; elsewhere the reply is written from its
own buffers, never joined into one copy first.

Data owners keep the last few replies they computed in a :class:`ReplyCache`.
The re-sent request of the interrupted round has a new message id, a new
``created_at`` and so a new Flower ``object_id``; what stays the same is who
asked (run id, sender node), what (message type, group id) and the content's
Merkle hash (``RecordDict.object_id``: the same arrays and config). That is the
fingerprint (:func:`request_fingerprint`), so a data owner that already trained
on it answers again without running the ClientApp twice.

This module holds the :class:`Journal`; its pieces live beside it and are
re-exported here: fingerprints (:mod:`~syft_flwr.researcher.fingerprint`),
the exchange file's layout and durable writes
(:mod:`~syft_flwr.researcher.journal_file`), the writer thread
(:mod:`~syft_flwr.researcher.journal_writer`) and the data owner's
:class:`ReplyCache` (:mod:`~syft_flwr.researcher.reply_cache`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.errors import CheckpointError
from syft_flwr.researcher.fingerprint import _fingerprint as _fingerprint
from syft_flwr.researcher.fingerprint import (
    request_fingerprint,
    request_fingerprints,
)
from syft_flwr.researcher.journal_file import (
    Entry,
    Kept,
    exchange_index,
    pack,
    unpack,
    write_durable,
)
from syft_flwr.researcher.journal_seal import JournalSeal
from syft_flwr.researcher.journal_writer import JournalWriter
from syft_flwr.researcher.reply_cache import DEFAULT_CACHED_REPLIES, ReplyCache
from syft_flwr.wire.blobs import BlobRef, fsync_local_chunks, read_local_blob

__all__ = [
    "DEFAULT_CACHED_REPLIES",
    "Entry",
    "Journal",
    "Kept",
    "ReplyCache",
    "request_fingerprint",
    "request_fingerprints",
]

logger = logging.getLogger("syft_flwr.checkpoint")

JOURNAL_VERSION = 3

# Names this module had before its pieces moved out (kept for old imports).
_pack, _unpack, _write_durable, _index = pack, unpack, write_durable, exchange_index
_Writer = JournalWriter


class Journal:
    """The researcher's durable record of completed ``send_and_receive`` calls.

    Parameters
    ----------
    folder:
        A private folder (never synced), e.g. ``client.state_dir(app) / "resume"``.
    key:
        What makes a rerun "the same command" (app, data owners, run config);
        a journal written under another key is discarded with a log line.
    fresh:
        Discard any journal and start over.
    state_key:
        The researcher's journal MAC key (``StateKey(keys, "journal")``).
        ``None`` (no identity key): the journal is written and read without
        authentication.
    owner:
        The researcher's email, bound into the journal.

    Raises
    ------
    CheckpointError
        The saved progress is unreadable, fails its integrity check (changed,
        copied from another researcher or run) or carries no tag (an older
        version); nothing of it is replayed, and it is kept for inspection
        until the researcher runs with ``--fresh``.

    Attributes
    ----------
    run_id:
        The run id to reuse, or ``None`` for a new run.
    """

    def __init__(
        self,
        folder: Path,
        key: str,
        *,
        fresh: bool = False,
        state_key: StateKey | None = None,
        owner: str = "",
    ) -> None:
        self.folder = Path(folder)
        self.key = key
        self.owner = owner
        self._seal = JournalSeal(state_key, self.folder)
        self.run_id: int | None = None
        self._nonce = ""
        self._lock = threading.Lock()
        self._records: dict[str, deque[bytes | None]] = {}
        self._unused = 0
        self._next = 0
        self._live = False
        self.replayed = 0
        self._writer = JournalWriter("syft_flwr-journal")
        if fresh and self.folder.exists():
            logger.info("--fresh: discarding the saved progress in %s", self.folder)
            shutil.rmtree(self.folder)
        self._load()

    @property
    def parts_dir(self) -> Path:
        """Where large replies' attachment chunks are kept (moved, not copied)."""
        return self.folder / "parts"

    def read_kept(self, ref: BlobRef, stem: str) -> bytes:
        """Read back a reply attachment kept in :attr:`parts_dir` (checked, opened).

        Raises
        ------
        CheckpointError
            The kept chunks are gone (the run completed and its journal was
            removed) or do not open.
        """
        try:
            return read_local_blob(self.parts_dir, ref, stem)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"a received array kept in {self.parts_dir} cannot be read back "
                f"({exc}); replies are kept only while their run lasts"
            ) from exc

    @property
    def resuming(self) -> bool:
        """Whether completed exchanges of an interrupted run were found."""
        return self._unused > 0 or self.replayed > 0

    def _load(self) -> None:
        meta_path = self.folder / "run.json"
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            raw_run_id = meta.get("run_id")
            if not isinstance(raw_run_id, int | str):
                raise TypeError("no run id")
            run_id, nonce = int(raw_run_id), meta.get("nonce")
        except FileNotFoundError:
            return
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"unreadable checkpoint {meta_path}: {exc}; run with --fresh "
                "to start over"
            ) from exc
        self._seal.check_meta(meta, JOURNAL_VERSION)
        if meta.get("key") != self.key or meta.get("owner") != self.owner:
            logger.warning(
                "saved progress in %s is from a different app, data owner list, "
                "run config or researcher; starting a new run",
                self.folder,
            )
            shutil.rmtree(self.folder)
            return
        self.run_id, self._nonce = run_id, str(nonce)
        files = sorted(self.folder.glob("*.exchange"))
        for f in files:
            try:
                data = self._seal.opened(self._nonce, self.run_id, f, f.read_bytes())
                entries = unpack(data, self.parts_dir)
            except (ValueError, struct.error, OSError) as exc:
                raise CheckpointError(
                    f"corrupt checkpoint file {f}: {exc}; run with --fresh to start over"
                ) from exc
            for fp, body in entries:
                self._records.setdefault(fp, deque()).append(body)
                self._unused += 1
        self._next = 1 + max((exchange_index(f) for f in files), default=-1)

    def begin(self, run_id: int) -> None:
        """Start recording a new run ``run_id`` (records of another run are dropped)."""
        self._writer.flush()
        if self.run_id != run_id:
            with self._lock:
                self._records.clear()
                self._unused = self._next = 0
            for f in self.folder.glob("*.exchange"):
                f.unlink(missing_ok=True)
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self._nonce = os.urandom(16).hex()  # no entry of another run verifies
        self.run_id = run_id
        meta: dict[str, Any] = {
            "version": JOURNAL_VERSION,
            "key": self.key,
            "run_id": run_id,
            "nonce": self._nonce,
            "owner": self.owner,
        }
        meta["tag"] = self._seal.tag_meta(meta)
        write_durable(self.folder / "run.json", json.dumps(meta).encode())

    def replay(self, fingerprints: Sequence[str]) -> list[bytes | None] | None:
        """Return the recorded replies for one call, or ``None`` to go live.

        A call is replayed only as a whole: every fingerprint needs a record.
        """
        with self._lock:
            if self._live or not fingerprints:
                return None
            if all(self._records.get(fp) for fp in fingerprints):
                out = [self._records[fp].popleft() for fp in fingerprints]
                self._unused -= len(out)
                self.replayed += len(out)
                return out
            self._live = True
            if self._unused:
                logger.warning(
                    "resume: the ServerApp asked for something the checkpoint does "
                    "not hold while %d recorded replies were unused (is the app "
                    "deterministic? random node sampling needs a seed); going on "
                    "live from here",
                    self._unused,
                )
            elif self.replayed:
                logger.info(
                    "resume: %d recorded replies replayed; continuing the run live",
                    self.replayed,
                )
            return None

    def record(self, entries: Sequence[tuple[str, Entry]]) -> None:
        """Durably append the outcome of one completed call.

        Each entry is a reply :class:`~flwr.app.Message` (or its serialized
        bytes), a :data:`Kept` reply
        (its attachments already linked into :attr:`parts_dir`, made durable
        here), or ``None`` (no reply).
        """
        if not entries:
            return
        with self._lock:
            n = self._next
            self._next += 1
        kept = [
            pair
            for _, e in entries
            if isinstance(e, tuple)
            for pair in zip(e[1], e[2], strict=True)
        ]
        # Packed now (references to the replies' immutable buffers, no copy);
        # written and fsynced by the writer thread, off the ServerApp's path.
        pieces = pack(entries)
        path = self.folder / f"{n:08d}.exchange"
        seal = self._seal.sealer(self._nonce, self.run_id, path.name)

        def write() -> None:
            if kept:
                # The linked chunks and their new names, before the record.
                fsync_local_chunks(self.parts_dir, kept)
            write_durable(path, pieces, seal=seal)

        self._writer.submit(write)

    def flush(self) -> None:
        """Wait until every recorded call is on disk.

        A record appears only once it and the attachments it names are durable;
        a crash before that loses the record, and a resume runs that call again
        live, which is correct, only slower.

        Raises
        ------
        CheckpointError
            A record could not be written.
        """
        self._writer.flush()

    def finish(self) -> None:
        """The run completed: forget it, so the next command starts a new run."""
        self._writer.close()
        shutil.rmtree(self.folder, ignore_errors=True)
