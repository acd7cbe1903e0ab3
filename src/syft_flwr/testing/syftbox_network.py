"""Run a real SyftBox 0.4.0 network (server + one sync client per party) on loopback.

This is a test harness. ``syftbox==0.4.0`` hard-pins versions of pydantic, fastapi
and typing-extensions that conflict with Flower, so it lives in its own virtualenv
(created by ``scripts/setup_syftbox_venv.sh``) and only ever runs as separate processes:

* the server: ``<venv>/bin/uvicorn syftbox.server.server:app`` (dev mode, no auth),
  run from an empty folder with ``SYFTBOX_DATA_FOLDER`` pointing inside it;
* one ``<venv>/bin/syftbox client --service`` per email, each with its own data dir
  ``<root>/<local-part>/SyftBox``, so files move between parties only via the server.

Only the standard library is used; the client configs written by the sync clients can
be loaded with ``syft_core.Client.load(party.config_path)``.

Size: over 400 lines because it is one harness with one lifecycle (start the
server, the clients, wait for the mesh, stop everything) whose processes and
logs are owned by :class:`SyftBoxNetwork`; it is test tooling, not protocol.

Examples
--------
>>> emails = ["ds@example.org", "do1@example.org"]
>>> with SyftBoxNetwork(tmp, emails) as net:  # doctest: +SKIP
...     ds = net.party("ds@example.org")
...     net.wait_for_file("do1@example.org", "datasites/ds@example.org/public/x", 10)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "SYFTBOX_VERSION",
    "SyftBoxNetwork",
    "SyftBoxNetworkError",
    "SyftBoxParty",
    "SyftBoxUnavailable",
    "ensure_syftbox_venv",
    "free_port",
    "syftbox_venv_path",
]

SYFTBOX_VERSION = "0.4.0"
"""The syftbox release this harness targets (last Python SyftBox)."""

_LOOPBACK = "127.0.0.1"
_MARKER_NAME = ".syftbox-installed"
_SETUP_SCRIPT = Path("scripts") / "setup_syftbox_venv.sh"
_STOP_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.05
_HTTP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 25


class SyftBoxUnavailable(RuntimeError):
    """syftbox==0.4.0 cannot be installed or found in its virtualenv.

    Parameters
    ----------
    reason
        One-line human readable reason (e.g. the pip error).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SyftBoxNetworkError(RuntimeError):
    """The SyftBox network failed to start or became unhealthy.

    The message includes the tail of every process log.
    """


