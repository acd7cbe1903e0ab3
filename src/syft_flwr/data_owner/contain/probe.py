"""Probe containment for real: a contained child attacks each layer and reports.

``syft_flwr containment`` runs :func:`run_probe`. The child (this module run as
``python -m syft_flwr.data_owner.contain.probe``) contains itself exactly as a
worker does, then tries what a hostile ClientApp would: connect to a loopback
listener of the data owner's process, look up a name, read a file outside its
allowed paths, write outside its scratch folder, map more memory than allowed,
start more processes than allowed, and leave a grandchild behind. The data
owner's side decides from what happened on its side too (did its listener get
a connection? did the grandchild outlive the child?), not from the child's word
alone.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from syft_flwr.data_owner.contain.policy import FULL, ContainmentPolicy
from syft_flwr.data_owner.contain.report import LAYERS, Enforced, Layer
from syft_flwr.data_owner.contain.sandbox import command, enter, release
from syft_flwr.errors import ContainmentUnavailable

__all__ = ["run_probe"]

#: Processes the probe starts to test the limit (a lower cap than a worker's
#: default: the kernel mechanism is the same, and the test stays light).
PROBE_MAX_PROCESSES = 32
_OUTLIVE_WAIT = 15.0


def run_probe(policy: ContainmentPolicy, *, timeout: float = 60.0) -> Enforced:
    """Run the probe child under ``policy``'s limits (at level full) and report.

    Parameters
    ----------
    policy : ContainmentPolicy
        Its limits and extra paths are probed; its level is not (the probe
        always asks for every layer, to say what this machine can enforce).
    timeout : float
        Seconds the child may take.
    """
    cap = min(policy.max_processes, PROBE_MAX_PROCESSES)
    policy = policy.with_(level=FULL, max_processes=cap)
    with tempfile.TemporaryDirectory(prefix="syft_flwr-probe-") as tmp:
        root = Path(tmp)
        secret, forbidden, scratch = _targets(root)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            listener.setblocking(False)
            spec = {
                "policy": policy.to_json(),
                "port": listener.getsockname()[1],
                "secret": str(secret),
                "forbidden": str(forbidden),
                "scratch": str(scratch),
            }
            result, outlived = _run_child(policy, spec, scratch, timeout)
            reached = _accepted(listener)
    return _judge(policy, result, reached=reached, outlived=outlived)


def _targets(root: Path) -> tuple[Path, Path, Path]:
    """A secret file, a forbidden folder and the scratch folder, in ``root``."""
    secret = root / "secret.txt"
    secret.write_text("the data owner's private key would be here\n")
    forbidden = root / "forbidden"
    forbidden.mkdir()
    scratch = root / "scratch"
    scratch.mkdir()
    return secret, forbidden, scratch


def _run_child(
    policy: ContainmentPolicy, spec: dict[str, Any], scratch: Path, timeout: float
) -> tuple[dict[str, Any], bool]:
    """Run the child; its JSON report, and whether a grandchild outlived it."""
    argv, extra = command(
        policy, read=[], write=[scratch], module="syft_flwr.data_owner.contain.probe"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch)}
    env.update(extra)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        cwd=scratch,
        env=env,
        start_new_session=True,
    )
    outlived = False
    try:
        out, _ = proc.communicate(json.dumps(spec).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        # The child or a grandchild still holds the pipe: kill what we can name.
        outlived = True
        os.killpg(proc.pid, signal.SIGKILL)
        out = _kill_outliver(proc)
    finally:
        release(proc.pid)
    return _parse_report(out), outlived


def _kill_outliver(proc: subprocess.Popen[bytes]) -> bytes:
    """Read what the child wrote; kill the grandchild it names (it outlived it)."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = proc.stdout.read() or b""
    for line in out.splitlines():
        if line.startswith(b"outliver "):
            try:
                os.kill(int(line.split()[1]), signal.SIGKILL)
            except (ValueError, OSError):
                pass
    proc.wait()
    return out


def _parse_report(out: bytes) -> dict[str, Any]:
    for line in out.splitlines():
        if line.startswith(b"{"):
            try:
                data = json.loads(line)
            except ValueError:
                break
            if isinstance(data, dict):
                return data
    return {"unavailable": "the probe child reported nothing", "layers": list(LAYERS)}


