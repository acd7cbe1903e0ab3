"""The data owner's side of the worker: start, talk to, time out and kill it.

:class:`WorkerProcess` is one contained worker (:mod:`.child`) and its pipes;
:class:`ContainedClientApp` has the ClientApp call shape, so the data owner's
:class:`~syft_flwr.data_owner.handler.ClientAppHandler` runs it unchanged, and
keeps one warm worker for the run: restarted after it dies, is killed at a
request's deadline, or breaks the protocol. Everything the worker sends is
read as untrusted input, and the reply is rebuilt here from its content alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from flwr.app import Message

from syft_flwr.data_owner.contain import pipe
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.data_owner.contain.report import Enforced
from syft_flwr.data_owner.contain.sandbox import command, release
from syft_flwr.errors import (
    ConfigError,
    ContainmentUnavailable,
    WorkerFailed,
)
from syft_flwr.serde import split_message

__all__ = ["WorkerProcess", "WorkerSpec"]

logger = logging.getLogger("syft_flwr.data_owner")

CHILD = "syft_flwr.data_owner.contain.child"
#: Seconds a worker may take to start (import Python, flwr and the app).
START_TIMEOUT = 120.0
#: Seconds a worker told to exit has before it is killed.
EXIT_GRACE = 2.0
#: Room for the framing around a Message of the largest allowed size.
_SLACK = 1 << 20
#: Environment variables a worker inherits (the rest, SYFT_* and keys included, never).
_KEEP_ENV = ("PATH", "LANG", "LANGUAGE", "DATA_DIR")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker runs: the app, its configs, and the data owner's policy."""

    app_dir: Path
    ref: str
    #: ``{relpath: sha256}`` of an approved project; ``None`` for a local app.
    files: Mapping[str, str] | None
    node_id: int
    policy: ContainmentPolicy
    max_bytes: int
    node_config: dict[str, Any] = field(default_factory=dict)
    run_config: dict[str, Any] = field(default_factory=dict)


