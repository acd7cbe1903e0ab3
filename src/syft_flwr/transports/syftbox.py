"""SyftBox transport: real folders under ``<data_dir>/datasites``, watched with watchdog.

A key ``<owner>/app_data/...`` is the file ``<data_dir>/datasites/<owner>/app_data/...``.
The SyftBox sync client (Python 0.4.0 or Go) moves files between machines; this
module only reads and writes the local copy.

* Writes are atomic: ``<datasites>/.syft-flwr.tmp/<name>.<random>.tmp`` then
  ``os.replace`` (see ``_syftbox_write``: a temp file outside the watched
  folders keeps watchdog from stalling). Both SyftBox clients ignore that
  folder and ``*.tmp``, so a half-written file is never uploaded.
* Downloaded files may still be partial (the Python 0.4.0 client writes them in
  place), which is why the envelope layer treats unparsable files as "not ready".
* ``prepare`` writes the rpc permission files in both formats: ``syft.pub.yaml``
  (Go SyftBox, syft-core) and ``syftperm.yaml`` (Python SyftBox 0.4.0), each
  granting a sender read/write on its own ``<endpoint>/<sender>/`` sub-folder only.
* Refused uploads are detected from both rejection markers: ``.syftrejected.``
  (Python client) and ``.rejected.`` (Go client, optionally timestamped).

Size: just over 400 lines because it is one transport implementing the whole
:class:`~syft_flwr.transports.base.Transport` contract on real folders (atomic
writes, safe reads, watching, permissions); each method is short.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from syft_flwr.errors import (
    MessageNotFound,
    TransportClosed,
    TransportError,
    UnsafeFileError,
)
from syft_flwr.transports._syftbox_write import AtomicWriter
from syft_flwr.transports.base import (
    TMP_SUFFIX,
    KeyCallback,
    Transport,
    Watch,
    check_key,
    join_key,
)

__all__ = ["PERM_FILE_GO", "PERM_FILE_PY", "SyftBoxTransport"]

logger = logging.getLogger(__name__)


class _QuietInactiveEmitter(logging.Filter):
    """Drop watchdog's "queue_events() called when the thread is inactive" line.

    It is logged (at debug level, so it shows wherever the root logger is
    verbose) by every inotify emitter that races its own shutdown: noise at
    exit that says nothing about the run.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "when the thread is inactive" not in str(record.msg)


_INOTIFY_LOGGER = logging.getLogger("watchdog.observers.inotify")
if not any(isinstance(f, _QuietInactiveEmitter) for f in _INOTIFY_LOGGER.filters):
    _INOTIFY_LOGGER.addFilter(_QuietInactiveEmitter())

PERM_FILE_GO = "syft.pub.yaml"
PERM_FILE_PY = "syftperm.yaml"
#: SyftBox 0.4.0's client refuses (silently) to upload files over 10 MB.
SYFTBOX_MAX_FILE_SIZE = 10 * 1000 * 1000

# Go ACL: "*/{{.UserEmail}}/*" relative to rpc/ = <endpoint>/<sender>/<file>.
_GO_PERMS = """\
terminal: true
rules:
- pattern: rpc.schema.json
  access:
    admin: []
    write: []
    read: ['*']
- pattern: '*/{{.UserEmail}}/*'
  access:
    admin: []
    write: [USER]
    read: [USER]
"""
# Python 0.4.0: `**` must not precede {useremail}; `*/{useremail}/*` works.
_PY_PERMS = """\
- path: '*/{useremail}/*'
  user: '*'
  permissions: [read, create, write]
- path: rpc.schema.json
  user: '*'
  permissions: [read]
"""


def _rejection_base(name: str) -> str | None:
    """Return the original file name of a rejection marker, else ``None``."""
    parts = name.split(".")
    for marker in ("syftrejected", "rejected"):
        if marker in parts[1:-1]:
            i = parts.index(marker, 1)
            rest = parts[i + 1 :]
            # Go rotates markers: x.rejected.<YYYYMMDDHHMMSS>.ext
            if len(rest) > 1 and rest[0].isdigit() and len(rest[0]) == 14:
                rest = rest[1:]
            return ".".join(parts[:i] + rest)
    return None


#: Where Linux names the file behind an open descriptor (one readlink instead
#: of resolving every folder on the way with lstat).
_PROC_FD = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else None


def _opened_path(fd: int, path: Path) -> str:
    """The real path of the file open at ``fd`` (opened from ``path``).

    On Linux the kernel's own answer for the descriptor, so it is the file
    actually read, whatever was swapped in on the way; elsewhere the resolved
    folder of ``path`` (whose last part was opened with O_NOFOLLOW) plus its name.
    """
    if _PROC_FD is not None:
        try:
            return os.readlink(f"{_PROC_FD}/{fd}")
        except OSError:
            pass
    return os.path.join(os.path.realpath(path.parent), path.name)


