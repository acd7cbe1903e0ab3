"""The worker: runs the data owner's ClientApp in its own contained process.

Started by :class:`~syft_flwr.data_owner.contain.process.WorkerProcess` through
:func:`~syft_flwr.data_owner.contain.sandbox.command`, which contains the
process before anything is imported. Here: take the protocol's pipes away from
the app (its prints go to stderr), read the start frame, confirm what holds
(:func:`~syft_flwr.data_owner.contain.sandbox.enter`), load the ClientApp (an
approved project from its files re-checked against their sha256), say ready,
then answer request frames until told to exit. One Flower ``Context`` per run
id lives as long as this process: a restarted worker starts a fresh one.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import traceback
from pathlib import Path, PurePosixPath
from typing import Any

from syft_flwr.data_owner.contain import pipe

__all__ = ["main"]

#: Largest start frame (it names paths and configs, never data).
_MAX_START = 4 * 1024 * 1024


def _take_pipes() -> tuple[int, int]:
    """Keep stdin/stdout for the protocol; give the app /dev/null and stderr."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # a print() of the app must never be read as a frame
    return proto_in, proto_out


def _verified_files(app_dir: Path, hashes: dict[str, str]) -> dict[str, bytes]:
    """Each approved file, read again here and checked against its sha256."""
    files: dict[str, bytes] = {}
    for rel, digest in hashes.items():
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or ".." in parts:
            raise ValueError(f"{rel!r} is not a path inside the project")
        data = app_dir.joinpath(*parts).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"{rel} is not the approved file (its sha256 differs)")
        files[rel] = data
    return files


def _load_app(start: dict[str, Any]) -> Any:
    """The ClientApp: verified approved files, or the local app folder as is."""
    app_dir = Path(start["app_dir"])
    ref = str(start["ref"])
    if start.get("files") is None:
        from syft_flwr.project import load_component

        return load_component(ref, app_dir)
    from syft_flwr.review.loader import load_verified

    app, _finder = load_verified(app_dir, _verified_files(app_dir, start["files"]), ref)
    return app  # the finder stays installed: the app imports lazily too


class _Runner:
    """Runs requests on the ClientApp, one Flower Context per run id."""

    def __init__(self, app: Any, start: dict[str, Any]) -> None:
        self.app = app
        self.node_id = int(start["node_id"])
        self.node_config = dict(start.get("node_config") or {})
        self.run_config = dict(start.get("run_config") or {})
        self.contexts: dict[int, Any] = {}
        self.pid = os.getpid()

    def context(self, run_id: int) -> Any:
        from flwr.app import Context, RecordDict

        if run_id not in self.contexts:
            self.contexts[run_id] = Context(
                run_id=run_id,
                node_id=self.node_id,
                node_config=dict(self.node_config),
                state=RecordDict(),
                run_config=dict(self.run_config),
            )
        return self.contexts[run_id]

    def answer(self, payload: bytearray) -> tuple[bytes, tuple[Any, ...]]:
        """The reply frame (kind, payload parts) for one request frame."""
        from syft_flwr._flwr_compat import set_task_identity
        from syft_flwr.serde import bytes_to_flower_message, split_message

        (run_id,) = struct.unpack(">Q", payload[:8])
        try:
            msg = bytes_to_flower_message(memoryview(payload)[8:])
            set_task_identity(run_id, self.node_id)  # as Flower's own runtime does
            reply = self.app(message=msg, context=self.context(run_id))
            self._only_the_worker()
            split = split_message(reply)  # the arrays' own buffers, never joined
            return pipe.REPLY, (split.prefix, *split.parts)
        except Exception as exc:  # noqa: BLE001 - reported to the data owner
            self._only_the_worker()
            traceback.print_exc()  # to stderr: the data owner's log
            return pipe.APP_ERROR, (_error_json(exc),)
        finally:
            _end_strays()

    def _only_the_worker(self) -> None:
        """A copy the app forked never speaks the protocol: it ends here."""
        if os.getpid() != self.pid:
            os._exit(0)


def _end_strays() -> None:
    """In its own PID namespace, the worker ends every process the app left.

    Only as the namespace's first process (pid 1), where ``kill(-1)`` reaches
    exactly the processes inside it; a worker without a PID namespace (level
    none) has no such fence and leaves them (its process group is killed when
    it is stopped).
    """
    if os.getpid() != 1:
        return
    try:
        os.kill(-1, 9)
    except ProcessLookupError:
        pass
    while True:  # reap them all (orphans inside are this process's children)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break


def _error_json(exc: BaseException) -> bytes:
    import json

    return json.dumps({"type": type(exc).__name__, "text": str(exc)[:4000]}).encode()


def _start(proto_in: int, proto_out: int) -> tuple[_Runner, int] | None:
    """Read the start frame, confirm containment, load the app; None if refused."""
    import json

    from syft_flwr.data_owner.contain.policy import ContainmentPolicy
    from syft_flwr.data_owner.contain.sandbox import enter
    from syft_flwr.errors import ContainmentUnavailable

    kind, payload = pipe.read_frame(proto_in, _MAX_START)
    if kind != pipe.START:
        raise pipe.FrameError("the first frame is not a start frame")
    start: dict[str, Any] = pipe.parse_json(payload)
    try:
        enforced = enter(
            ContainmentPolicy.from_json(start["policy"]),
            read=[Path(p) for p in start["read"]],
            write=[Path(p) for p in start["write"]],
        )
    except ContainmentUnavailable as exc:
        body = {"unavailable": str(exc), "layers": list(exc.layers)}
        pipe.write_frame(proto_out, pipe.UNAVAILABLE, json.dumps(body).encode())
        return None
    try:
        app = _load_app(start)
    except Exception as exc:  # noqa: BLE001 - the data owner is told why
        traceback.print_exc()
        pipe.write_frame(proto_out, pipe.APP_ERROR, _error_json(exc))
        return None
    ready = {"enforced": enforced.to_json()}
    pipe.write_frame(proto_out, pipe.READY, json.dumps(ready).encode())
    return _Runner(app, start), int(start["max_bytes"])


def main() -> None:
    """Serve the data owner's requests on stdin/stdout until told to exit."""
    proto_in, proto_out = _take_pipes()
    started = _start(proto_in, proto_out)
    if started is None:
        return
    runner, limit = started
    while True:
        try:
            kind, payload = pipe.read_frame(proto_in, limit + 8)
        except pipe.FrameError:
            return  # the data owner closed the pipe: it is done with us
        if kind != pipe.REQUEST:
            return
        out_kind, parts = runner.answer(payload)
        pipe.write_parts(proto_out, out_kind, parts)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