@dataclass(frozen=True)
class SyftBoxParty:
    """One running SyftBox sync client.

    Attributes
    ----------
    email
        The party's (lower-case) email, i.e. its datasite name.
    data_dir
        The client's sync folder (``<root>/<local-part>/SyftBox``).
    config_path
        The client's config JSON (loadable with ``syft_core.Client.load``).
    port
        Loopback port of the client's local control-plane API.
    log_path
        File receiving the client's stdout and stderr.
    pid
        OS process id of the client (leader of its own process group).
    """

    email: str
    data_dir: Path
    config_path: Path
    port: int
    log_path: Path
    pid: int

    @property
    def datasites(self) -> Path:
        """Directory holding this client's copies of all datasites."""
        return self.data_dir / "datasites"

    @property
    def my_datasite(self) -> Path:
        """This party's own datasite directory."""
        return self.datasites / self.email

    def datasite(self, owner: str) -> Path:
        """This client's local copy of ``owner``'s datasite."""
        return self.datasites / owner.strip().lower()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Returns
    -------
    int
        A port obtained by binding port 0 (the OS picks it); it is released before
        returning, so a small race with other processes remains.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _repo_root() -> Path:
    """Best guess of the source checkout holding ``scripts/setup_syftbox_venv.sh``."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / _SETUP_SCRIPT).is_file():
            return parent
    return Path.cwd()


def syftbox_venv_path() -> Path:
    """Return where the syftbox virtualenv lives.

    Returns
    -------
    Path
        ``$SYFTBOX_VENV`` when set, else ``<repo>/.venv-syftbox``.
    """
    env = os.environ.get("SYFTBOX_VENV")
    if env:
        return Path(env).expanduser().resolve()
    return _repo_root() / ".venv-syftbox"


def _venv_ready(venv: Path) -> bool:
    marker = venv / _MARKER_NAME
    try:
        installed = marker.read_text().strip()
    except OSError:
        return False
    return (
        installed == f"syftbox=={SYFTBOX_VERSION}"
        and os.access(venv / "bin" / "syftbox", os.X_OK)
        and os.access(venv / "bin" / "uvicorn", os.X_OK)
    )


def ensure_syftbox_venv(venv: Path | None = None) -> Path:
    """Make sure ``syftbox==0.4.0`` is installed in its own virtualenv.

    Runs ``scripts/setup_syftbox_venv.sh`` (idempotent: a no-op when the venv is
    complete).

    Parameters
    ----------
    venv
        Target virtualenv; defaults to :func:`syftbox_venv_path`.

    Returns
    -------
    Path
        The virtualenv directory.

    Raises
    ------
    SyftBoxUnavailable
        When the setup script is missing or fails (the reason is its last error line).
    """
    venv = (
        Path(venv).expanduser().resolve() if venv is not None else syftbox_venv_path()
    )
    if _venv_ready(venv):
        return venv
    script = _repo_root() / _SETUP_SCRIPT
    if not script.is_file():
        raise SyftBoxUnavailable(
            f"setup script {_SETUP_SCRIPT} not found (looked in {script.parent})"
        )
    try:
        proc = subprocess.run(
            ["bash", str(script), str(venv)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SyftBoxUnavailable(f"running {script.name} failed: {exc}") from exc
    if proc.returncode != 0 or not _venv_ready(venv):
        lines = [
            ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()
        ]
        reason = (
            lines[-1].strip()
            if lines
            else f"{script.name} exited with {proc.returncode}"
        )
        reason = reason.removeprefix("setup_syftbox_venv: ")
        raise SyftBoxUnavailable(reason)
    return venv


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


def _child_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """Child environment: inherited minus any SYFTBOX_* settings, plus ``extra``."""
    env = {k: v for k, v in base.items() if not k.upper().startswith("SYFTBOX_")}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class _Proc:
    """A started child process, its log file and a name for messages."""

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log: IO[bytes], log_path: Path
    ):
        self.name = name
        self.popen = popen
        self.log = log
        self.log_path = log_path


class SyftBoxNetwork:
    """A SyftBox 0.4.0 server plus one sync client per email, all on 127.0.0.1.

    Parameters
    ----------
    root
        Working directory for the network (server data, one folder per party, logs).
    emails
        Party emails (lower-cased; use real-looking domains such as ``example.org``: the
        config validator rejects ``.test``/``.local``).
    venv
        The syftbox virtualenv (see :func:`ensure_syftbox_venv`); default
        :func:`syftbox_venv_path`.
    server_port
        Server port on 127.0.0.1; a free one is picked when ``None``.
    ready_timeout
        Seconds :meth:`start` waits for the server and the full mesh of clients.

    Notes
    -----
    Every process is started with ``start_new_session=True``; :meth:`stop` terminates
    them by PID in reverse start order and kills their process groups. ``stop`` is also
    registered with :mod:`atexit` as a safety net.
    """

    def __init__(
        self,
        root: Path,
        emails: Sequence[str],
        *,
        venv: Path | None = None,
        server_port: int | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        if isinstance(emails, str):
            raise TypeError("emails must be a sequence of strings, not a single string")
        normalized = [e.strip().lower() for e in emails]
        if not normalized:
            raise ValueError("at least one email is required")
        for email in normalized:
            local, sep, domain = email.partition("@")
            if not (local and sep and "." in domain) or "/" in email:
                raise ValueError(f"not a usable email: {email!r}")
        if len(set(normalized)) != len(normalized):
            raise ValueError(f"duplicate emails: {normalized}")
        self.root = Path(root).expanduser().resolve()
        self.emails: tuple[str, ...] = tuple(normalized)
        self.venv = (
            Path(venv).expanduser().resolve()
            if venv is not None
            else syftbox_venv_path()
        )
        self.ready_timeout = float(ready_timeout)
        self.startup_seconds: float | None = None
        """Seconds the last successful :meth:`start` took (server up to full mesh)."""
        self._requested_port = server_port
        self._server_port: int | None = None
        self._procs: list[_Proc] = []
        self._parties: dict[str, SyftBoxParty] = {}
        self._tokens: dict[str, str] = {}
        self._atexit_registered = False
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ------------------------------------------------------------------ properties
    @property
    def server_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server (no trailing slash)."""
        if self._server_port is None:
            raise RuntimeError("network not started")
        return f"http://{_LOOPBACK}:{self._server_port}"

    @property
    def server_dir(self) -> Path:
        """The server's working directory (its data lives in ``data/`` inside)."""
        return self.root / "server"

    @property
    def server_log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.root / "server.log"

    @property
    def parties(self) -> list[SyftBoxParty]:
        """The parties of the last :meth:`start`, in the order of ``emails``."""
        return [self._parties[e] for e in self.emails if e in self._parties]

    @property
    def running(self) -> bool:
        """Whether processes started by this network are still tracked."""
        return bool(self._procs)

    def party(self, email: str) -> SyftBoxParty:
        """Return the party record for ``email`` (still available after :meth:`stop`).

        Raises
        ------
        KeyError
            When ``email`` is not part of the started network.
        """
        key = email.strip().lower()
        try:
            return self._parties[key]
        except KeyError:
            raise KeyError(
                f"{email!r} is not a party of this network (have {list(self._parties)})"
            ) from None

    def _party_dir(self, email: str) -> Path:
        local = email.split("@", 1)[0]
        clash = sum(1 for e in self.emails if e.split("@", 1)[0] == local) > 1
        return self.root / (email if clash else local)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SyftBoxNetwork:
        """Start server and clients; wait until every client sees every datasite.

        Returns
        -------
        SyftBoxNetwork
            ``self``, for chaining.

        Raises
        ------
        SyftBoxUnavailable
            When the syftbox virtualenv is missing or incomplete.
        SyftBoxNetworkError
            When a process dies or the network is not ready within ``ready_timeout``;
            the message includes the tail of every log. All started processes are
            stopped first.
        """
        if self._procs:
            raise RuntimeError("network already started")
        if not _venv_ready(self.venv):
            raise SyftBoxUnavailable(
                f"no syftbox=={SYFTBOX_VERSION} venv at {self.venv}; "
                "call ensure_syftbox_venv() first"
            )
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        self._parties.clear()
        t0 = time.monotonic()
        deadline = t0 + self.ready_timeout
        try:
            self._start_server(deadline)
            for email in self.emails:
                self._tokens[email] = self._dev_token(email)
            for email in self.emails:
                self._start_client(email)
            self._wait_mesh(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _spawn(
        self, name: str, argv: list[str], cwd: Path, env: dict[str, str], log_path: Path
    ) -> _Proc:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        proc = _Proc(name, popen, log, log_path)
        self._procs.append(proc)
        return proc

    def _start_server(self, deadline: float) -> None:
        self.server_dir.mkdir(parents=True, exist_ok=True)
        # The server reads ./server.env from its cwd: make sure there is none.
        (self.server_dir / "server.env").unlink(missing_ok=True)
        self._server_port = self._requested_port or free_port()
        env = _child_env(
            dict(os.environ),
            HOME=str(self.server_dir),
            SYFTBOX_DATA_FOLDER=str(self.server_dir / "data"),
        )
        argv = [
            str(self.venv / "bin" / "uvicorn"),
            "syftbox.server.server:app",
            "--host",
            _LOOPBACK,
            "--port",
            str(self._server_port),
            "--log-level",
            "warning",
        ]
        proc = self._spawn("server", argv, self.server_dir, env, self.server_log_path)
        while True:
            self._check_alive()
            try:
                info = self._request("GET", "/info", timeout=2.0)
            except (OSError, ValueError):
                info = None
            if isinstance(info, dict) and info.get("version"):
                return
            if time.monotonic() > deadline:
                raise SyftBoxNetworkError(
                    f"server (pid {proc.popen.pid}) did not answer "
                    f"GET {self.server_url}/info in time" + self._log_report()
                )
            time.sleep(0.1)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = _HTTP_TIMEOUT,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        with self._opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _dev_token(self, email: str) -> str:
        """Get an access token in dev mode (auth off: the email token is returned)."""
        try:
            email_token = self._request(
                "POST", "/auth/request_email_token", body={"email": email}
            )["email_token"]
            quoted = urllib.parse.quote(email, safe="@")
            access = self._request(
                "POST",
                f"/auth/validate_email_token?email={quoted}",
                headers={"Authorization": f"Bearer {email_token}"},
            )["access_token"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            detail = (
                exc.read().decode(errors="replace")
                if isinstance(exc, urllib.error.HTTPError)
                else ""
            )
            raise SyftBoxNetworkError(
                f"could not get a dev-mode access token for {email}: {exc!r} {detail}"
                + self._log_report()
            ) from exc
        if not isinstance(access, str) or not access:
            raise SyftBoxNetworkError(f"server returned no access token for {email}")
        return access

    def _start_client(self, email: str) -> None:
        pdir = self._party_dir(email)
        data_dir = pdir / "SyftBox"
        config_path = pdir / "config.json"
        log_path = pdir / "client.log"
        pdir.mkdir(parents=True, exist_ok=True)
        used = {self._server_port} | {p.port for p in self._parties.values()}
        port = free_port()
        while port in used:
            port = free_port()
        env = _child_env(
            dict(os.environ),
            HOME=str(pdir),
            SYFTBOX_CLIENT_CONFIG_PATH=str(config_path),
            SYFTBOX_EMAIL=email,
            SYFTBOX_ACCESS_TOKEN=self._tokens[email],
            SYFTBOX_DATA_DIR=str(data_dir),
            SYFTBOX_SERVER_URL=self.server_url,
            SYFTBOX_PORT=str(port),
            SYFTBOX_DISABLE_ICONS="1",
        )
        argv = [str(self.venv / "bin" / "syftbox"), "client", "--service"]
        proc = self._spawn(f"client {email}", argv, pdir, env, log_path)
        self._parties[email] = SyftBoxParty(
            email=email,
            data_dir=data_dir,
            config_path=config_path,
            port=port,
            log_path=log_path,
            pid=proc.popen.pid,
        )

    def _missing_links(self) -> list[str]:
        missing = []
        for party in self._parties.values():
            if not party.config_path.is_file():
                missing.append(f"{party.email}: config {party.config_path.name}")
            for other in self.emails:
                if not (party.datasite(other) / "public" / "syftperm.yaml").is_file():
                    missing.append(f"{party.email} -> {other}")
        return missing

    def _wait_mesh(self, deadline: float) -> None:
        while True:
            self._check_alive()
            missing = self._missing_links()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise SyftBoxNetworkError(
                    f"SyftBox network not ready after {self.ready_timeout:.0f} s; "
                    "missing: " + ", ".join(missing) + self._log_report()
                )
            time.sleep(0.1)

    def _check_alive(self) -> None:
        for proc in self._procs:
            code = proc.popen.poll()
            if code is not None:
                raise SyftBoxNetworkError(
                    f"{proc.name} (pid {proc.popen.pid}) exited with code {code}"
                    + self._log_report()
                )

    def check_alive(self) -> None:
        """Raise :class:`SyftBoxNetworkError` (with log tails) if a process exited."""
        self._check_alive()

    def _log_report(self) -> str:
        parts = []
        for proc in self._procs:
            parts.append(
                f"\n--- {proc.name}: {proc.log_path} "
                f"(last {_LOG_TAIL_LINES} lines) ---\n"
            )
            parts.append(_tail(proc.log_path))
        return "".join(parts)

    def stop(self) -> None:
        """Stop every process this network started (idempotent).

        Clients are sent SIGTERM in reverse start order, then the server; each gets
        up to 10 s to exit before SIGKILL. Each process group is killed afterwards so
        no child survives.
        """
        procs, self._procs = self._procs, []
        if procs:
            clients = [p for p in procs if p.name != "server"]
            servers = [p for p in procs if p.name == "server"]
            # Clients first (they talk to the server while shutting down), server last.
            for batch in (list(reversed(clients)), list(reversed(servers))):
                self._terminate(batch)
            for proc in procs:
                with contextlib.suppress(OSError):
                    proc.log.close()
        # Party records stay available after stop (e.g. to read their logs).
        self._tokens.clear()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    @staticmethod
    def _terminate(batch: list[_Proc]) -> None:
        for proc in batch:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for proc in batch:
            try:
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait()
            # start_new_session=True made the child the leader of group == its pid.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)

    def __enter__(self) -> SyftBoxNetwork:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - best effort
        if getattr(self, "_procs", None):
            with contextlib.suppress(Exception):
                self.stop()

    # ------------------------------------------------------------------ helpers
    def wait_for_file(
        self,
        email: str,
        relpath: str,
        timeout: float,
        *,
        size: int | None = None,
    ) -> Path:
        """Wait until a file exists in a party's data dir.

        Parameters
        ----------
        email
            The party whose local data dir is watched.
        relpath
            Path relative to that party's ``data_dir`` (e.g.
            ``"datasites/do1@example.org/app_data/x/rpc/msg/ds@example.org/1.request"``).
        timeout
            Seconds to wait.
        size
            If given, also wait until the file has exactly this many bytes (the 0.4.0
            client writes downloads in place, so a large file can be seen half-written).

        Returns
        -------
        Path
            Absolute path of the file.

        Raises
        ------
        TimeoutError
            When the file does not appear (with that size) in time.
        SyftBoxNetworkError
            When a network process has died meanwhile.
        """
        return self._wait_path(
            self.party(email).data_dir / relpath, timeout, size, email
        )

    @property
    def server_snapshot(self) -> Path:
        """The server's copy of all datasites (``<server>/data/snapshot/<email>/``)."""
        return self.server_dir / "data" / "snapshot"

    def wait_for_server_file(
        self, relpath: str, timeout: float, *, size: int | None = None
    ) -> Path:
        """Wait until the server stores a file (i.e. an upload was accepted).

        Parameters
        ----------
        relpath
            Path relative to the server snapshot, starting with the datasite email
            (e.g. ``"do1@example.org/app_data/x/rpc/syftperm.yaml"``).
        timeout
            Seconds to wait.
        size
            If given, also wait until the stored file has exactly this many bytes.

        Returns
        -------
        Path
            Absolute path of the server's copy.

        Raises
        ------
        TimeoutError
            When the server does not have the file in time.
        """
        return self._wait_path(
            self.server_snapshot / relpath, timeout, size, "the server"
        )

    def _wait_path(
        self, path: Path, timeout: float, size: int | None, where: str
    ) -> Path:
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = path.stat()
            except FileNotFoundError:
                st = None
            if st is not None and (size is None or st.st_size == size):
                return path
            if time.monotonic() > deadline:
                what = "absent" if st is None else f"{st.st_size} bytes, want {size}"
                raise TimeoutError(
                    f"{path} not synced to {where} within {timeout:.1f} s ({what})"
                )
            self._check_alive()
            time.sleep(_POLL_SECONDS)

    def __repr__(self) -> str:
        state = f"running at {self.server_url}" if self._procs else "stopped"
        return (
            f"SyftBoxNetwork(root={str(self.root)!r}, "
            f"emails={list(self.emails)!r}, {state})"
        )


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        net = SyftBoxNetwork(
            Path(tmp), sys.argv[1:] or ["a@example.org", "b@example.org"]
        )
        with net:
            print(f"ready in {net.startup_seconds:.2f} s at {net.server_url}")
            for p in net.parties:
                print(p)
