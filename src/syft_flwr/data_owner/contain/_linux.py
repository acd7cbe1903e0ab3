"""The Linux primitives the sandbox is built from: namespaces, prctl, rlimits, cgroups.

Each function does one kernel step and raises ``OSError`` (with the step named)
when the kernel refuses it; what a refusal means for the data owner is the
sandbox's call.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import signal
import socket
import struct
from pathlib import Path

__all__ = [
    "PIDS_CGROUP_ROOTS",
    "bring_up_loopback",
    "die_with_parent",
    "join_pids_cgroup",
    "no_new_privs",
    "pids_cgroup_dirs",
    "set_limits",
    "unshare_user_net_pid",
]

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

#: Where a pids cgroup can be made: cgroup v1's pids hierarchy, then v2's root.
PIDS_CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))

_libc = ctypes.CDLL(None, use_errno=True)


def _call(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare_user_net_pid() -> None:
    """Enter new user, network and PID namespaces, mapped to our own uid and gid.

    Needs no privilege where unprivileged user namespaces are allowed. Mapping
    the same ids keeps files readable as before (Landlock narrows them); the
    process has no capability outside its namespaces. The PID namespace takes
    effect for the next child forked.
    """
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWPID
    _call(_libc.unshare(flags), "unshare (user, network and PID namespaces)")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the process that forked us dies."""
    _call(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")


def no_new_privs() -> None:
    """Never gain privileges again (setuid binaries, file capabilities)."""
    _call(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


def bring_up_loopback() -> None:
    """Bring up ``lo`` in our (new, empty) network namespace: loopback only."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def set_limits(
    *, memory_mb: int, cpu_seconds: int, max_file_mb: int, max_processes: int | None
) -> None:
    """Set hard and soft rlimits (address space, CPU, file size, processes, no core).

    ``max_processes`` None leaves ``RLIMIT_NPROC`` alone (root is exempt from
    it: a pids cgroup limits root's worker instead).
    """
    mib = 1024 * 1024
    limits = [
        (resource.RLIMIT_AS, memory_mb * mib),
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_FSIZE, max_file_mb * mib),
        (resource.RLIMIT_CORE, 0),
    ]
    if max_processes is not None:
        limits.append((resource.RLIMIT_NPROC, max_processes))
    for which, value in limits:
        resource.setrlimit(which, (value, value))


def pids_cgroup_dirs(pid: int) -> list[Path]:
    """The cgroup folders :func:`join_pids_cgroup` may have made for ``pid``."""
    name = f"syft_flwr-worker-{pid}"
    return [root / name for root in PIDS_CGROUP_ROOTS]


def join_pids_cgroup(max_processes: int) -> Path:
    """Move this process into a new pids cgroup capped at ``max_processes``.

    For root, whom the kernel exempts from ``RLIMIT_NPROC``. Tries cgroup v1's
    pids hierarchy, then cgroup v2.

    Raises
    ------
    OSError
        No pids cgroup could be made and joined here.
    """
    problems: list[str] = []
    for folder in pids_cgroup_dirs(os.getpid()):
        if not (folder.parent / "cgroup.procs").exists():
            problems.append(f"{folder.parent}: no cgroup here")
            continue
        try:
            folder.mkdir(exist_ok=True)
            (folder / "pids.max").write_text(str(max_processes))
            (folder / "cgroup.procs").write_text(str(os.getpid()))
            return folder
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror or exc}")
            try:
                folder.rmdir()
            except OSError:
                pass
    raise OSError(f"no pids cgroup could be made ({'; '.join(problems)})")