class WorkerProcess:
    """One worker process: started at once, ready after :meth:`wait_ready`."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        # Outside the data owner's state and datasites: the system's temp folder.
        self.scratch = Path(tempfile.mkdtemp(prefix="syft_flwr-worker-"))
        read = [spec.app_dir]
        if os.environ.get("DATA_DIR"):
            read.append(Path(os.environ["DATA_DIR"]))
        argv, extra = command(
            spec.policy, read=read, write=[self.scratch], module=CHILD
        )
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=self.scratch,
            env={**_clean_env(self.scratch), **extra},
            start_new_session=True,  # its own process group: killed as one
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        pipe.grow(self._in)
        pipe.grow(self.proc.stdout.fileno())
        self._reader = pipe.FrameReader(
            self.proc.stdout.fileno(), spec.max_bytes + _SLACK
        )
        self.enforced: Enforced | None = None
        self._send_start(read)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send_start(self, read: list[Path]) -> None:
        import json

        s = self.spec
        start = {
            "app_dir": str(s.app_dir),
            "ref": s.ref,
            "files": None if s.files is None else dict(s.files),
            "node_id": s.node_id,
            "node_config": s.node_config,
            "run_config": s.run_config,
            "policy": s.policy.to_json(),
            "read": [str(p) for p in read],
            "write": [str(self.scratch)],
            "max_bytes": s.max_bytes,
        }
        try:
            pipe.write_frame(self._in, pipe.START, json.dumps(start).encode())
        except OSError:
            pass  # it died at once: wait_ready says how

    def wait_ready(self, deadline: float) -> Enforced:
        """What holds in the worker, once it loaded the app.

        Raises
        ------
        ContainmentUnavailable
            The policy asks for a layer the worker could not enforce.
        ConfigError
            The ClientApp could not be loaded.
        WorkerFailed
            The worker died, broke the protocol or did not start in time.
        """
        if self.enforced is not None:
            return self.enforced
        kind, payload = self._read(deadline, "starting")
        data = self._control(payload, "starting")
        if kind == pipe.UNAVAILABLE:
            raw = data.get("layers")
            layers = tuple(str(x) for x in raw[:10]) if isinstance(raw, list) else ()
            self.kill()
            raise ContainmentUnavailable(
                str(data.get("unavailable"))[:2000], layers=layers
            )
        if kind == pipe.APP_ERROR:
            self.kill()
            raise ConfigError(
                f"the ClientApp could not be loaded in its worker: "
                f"{str(data.get('type'))[:100]}: {str(data.get('text'))[:2000]}"
            )
        if kind != pipe.READY:
            self._broken("starting", f"an unexpected frame {kind!r}")
        try:
            enforced = Enforced.from_json(data.get("enforced"))
        except ValueError as exc:
            self._broken("starting", str(exc))
        self._check_enforced(enforced)
        self.enforced = enforced
        return enforced

    def _check_enforced(self, enforced: Enforced) -> None:
        """Fail closed: a full policy needs every layer (whatever the worker says)."""
        if self.spec.policy.contained and (
            enforced.level != "full" or enforced.missing
        ):
            self.kill()
            names = tuple(x.name for x in enforced.missing) or ("network",)
            raise ContainmentUnavailable(
                f"the worker could not enforce {', '.join(names)}", layers=names
            )

    def call(
        self, run_id: int, message: Message, deadline: float
    ) -> tuple[bytes, bytearray]:
        """Send one request; the reply frame's kind and payload.

        Raises
        ------
        TimeoutError
            ``deadline`` (monotonic) passed first (the caller kills the worker).
        WorkerFailed
            The worker died or broke the protocol (it is killed).
        """
        self.wait_ready(deadline)
        head = struct.pack(">Q", run_id & 0xFFFFFFFFFFFFFFFF)
        split = split_message(message)  # the arrays' own buffers, never joined
        try:
            pipe.write_parts(
                self._in, pipe.REQUEST, (head, split.prefix, *split.parts), deadline
            )
        except (BrokenPipeError, ConnectionResetError):
            self._died("taking the request")
        kind, payload = self._read(deadline, "running the ClientApp")
        if kind not in (pipe.REPLY, pipe.APP_ERROR):
            self._broken("running the ClientApp", f"an unexpected frame {kind!r}")
        return kind, payload

    def _read(self, deadline: float, doing: str) -> tuple[bytes, bytearray]:
        try:
            return self._reader.read(deadline)
        except pipe.FrameError as exc:
            if self.proc.poll() is not None or "closed" in str(exc):
                self._died(doing)
            self._broken(doing, str(exc))

    def _control(self, payload: bytearray, doing: str) -> dict[str, object]:
        try:
            return pipe.parse_json(payload)
        except pipe.FrameError as exc:
            self._broken(doing, str(exc))

    def _broken(self, doing: str, what: str) -> NoReturn:
        self.kill()
        raise WorkerFailed(
            f"the ClientApp's worker broke the protocol while {doing} ({what}); "
            "it was stopped and nothing it sent was used"
        )

    def _died(self, doing: str) -> NoReturn:
        try:  # it closed its pipe: let it finish ending, to say how it ended
            self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        raise WorkerFailed(
            f"the ClientApp's worker ended while {doing}: {self.how_it_ended()}"
        )

    def how_it_ended(self) -> str:
        """How the worker ended, in a data owner's words."""
        code = self.proc.poll()
        if code is None:
            return "it is still running"
        sig = -code if code < 0 else code - 128 if code > 128 else 0
        if sig:
            name = _signal_name(sig)
            hint = _HINTS.get(int(sig), "")
            return f"killed by signal {sig} ({name}){hint}"
        return f"it exited with status {code}"

    def close(self) -> None:
        """Tell the worker to exit; kill it after :data:`EXIT_GRACE` seconds."""
        if self.proc.poll() is None:
            try:
                pipe.write_frame(self._in, pipe.EXIT, b"", time.monotonic() + 0.5)
            except (OSError, TimeoutError):
                pass
            try:
                self.proc.wait(EXIT_GRACE)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """Kill the worker's whole process group; clean up after it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        release(self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)


_HINTS = {
    int(signal.SIGKILL): ": the memory or process limit, or it was stopped?",
    int(signal.SIGXCPU): ": the CPU-time limit",
    int(signal.SIGXFSZ): ": the file-size limit",
    int(signal.SIGSEGV): ": a crash in native code",
}


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "unknown"


def _clean_env(scratch: Path) -> dict[str, str]:
    """PATH, the locale and DATA_DIR; HOME and TMPDIR in the scratch; nothing else."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith("LC_")}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update(HOME=str(scratch), TMPDIR=str(scratch), PYTHONDONTWRITEBYTECODE="1")
    return env
