"""The journal's writer thread: records are written and fsynced off the ServerApp's path."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from syft_flwr.errors import CheckpointError

__all__ = ["JournalWriter"]

logger = logging.getLogger("syft_flwr.checkpoint")


class JournalWriter:
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