_WRITE_EVENTS = frozenset({"created", "modified", "moved", "closed"})
#: The same events as watchdog classes, given to ``Observer.schedule``: the
#: backend then asks the OS for these only (on Linux the inotify mask), so the
#: opens, reads, closes after reading, listings and deletes of every party on
#: the machine never reach Python. Recursive watches still follow new folders.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, transport: SyftBoxTransport) -> None:
        self.t = transport

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Only writes matter. A read (e.g. a sync client reading a file before it
        # deletes it) raises "closed_no_write"/"opened", which must not trigger work.
        if event.is_directory or event.event_type not in _WRITE_EVENTS:
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = os.fsdecode(raw)
        if not path or path.endswith(TMP_SUFFIX):
            return
        self.t._dispatch(path)


class SyftBoxTransport(Transport):
    """Files under ``<datasites_dir>``, atomic writes, watchdog events.

    Parameters
    ----------
    datasites_dir:
        The ``datasites`` folder of a SyftBox data dir (``client.datasites``).
    identity:
        Email of the local user.
    """

    name = "syftbox"
    max_file_size = SYFTBOX_MAX_FILE_SIZE
    default_rescan_interval = 2.0

    def __init__(self, datasites_dir: Path | str, identity: str) -> None:
        super().__init__(identity)
        self.root = Path(datasites_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_prefix = str(self.root) + os.sep
        self._lock = threading.Lock()
        self._schedule_lock = threading.Lock()
        self._watches: list[Watch] = []
        self._scheduled: set[Path] = set()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._writer = AtomicWriter(self.root)

    # -- helpers ----------------------------------------------------------------
    def path_of(self, key: str) -> Path:
        """Return the local path of ``key``."""
        return self.root / check_key(key)

    def key_of(self, path: Path | str) -> str | None:
        """Return the key of a local path under the root, else ``None``."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix()

    def _check_open(self) -> None:
        if self.closed:
            raise TransportClosed(f"{self!r} is closed")

    # -- primitives -------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        self._check_open()
        try:
            self._writer.write(self.path_of(key), data)
        except OSError as exc:
            raise TransportError(f"cannot write {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        self._check_open()
        path = self.path_of(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MessageNotFound(key) from None
        except OSError as exc:
            raise TransportError(f"cannot read {key}: {exc}") from exc

    def read_limited(self, key: str, max_bytes: int) -> bytes:
        """Read an untrusted file: regular files only, at most ``max_bytes``.

        Opened without following a final symlink and without blocking (a FIFO
        never stalls the reader), checked with ``fstat`` after opening, and
        refused if any folder on the way is a link out of the datasites. Never
        reads more than ``max_bytes + 1`` bytes.
        """
        self._check_open()
        path = self.path_of(key)
        flags = (
            os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
        try:
            fd = os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError):
            raise MessageNotFound(key) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFileError(f"{key} is a symbolic link; not read") from None
            raise TransportError(f"cannot read {key}: {exc}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeFileError(f"{key} is not a regular file; not read")
            if not _opened_path(fd, path).startswith(self._root_prefix):
                raise UnsafeFileError(f"{key} lies behind a link out of the datasites")
            if st.st_size > max_bytes:
                raise UnsafeFileError(
                    f"{key} holds {st.st_size} bytes, more than the {max_bytes} allowed"
                )
            # One read of the whole file (plus one byte, to notice a file that
            # grew since fstat): one buffer, no joins, never past the limit.
            data = os.read(fd, min(max_bytes, st.st_size) + 1)
            if len(data) <= max_bytes:
                more = os.read(fd, max_bytes + 1 - len(data))
                if more:  # a short read, or written to meanwhile: go on to the limit
                    parts = [data, more]
                    size = len(data) + len(more)
                    while size <= max_bytes:
                        more = os.read(fd, max_bytes + 1 - size)
                        if not more:
                            break
                        parts.append(more)
                        size += len(more)
                    data = b"".join(parts)
            if len(data) > max_bytes:  # grew while we read it
                raise UnsafeFileError(f"{key} holds more than {max_bytes} bytes")
            return data
        except OSError as exc:
            raise TransportError(f"cannot read {key}: {exc}") from exc
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def list(self, prefix: str) -> list[str]:
        self._check_open()
        base = self.path_of(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith(TMP_SUFFIX):
                    continue
                key = self.key_of(Path(dirpath) / name)
                if key is not None:
                    out.append(key)
        return sorted(out)

    def delete(self, key: str) -> None:
        self._check_open()
        try:
            self.path_of(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass
        except OSError as exc:
            raise TransportError(f"cannot delete {key}: {exc}") from exc

    def watch(self, prefix: str, callback: KeyCallback) -> Watch:
        self._check_open()
        w = Watch(prefix.rstrip("/"), callback)
        folder = self.path_of(prefix.rstrip("/"))
        folder.mkdir(parents=True, exist_ok=True)
        # observer.schedule() takes watchdog's lock, which its dispatcher holds while
        # calling _dispatch (which takes self._lock): so never call it under
        # self._lock. _schedule_lock (never taken by _dispatch) orders scheduling.
        with self._schedule_lock:
            with self._lock:
                self._watches.append(w)
                if self._observer is None:
                    self._observer = Observer()
                    self._observer.daemon = True
                    self._observer.start()
                obs = self._observer
                need = not any(
                    folder == s or folder.is_relative_to(s) for s in self._scheduled
                )
                if need:
                    self._scheduled.add(folder)
            if need:
                obs.schedule(
                    _Handler(self),
                    str(folder),
                    recursive=True,
                    event_filter=_EVENT_FILTER,
                )
        return w

    def _dispatch(self, path: str) -> None:
        key = self.key_of(path)
        if key is None:
            return
        with self._lock:
            watches = [w for w in self._watches if w.matches(key)]
        for w in watches:
            try:
                w.fire(key)
            except Exception:  # a callback bug must not kill the observer thread
                logger.exception("watch callback failed for %s", key)

    # -- SyftBox specifics ------------------------------------------------------
    def is_rejected(self, key: str) -> bool:
        path = self.path_of(key)
        stem = path.name.split(".")[0]
        try:
            siblings = os.listdir(path.parent)
        except OSError:
            return False
        for name in siblings:
            if name.startswith(stem + ".") and _rejection_base(name) == path.name:
                return True
        return False

    can_share = True

    def link_out(self, key: str, dest: Path) -> bool:
        # A hard link: EXDEV (state kept on another disk) returns False and the
        # caller writes its own copy.
        try:
            src = self.path_of(key)
            # The file itself and every folder above it inside the datasites:
            # a symlink planted by a peer never gets anything else linked (and
            # one swapped in after the check is linked as a symlink, which
            # every reader opens with O_NOFOLLOW).
            inside = os.path.realpath(src).startswith(self._root_prefix)
            if not inside or not stat.S_ISREG(os.lstat(src).st_mode):
                return False
            if os.link in os.supports_follow_symlinks:
                os.link(src, dest, follow_symlinks=False)
            else:  # no linkat here: the lstat above is the check
                os.link(src, dest)
        except (OSError, TransportError, ValueError):
            return False
        return True

    def shared_folders(self, prefix: str) -> list[str]:
        base = prefix.rstrip("/")
        try:
            path = self.path_of(base)
            names = os.listdir(path)
        except (OSError, TransportError, ValueError):
            return []
        return sorted(
            f"{base}/{n}"
            for n in names
            if not n.startswith(".") and stat.S_ISDIR(os.lstat(path / n).st_mode)
        )

    def unshare(self, folder: str) -> None:
        # The folder's files are gone by now; a folder that still holds
        # something (a sync client's stray file) stays.
        try:
            os.rmdir(self.path_of(folder))
        except (OSError, TransportError, ValueError):
            pass

    def share(self, folder: str, readers: Sequence[str]) -> None:
        """Write permission files (both SyftBox formats) granting ``readers`` read.

        The server then syncs the folder's files to those datasites only.
        """
        names = [r for r in readers if "'" not in r and "\n" not in r]
        go = "terminal: true\nrules:\n- pattern: '*'\n  access:\n    admin: []\n"
        go += "    write: []\n    read: [" + ", ".join(f"'{r}'" for r in names) + "]\n"
        py = "".join(
            f"- path: '*'\n  user: '{r}'\n  permissions: [read]\n" for r in names
        )
        self.put(f"{folder}/{PERM_FILE_GO}", go.encode())
        self.put(f"{folder}/{PERM_FILE_PY}", (py or "[]\n").encode())

    def prepare(self, app: str, endpoint: str, peers: Sequence[str] = ()) -> None:
        rpc = self.path_of(join_key(self.identity, "app_data", app, "rpc"))
        (rpc / endpoint).mkdir(parents=True, exist_ok=True)
        for name, text in ((PERM_FILE_GO, _GO_PERMS), (PERM_FILE_PY, _PY_PERMS)):
            target = rpc / name
            # Rewrite only on change: every write is a sync round for every peer.
            if not target.is_file() or target.read_text() != text:
                self.put(self.key_of(target) or "", text.encode())
        # The schema is written last and is world-readable: a peer that can see it
        # knows the server already has the permissions above.
        super().prepare(app, endpoint, peers)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        with self._schedule_lock, self._lock:
            obs, self._observer = self._observer, None
            for w in self._watches:
                w.cancel()
        if obs is not None:
            # Unschedule first: stopping emitters that are still queueing makes
            # watchdog print "queue_events() called when the thread is inactive".
            obs.unschedule_all()
            obs.stop()
            obs.join(timeout=2)
