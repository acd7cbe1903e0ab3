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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Message

from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.ledger import Ledger
from syft_flwr.errors import CheckpointError, StateIntegrityError
from syft_flwr.researcher.journal_seal import TAG_LEN, JournalSeal
from syft_flwr.serde import (
    bytes_to_flower_message,
    flower_message_to_bytes,
    split_message,
)
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import (
    BlobRef,
    fsync_local_chunks,
    read_local_blob,
)

__all__ = ["Journal", "ReplyCache", "request_fingerprint", "request_fingerprints"]

logger = logging.getLogger("syft_flwr.checkpoint")

JOURNAL_VERSION = 3
#: How many replies a data owner keeps; only the interrupted phase is re-sent.
DEFAULT_CACHED_REPLIES = 8


def request_fingerprint(
    msg: Message,
    *,
    with_sender: bool = False,
    content_id: str | None = None,
    sender: str | None = None,
) -> str:
    """A hash that is the same for a request and its re-send after a resume.

    Parameters
    ----------
    msg:
        An instruction Message (with content).
    with_sender:
        Include ``run_id`` and ``src_node_id`` (the data owner's view: two
        researchers or runs never share a cached reply).
    content_id:
        The content's Merkle hash as the (authenticated) sender named it in the
        request, instead of hashing the content here. A sender that names the
        wrong hash only ever gets its own earlier replies: pass ``sender``.
    sender:
        The authenticated sender's email, included when given.

    Returns
    -------
    str
        Hex sha256 of message type, group id, destination node and the content's
        Merkle hash (message id and creation time are left out on purpose).
    """
    content = content_id or (msg.content.object_id if msg.has_content() else "-")
    return _fingerprint(msg, content, with_sender=with_sender, sender=sender)


def request_fingerprints(msgs: Sequence[Message]) -> list[str]:
    """:func:`request_fingerprint` of each message, in order.

    A content object several messages share (a broadcast: one ``RecordDict``
    for every data owner) is hashed once: Flower recomputes the Merkle hash on
    every ``object_id`` read.
    """
    hashed: dict[int, str] = {}  # id(content) -> object_id; all alive meanwhile
    out = []
    for msg in msgs:
        content = "-"
        if msg.has_content():
            c = msg.content
            if id(c) not in hashed:
                hashed[id(c)] = c.object_id
            content = hashed[id(c)]
        out.append(_fingerprint(msg, content, with_sender=False))
    return out