def _accepted(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _judge(
    policy: ContainmentPolicy,
    result: dict[str, Any],
    *,
    reached: bool,
    outlived: bool,
) -> Enforced:
    """What holds, from the child's attempts and what this side saw."""
    if "unavailable" in result:
        missing = set(result.get("layers") or LAYERS)
        why = str(result["unavailable"])[:500]
        return Enforced(
            FULL,
            tuple(
                Layer(n, False, why) if n in missing else Layer(n, False, "not tried")
                for n in LAYERS
            ),
        )
    claimed = Enforced.from_json(result.get("enforced"))
    how = {x.name: x.how for x in claimed.layers}
    tried = result.get("tried", {})
    checks = {
        "network": (not reached and _refused(tried, "connect"), "a socket reached"),
        "processes": (
            not outlived and _refused(tried, "fork"),
            "a grandchild outlived the worker" if outlived else "no process limit",
        ),
        "files": (
            _refused(tried, "read")
            and _refused(tried, "write")
            and _ok(tried, "scratch"),
            "a forbidden read or write succeeded, or the scratch folder was not writable",
        ),
        "memory": (_refused(tried, "memory"), "a mapping past the limit succeeded"),
        "limits": (True, ""),
    }
    layers = []
    for name in LAYERS:
        held, failure = checks[name]
        text = how[name] + (" (tested at that cap)" if name == "processes" else "")
        layers.append(Layer(name, held, text if held else f"NOT enforced: {failure}"))
    return Enforced(FULL, tuple(layers))


def _refused(tried: dict[str, Any], key: str) -> bool:
    item = tried.get(key)
    return isinstance(item, dict) and item.get("refused") is True


def _ok(tried: dict[str, Any], key: str) -> bool:
    item = tried.get(key)
    return isinstance(item, dict) and item.get("refused") is False


# --- the child ---------------------------------------------------------------


def _attempt(fn: Any, *args: Any) -> dict[str, Any]:
    """Run one attack: ``refused`` True when the OS said no."""
    try:
        detail = fn(*args)
    except (OSError, MemoryError) as exc:
        return {"refused": True, "detail": f"{type(exc).__name__}: {exc}"[:200]}
    return {"refused": False, "detail": str(detail)[:200]}


def _connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"


def _resolve() -> str:
    return str(socket.getaddrinfo("example.org", 443)[0][4])


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f"read {len(f.read())} bytes"


def _write(folder: str) -> str:
    with open(os.path.join(folder, "probe.txt"), "w") as f:
        f.write("written")
    return "written"


def _map(mb: int) -> str:
    with mmap.mmap(-1, mb * 1024 * 1024):
        return f"mapped {mb} MiB"


def _fork_many(limit: int) -> str:
    """Start up to ``limit + 8`` waiting children; raise when the kernel refuses."""
    r, w = os.pipe()
    pids: list[int] = []
    try:
        for _ in range(limit + 8):
            pid = os.fork()  # raises BlockingIOError (EAGAIN) at the limit
            if pid == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            pids.append(pid)
        return f"started {len(pids)} processes"
    finally:
        os.close(w)
        for pid in pids:
            os.waitpid(pid, 0)
        os.close(r)


def _leave_grandchild() -> None:
    """A grandchild in its own session that holds stdout and sleeps."""
    if os.fork() == 0:
        os.setsid()
        print(f"outliver {os.getpid()}", flush=True)
        time.sleep(_OUTLIVE_WAIT * 4)
        os._exit(0)


def _child_main() -> None:
    spec = json.loads(sys.stdin.buffer.read(1 << 16))
    policy = ContainmentPolicy.from_json(spec["policy"])
    try:
        enforced = enter(policy, read=[], write=[Path(spec["scratch"])])
    except ContainmentUnavailable as exc:
        print(json.dumps({"unavailable": str(exc), "layers": list(exc.layers)}))
        return
    tried = {
        "connect": _attempt(_connect, spec["port"]),
        "dns": _attempt(_resolve),
        "read": _attempt(_read, spec["secret"]),
        "write": _attempt(_write, spec["forbidden"]),
        "scratch": _attempt(_write, spec["scratch"]),
        "memory": _attempt(_map, policy.memory_mb + 256),
        "fork": _attempt(_fork_many, policy.max_processes),
    }
    print(json.dumps({"enforced": enforced.to_json(), "tried": tried}), flush=True)
    _leave_grandchild()


if __name__ == "__main__":
    _child_main()
