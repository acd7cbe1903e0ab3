"""Enforce the containment policy inside the worker (probing it: :mod:`.probe`).

Start a worker with :func:`command` (its first step contains it, see
:mod:`.boot`), then call :func:`enter` in it to learn what holds.

Called in the worker process before any of the app's code is imported:

- network: a new user + network namespace (only a loopback device inside);
- processes: a new PID namespace whose first process is the app's; when the
  worker's supervisor dies, the kernel kills every process inside, so no
  grandchild outlives it;
- files: Landlock allows reading the app's code, the Python installation and
  its packages, ``DATA_DIR`` and the data owner's extra paths, and writing only
  the worker's scratch folder (and extra writable paths);
- limits: rlimits on address space, CPU seconds, file size, and processes
  (``RLIMIT_NPROC``; for root, whom the kernel exempts from it, a pids cgroup);
  ``PR_SET_NO_NEW_PRIVS``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from syft_flwr.data_owner.contain import _landlock, _linux
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.data_owner.contain.report import LAYERS, Enforced, Layer, off
from syft_flwr.errors import ContainmentUnavailable

#: How :func:`command` hands the spec to :mod:`.boot`, and boot the outcome back
#: to :func:`enter` (private to the two; kept in step with boot.py).
SPEC_ENV = "_SYFT_FLWR_CONTAIN_SPEC"
REPORT_ENV = "_SYFT_FLWR_CONTAIN_REPORT"

__all__ = [
    "LAYERS",
    "Enforced",
    "Layer",
    "command",
    "contain_from_spec",
    "enter",
    "off",
    "release",
]

#: What any Python program needs to read besides its installation (the C
#: library, time zones, CPU facts numeric libraries size their threads by).
_SYSTEM_READ = (
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/local/lib",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
)
#: Devices every program may write (discarding output).
_SYSTEM_WRITE = ("/dev/null", "/dev/zero")


def command(
    policy: ContainmentPolicy,
    *,
    read: Sequence[Path],
    write: Sequence[Path],
    module: str,
    args: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start ``module`` contained.

    The process contains itself before anything else is imported (see
    :mod:`.boot`); ``module`` then calls :func:`enter` with the same arguments
    to learn what holds. Add the returned variables to the child's environment.

    Returns
    -------
    tuple of (list of str, dict of str to str)
        ``argv`` for :class:`subprocess.Popen`, and the environment to add.
    """
    boot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.py")
    argv = [sys.executable, boot, module, *args]
    return argv, {SPEC_ENV: json.dumps(_spec(policy, read, write))}


def _spec(
    policy: ContainmentPolicy, read: Sequence[Path], write: Sequence[Path]
) -> dict[str, object]:
    return {
        "policy": policy.to_json(),
        "read": [str(p) for p in read],
        "write": [str(p) for p in write],
    }


def contain_from_spec(spec: dict[str, object]) -> Enforced:
    """Contain this process as :func:`command`'s ``spec`` says (called by :mod:`.boot`)."""
    policy = ContainmentPolicy.from_json(spec["policy"])  # type: ignore[arg-type]
    read = [Path(p) for p in spec["read"]]  # type: ignore[attr-defined]
    write = [Path(p) for p in spec["write"]]  # type: ignore[attr-defined]
    return _contain_now(policy, read, write)


def enter(
    policy: ContainmentPolicy, *, read: Sequence[Path], write: Sequence[Path]
) -> Enforced:
    """Contain the calling process, or confirm it was contained at start; return what holds.

    A process started with :func:`command` was contained before its first
    import: this returns that outcome, after checking it was for the same
    ``policy``, ``read`` and ``write``. Otherwise the process must be
    single-threaded (nothing that starts threads imported yet) and is
    contained now; with level ``"full"`` that forks once: the original process
    stays outside as the supervisor, waits and exits with the child's status
    (it never returns); the call returns in the child, the first process of the
    new PID namespace. Every layer is set up or the call raises, and the
    caller must not run the app.

    Parameters
    ----------
    policy : ContainmentPolicy
    read : sequence of Path
        Paths the app may read (its code, ``DATA_DIR``), besides the Python
        installation and ``policy.allow_read``.
    write : sequence of Path
        Paths the app may write (its scratch folder), besides
        ``policy.allow_write``.

    Raises
    ------
    ContainmentUnavailable
        Level ``"full"`` and a layer cannot be enforced (nothing was run).
    """
    booted = os.environ.pop(REPORT_ENV, None)
    if booted is not None:
        return _booted(json.loads(booted), _spec(policy, read, write))
    return _contain_now(policy, list(read), list(write))


def _booted(outcome: dict[str, object], asked: dict[str, object]) -> Enforced:
    """What :mod:`.boot` recorded, if it contained us as ``asked``."""
    if outcome.get("spec") != asked:
        _unavailable(LAYERS, "the worker was started for another containment policy")
    if "unavailable" in outcome:
        layers = tuple(str(x) for x in outcome.get("layers") or LAYERS)  # type: ignore[attr-defined]
        raise ContainmentUnavailable(str(outcome["unavailable"]), layers=layers)
    return Enforced.from_json(outcome.get("report"))