def _fingerprint(
    msg: Message, content: str, *, with_sender: bool, sender: str | None = None
) -> str:
    md = msg.metadata
    parts = [md.message_type, md.group_id, str(md.dst_node_id), content]
    if with_sender:
        parts += [str(md.run_id), str(md.src_node_id)]
    if sender is not None:
        parts.append(sender)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _write_durable(
    path: Path,
    data: bytes | Sequence[bytes | memoryview],
    *,
    seal: Callable[[bytes], bytes] | None = None,
) -> None:
    """Write ``data`` (or its pieces, in order) to ``path`` atomically and durably.

    With ``seal``, the SHA-256 of the bytes is computed as they are written (no
    second pass over a large reply) and ``seal(digest)`` is appended.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256() if seal is not None else None
    with open(tmp, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
        for piece in frames.pieces(data) if isinstance(data, bytes) else data:
            fh.write(piece)
            if digest is not None:
                digest.update(piece)
        if seal is not None and digest is not None:
            fh.write(seal(digest.digest()))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


#: A reply kept with its attachments linked into the journal: the framed prefix,
#: the references (content keys included) and the file stem of each attachment.
Kept = tuple[bytes, Sequence[BlobRef], Sequence[str]]
#: What :meth:`Journal.record` takes per request: a reply (or its bytes), a kept
#: reply, or nothing.
Entry = Message | bytes | Kept | None


def _pack(entries: Sequence[tuple[str, Entry]]) -> list[bytes | memoryview]:
    """The pieces of one exchange file: a JSON index, then each stored reply.

    Index entries are ``[fingerprint, stored bytes or -1, kept or null]``; a kept
    reply stores its framed prefix and lists ``[[reference, stem], ...]``; any
    other reply is stored in its inline (self-contained) form, from its own
    buffers.
    """
    index: list[list[Any]] = []
    pieces: list[bytes | memoryview] = []
    for fp, entry in entries:
        if entry is None:
            index.append([fp, -1, None])
        elif isinstance(entry, tuple):
            prefix, refs, stems = entry
            kept = [[r.to_json(), st] for r, st in zip(refs, stems, strict=True)]
            index.append([fp, len(prefix), kept])
            pieces.append(prefix)
        elif isinstance(entry, bytes):
            index.append([fp, len(entry), None])
            pieces.append(entry)
        else:
            split = split_message(entry)
            index.append(
                [fp, len(split.prefix) + sum(len(p) for p in split.parts), None]
            )
            pieces += [split.prefix, *split.parts]
    head = json.dumps(index).encode()
    return [struct.pack(">I", len(head)), head, *pieces]


def _unpack(data: bytes, parts_dir: Path) -> list[tuple[str, bytes | None]]:
    (n,) = struct.unpack(">I", data[:4])
    head = json.loads(data[4 : 4 + n])
    view = memoryview(data)
    pos = 4 + n
    out: list[tuple[str, bytes | None]] = []
    for fp, size, kept in head:
        if size < 0:
            out.append((fp, None))
            continue
        body = bytes(view[pos : pos + size])
        pos += size
        if kept:
            body = frames.FramedBody(
                body,
                [
                    read_local_blob(
                        parts_dir, BlobRef.from_json(doc, max_size=2**62), stem
                    )
                    for doc, stem in kept
                ],
            )
        out.append((fp, body))
    if pos != len(data):
        raise ValueError("trailing bytes")
    return out


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
        self._writer = _Writer("syft_flwr-journal")
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
                entries = _unpack(data, self.parts_dir)
            except (ValueError, struct.error, OSError) as exc:
                raise CheckpointError(
                    f"corrupt checkpoint file {f}: {exc}; run with --fresh to start over"
                ) from exc
            for fp, body in entries:
                self._records.setdefault(fp, deque()).append(body)
                self._unused += 1
        self._next = 1 + max((_index(f) for f in files), default=-1)

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
        _write_durable(self.folder / "run.json", json.dumps(meta).encode())

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
        pieces = _pack(entries)
        path = self.folder / f"{n:08d}.exchange"
        seal = self._seal.sealer(self._nonce, self.run_id, path.name)

        def write() -> None:
            if kept:
                # The linked chunks and their new names, before the record.
                fsync_local_chunks(self.parts_dir, kept)
            _write_durable(path, pieces, seal=seal)

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


def _index(path: Path) -> int:
    """The sequence number of an exchange file ``<nnnnnnnn>.exchange``."""
    try:
        return int(path.stem)
    except ValueError:
        return -1


class _Writer:
    """One background thread that runs write jobs in order (FIFO)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: deque[Callable[[], None]] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._cv:
            self._raise_locked()
            self._jobs.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=self._name, daemon=True
                )
                self._thread.start()
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._cv.wait_for(lambda: bool(self._jobs), timeout=30.0):
                    self._thread = None
                    return
                job = self._jobs[0]
                self._busy = True
            try:
                job()
            except BaseException as exc:  # surfaced by the next submit/flush
                logger.error("could not write the resume checkpoint: %s", exc)
                with self._cv:
                    self._error = exc
            finally:
                with self._cv:
                    self._jobs.popleft()
                    self._busy = False
                    self._cv.notify_all()

    def _raise_locked(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise CheckpointError(
                f"could not write the resume checkpoint: {exc}"
            ) from exc

    def flush(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: not self._jobs)
            self._raise_locked()

    def close(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: not self._jobs)
            self._error = None


class ReplyCache:
    """A data owner's last replies, keyed by :func:`request_fingerprint`.

    Two ways to keep them:

    * on the serving loop's ledger (:meth:`on_ledger`, what
      :func:`~syft_flwr.data_owner.handler.run_data_owner` uses):
      the reply the loop stores for the request anyway gets the fingerprint as
      an alias, so each reply is written once, before it is sent; the ledger
      keeps the newest ``keep`` of them;
    * in a folder of its own (``ReplyCache(folder)``): one file per reply,
      fsynced before it is sent (a handler called without a serving loop).

    Parameters
    ----------
    folder:
        A private folder (the data owner's state dir for the app).
    keep:
        How many replies to keep (oldest are deleted first).
    state_key:
        Authenticates the replies kept in ``folder`` (a trailing tag over the
        fingerprint and the reply's bytes, computed as they are written); one
        that fails is not used, and the request is computed again. ``None``:
        taken on trust (no identity key).
    """

    def __init__(
        self,
        folder: Path,
        keep: int = DEFAULT_CACHED_REPLIES,
        *,
        state_key: StateKey | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self._mac = state_key
        self._lock = threading.Lock()
        self.ledger: Ledger | None = None
        self._legacy = False  # on a ledger: an older version's folder to read too

    @classmethod
    def on_ledger(cls, ledger: Ledger, legacy: Path | None = None) -> ReplyCache:
        """A reply cache kept as aliases of ``ledger``'s stored replies.

        ``legacy`` is the folder an older version kept its cached replies in;
        they are still found there (read only) when the ledger has none.
        """
        folder = legacy if legacy is not None else (ledger.dir or Path())
        cache = cls(folder, ledger.keep_aliases)
        cache.ledger = ledger
        cache._legacy = legacy is not None and any(legacy.glob("*.reply"))
        if cache._legacy and ledger.authenticated:
            # An older version's untagged replies: never re-sent as our own.
            logger.warning(
                "replies an older version cached in %s carry no integrity tag; "
                "they are not used (such a request is computed again)",
                legacy,
            )
            cache._legacy = False
        return cache

    def _path(self, fp: str) -> Path:
        return self.folder / f"{fp}.reply"

    def _read(self, fp: str) -> bytes | None:
        """A reply kept in :attr:`folder` (its tag checked), or ``None``."""
        try:
            data = self._path(fp).read_bytes()
        except FileNotFoundError:
            return None
        if self._mac is None or self.ledger is not None:
            return data  # legacy files on a keyed ledger were refused above
        body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
        digest = hashlib.sha256(body).digest()
        self._mac.verify(tag, "reply", fp, digest, what=f"cached reply {fp[:12]}")
        return body

    def get(self, fp: str) -> Message | None:
        """Return the cached reply for ``fp``, or ``None``."""
        data: bytes | None = None
        try:
            if self.ledger is not None:
                stored = self.ledger.alias_reply(fp)
                data = None if stored is None else stored[1]
            if data is None and (self.ledger is None or self._legacy):
                data = self._read(fp)
        except StateIntegrityError as exc:  # never re-send it: compute again
            logger.warning("not using a cached reply %s: %s", fp[:12], exc)
            return None
        if data is None:
            return None
        try:
            return bytes_to_flower_message(data)
        except Exception as exc:  # a damaged cache entry: compute again
            logger.warning("ignoring a damaged cached reply %s: %s", fp[:12], exc)
            return None

    def put(self, fp: str, reply: Message | bytes) -> None:
        """Keep ``reply`` under ``fp``; it is kept before it is sent.

        ``reply`` may be the message or its serialized bytes (callers that
        already serialized it for sending pass those: no second serialization).
        On a ledger, inside a request its serving loop runs, ``reply`` must be
        what the handler returns: the loop keeps that, once, under ``fp``.
        """
        if self.ledger is not None:
            from syft_flwr.data_owner.loop import current_request

            req = current_request()
            if req is not None and req.ledger is self.ledger and req.keep_reply_as(fp):
                return  # the serving loop stores it, once, before sending it
            data = reply if isinstance(reply, bytes) else flower_message_to_bytes(reply)
            self.ledger.keep_alias(fp, data)
            return
        data = reply if isinstance(reply, bytes) else flower_message_to_bytes(reply)
        mac = self._mac
        seal = None if mac is None else (lambda digest: mac.tag("reply", fp, digest))
        _write_durable(self._path(fp), data, seal=seal)
        with self._lock:
            entries: list[tuple[float, Any]] = []
            for p in self.folder.glob("*.reply"):
                try:
                    entries.append((p.stat().st_mtime_ns, p))
                except FileNotFoundError:
                    continue
            entries.sort()
            for _, p in entries[: max(0, len(entries) - self.keep)]:
                p.unlink(missing_ok=True)
