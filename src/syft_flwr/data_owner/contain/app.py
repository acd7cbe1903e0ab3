"""A ClientApp that runs in a contained worker process (see :mod:`.process`).

:class:`ContainedClientApp` is what the data owner's handler calls instead of
the app itself: it keeps one warm worker for the run, sends it each request
until the request's deadline, rebuilds the reply from the worker's content
alone, and at the deadline (or when the worker dies or misbehaves) kills the
worker's whole process group and starts a fresh one for the next request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from syft_flwr.data_owner.contain import pipe
from syft_flwr.data_owner.contain.policy import NONE
from syft_flwr.data_owner.contain.process import (
    START_TIMEOUT,
    WorkerProcess,
    WorkerSpec,
)
from syft_flwr.data_owner.contain.report import Enforced
from syft_flwr.data_owner.worker import current_request
from syft_flwr.errors import (
    ClientAppStopped,
    ContainmentUnavailable,
    SerializationError,
    WorkerFailed,
)
from syft_flwr.serde import bytes_to_flower_message

__all__ = ["ContainedClientApp", "AppRaised"]

logger = logging.getLogger("syft_flwr.data_owner")

#: Seconds before a request's expiry its ClientApp is stopped.
DEADLINE_MARGIN = 0.5
#: Longest a request without a known deadline may run (a worker serves one run).
_NO_DEADLINE = 24 * 3600.0


class AppRaised(Exception):
    """The ClientApp raised in its worker (the name is the app's exception type)."""


def _raised(data: dict[str, object]) -> Exception:
    """An exception named like the app's (an identifier, else ``AppRaised``)."""
    name = str(data.get("type"))[:80]
    text = str(data.get("text"))[:4000]
    cls: type[AppRaised] = (
        type(name, (AppRaised,), {}) if name.isidentifier() else AppRaised
    )
    return cls(text)


class ContainedClientApp:
    """The ClientApp call shape ``(message=, context=) -> Message``, run in a worker.

    Parameters
    ----------
    spec : WorkerSpec
        The app, its configs and the data owner's containment policy.
    fallback : bool
        A local simulation (nobody's private data): when the machine cannot
        contain, warn once and run with level none instead of refusing.
    """

    def __init__(self, spec: WorkerSpec, *, fallback: bool = False) -> None:
        self.spec = spec
        self.fallback = fallback
        self._worker: WorkerProcess | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.enforced: Enforced | None = None

    def start(self) -> Enforced:
        """Start the worker now and wait until it is ready (fail closed).

        Raises
        ------
        ContainmentUnavailable
            A layer the policy asks for cannot be enforced here (nothing ran).
        """
        worker = self._fresh()
        try:
            self.enforced = worker.wait_ready(time.monotonic() + START_TIMEOUT)
        except ContainmentUnavailable as exc:
            if not self.fallback:
                raise
            logger.warning(
                "this machine cannot contain the ClientApp (%s not enforced): the "
                "simulation runs it uncontained; a data owner's serve would refuse",
                ", ".join(exc.layers) or "no layer",
            )
            self.spec = _with_level_none(self.spec)
            self.enforced = self._fresh().wait_ready(time.monotonic() + START_TIMEOUT)
        logger.info(
            "the ClientApp runs in its own worker; containment: %s", self.summary
        )
        return self.enforced

    @property
    def summary(self) -> str:
        """The level in force, for the audit trail and ``status``."""
        if self.enforced is None:
            return "not started"
        return self.enforced.summary()

    def _fresh(self) -> WorkerProcess:
        with self._lock:
            if self._closed:
                raise WorkerFailed("the data owner stopped serving")
            if self._worker is not None:
                self._worker.kill()
            self._worker = WorkerProcess(self.spec)
            return self._worker

    def __call__(self, message: Message, context: Context) -> Message:
        """Run ``message`` in the worker; the reply, rebuilt here."""
        req = current_request()
        expires_at = getattr(req, "expires_at", None) if req is not None else None
        left = _NO_DEADLINE if expires_at is None else expires_at - time.time()
        # Stopped a moment before the expiry, so its error reply still leaves
        # in time (the serving loop answers 504 itself at the expiry).
        left = left - DEADLINE_MARGIN if left > 2 * DEADLINE_MARGIN else left
        deadline = time.monotonic() + max(0.0, left)
        if req is not None:
            req.audit["containment"] = self.summary
        worker = self._worker or self._fresh()
        try:
            kind, payload = worker.call(context.run_id, message, deadline)
        except TimeoutError:
            self._restart(worker, req, "stopped at the deadline")
            raise ClientAppStopped(
                "the ClientApp was still running at the request's deadline; its "
                "worker was killed (with every process it started)"
            ) from None
        except WorkerFailed as exc:
            self._restart(worker, req, str(exc))
            raise
        return self._rebuild(worker, req, message, kind, payload)

    def _rebuild(
        self,
        worker: WorkerProcess,
        req: Any,
        request: Message,
        kind: bytes,
        payload: bytearray,
    ) -> Message:
        """The reply from the worker's content or error only (never its ids)."""
        if kind == pipe.APP_ERROR:
            try:
                data = pipe.parse_json(payload)
            except pipe.FrameError as exc:
                self._restart(worker, req, f"garbled error frame: {exc}")
                raise WorkerFailed(f"the ClientApp's worker sent {exc}") from None
            raise _raised(data)
        try:
            reply = bytes_to_flower_message(payload)
        except SerializationError as exc:
            self._restart(worker, req, "its reply was not a Flower message")
            raise WorkerFailed(
                f"the ClientApp's worker replied with something that is not a "
                f"Flower message ({exc}); it was stopped and nothing it sent was used"
            ) from None
        if reply.has_error():
            err = reply.error
            return Message(
                Error(int(err.code), str(err.reason or "")), reply_to=request
            )
        if not reply.has_content():
            return Message(
                Error(
                    ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                    "the ClientApp replied nothing",
                ),
                reply_to=request,
            )
        return Message(reply.content, reply_to=request)

    def _restart(self, worker: WorkerProcess, req: Any, why: str) -> None:
        """Kill ``worker`` (its process group) and start the next one at once."""
        worker.kill()
        logger.error("the ClientApp's worker was stopped: %s", why)
        if req is not None:
            req.audit["worker"] = why[:300]
        with self._lock:
            if self._worker is worker:
                self._worker = None
        try:
            self._fresh()  # ready by the next request; a failure shows there
        except WorkerFailed:
            pass

    def close(self) -> None:
        """Stop serving: the worker is told to exit, and killed after 2 s."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()


def _with_level_none(spec: WorkerSpec) -> WorkerSpec:
    from dataclasses import replace

    return replace(spec, policy=spec.policy.with_(level=NONE))