def _contain_now(
    policy: ContainmentPolicy, read: list[Path], write: list[Path]
) -> Enforced:
    if not policy.contained:
        return off(policy.level)
    if sys.platform != "linux":
        _unavailable(LAYERS, f"{sys.platform} has no Linux namespaces or Landlock")
    if threading.active_count() != 1 or _native_threads() != 1:
        _unavailable(
            LAYERS,
            "the process already runs threads (start it with sandbox.command, "
            "which contains it before numpy and its thread pools are imported)",
        )
    reads = _read_paths(read, policy.allow_read)
    writes = [*map(Path, write), *map(Path, _SYSTEM_WRITE), *policy.allow_write]
    counted = _limit_processes(policy)
    _isolate()
    _become_contained_child()
    return _restrict(policy, reads, writes, counted)


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _unavailable(layers: Iterable[str], why: str) -> NoReturn:
    names = tuple(layers)
    raise ContainmentUnavailable(
        f"containment cannot be enforced here ({', '.join(names)}): {why}. Nothing "
        "of the app was run. Run `syft_flwr containment` to see what this machine "
        "can enforce; --containment none (SYFT_FLWR_CONTAINMENT=none) runs approved "
        "code without these layers, at your explicit choice",
        layers=names,
    )


def _read_paths(read: Sequence[Path], extra: Sequence[Path]) -> list[Path]:
    """The caller's paths, the Python installation and its packages, and the system's."""
    python = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    }
    # sys.path[0] of ``python -m`` is the working folder: the scratch, allowed
    # for writing anyway; never the folder the data owner started from.
    entries = [p for p in sys.path[1:] if p and os.path.isabs(p)]
    paths = [
        *map(Path, read),
        *map(Path, sorted(python)),
        *map(Path, entries),
        *map(Path, _SYSTEM_READ),
        *extra,
    ]
    return [p for p in paths if p.resolve() != Path("/")]


def _limit_processes(policy: ContainmentPolicy) -> str:
    """Cap the worker's processes: a pids cgroup for root, else ``RLIMIT_NPROC``."""
    if os.geteuid() != 0:
        return f"at most {policy.max_processes} processes and threads (RLIMIT_NPROC)"
    try:
        folder = _linux.join_pids_cgroup(policy.max_processes)
    except OSError as exc:
        _unavailable(
            ("processes",),
            "running as root, whom the kernel exempts from the process limit, "
            f"and {exc}; run the data owner as an ordinary user",
        )
    return (
        f"at most {policy.max_processes} processes and threads (pids cgroup {folder})"
    )


def _isolate() -> None:
    """New user, network and PID namespaces (no route out, host processes unseen)."""
    try:
        _linux.unshare_user_net_pid()
    except OSError as exc:
        _unavailable(
            ("network", "processes"),
            f"no unprivileged user namespaces ({exc}); on Debian/Ubuntu check "
            "kernel.unprivileged_userns_clone and AppArmor's "
            "apparmor_restrict_unprivileged_userns",
        )


def _become_contained_child() -> None:
    """Fork: the parent supervises from outside and exits with the child's status.

    The child is the first process of the new PID namespace: when it ends, the
    kernel kills every process left inside, and it is killed if the supervisor
    dies (the data owner kills the supervisor's process group).
    """
    pid = os.fork()
    if pid == 0:
        _linux.die_with_parent()
        return
    try:  # the supervisor holds none of the pipes' ends it does not need
        os.close(0)
        os.close(1)
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _restrict(
    policy: ContainmentPolicy, reads: list[Path], writes: list[Path], counted: str
) -> Enforced:
    """Loopback, limits, no new privileges, then Landlock: in that order."""
    try:
        _linux.bring_up_loopback()
        _linux.set_limits(
            memory_mb=policy.memory_mb,
            cpu_seconds=policy.cpu_seconds,
            max_file_mb=policy.max_file_mb,
            max_processes=None if os.geteuid() == 0 else policy.max_processes,
        )
        _linux.no_new_privs()
    except OSError as exc:
        _unavailable(("memory", "limits"), f"the kernel refused a limit ({exc})")
    try:
        abi = _landlock.restrict(read=reads, write=writes)
    except OSError as exc:
        _unavailable(("files",), str(exc))
    tcp = " and Landlock denies TCP" if abi >= 4 else ""
    return Enforced(
        "full",
        (
            Layer("network", True, f"own network namespace: loopback only{tcp}"),
            Layer(
                "processes",
                True,
                f"own PID namespace (nothing outlives the worker), {counted}",
            ),
            Layer(
                "files",
                True,
                f"Landlock ABI {abi}: reads only the app, Python, DATA_DIR and "
                f"{len(policy.allow_read)} extra path(s); writes only its scratch "
                f"folder and {len(policy.allow_write)} extra path(s)",
            ),
            Layer("memory", True, f"address space at most {policy.memory_mb} MiB"),
            Layer(
                "limits",
                True,
                f"CPU {policy.cpu_seconds} s, files up to {policy.max_file_mb} MiB, "
                "no new privileges",
            ),
        ),
    )


def release(worker_pid: int) -> None:
    """Clean up what :func:`enter` left outside a worker that has ended (its cgroup)."""
    for folder in _linux.pids_cgroup_dirs(worker_pid):
        try:
            folder.rmdir()
        except OSError:
            pass  # not made here, or not empty yet: the kernel keeps it harmless
