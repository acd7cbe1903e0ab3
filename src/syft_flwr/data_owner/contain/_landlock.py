"""Landlock, through its three system calls (Linux >= 5.13; no library needed).

A Landlock ruleset names the kinds of access it *handles*; once the process
restricts itself, every handled access is denied except beneath the paths a
rule allows. Restrictions are inherited by every child and can never be lifted.
This module only speaks the kernel's ABI; what to allow is the sandbox's call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "READ",
    "MIN_ABI",
    "LandlockError",
    "abi_version",
    "restrict",
]

# System call numbers: one table for every architecture since Linux 5.13.
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# Filesystem access rights, by the ABI version that introduced them.
_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_ABI1_ALL = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
#: Rights that apply to a regular file (the others only make sense on folders).
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV

# Network (ABI 4): TCP bind and connect. Scopes (ABI 6): abstract UNIX sockets
# and signals to processes outside the sandbox.
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX = 1 << 0
_SCOPE_SIGNAL = 1 << 1

#: Read-only access: open and list, load code; never write, create or remove.
READ = _EXECUTE | _READ_FILE | _READ_DIR

#: ABI 3 (Linux 6.2) is the first to handle truncation: before it a contained
#: process could truncate any file its user owns, so older ABIs are not enough.
MIN_ABI = 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class LandlockError(OSError):
    """Landlock is missing or refused a step (the message says which)."""


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable."""
    if platform.system() != "Linux":
        return 0
    v = _libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    return int(v) if v > 0 else 0


def _handled_fs(abi: int) -> int:
    rights = _ABI1_ALL
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _ruleset_attr(abi: int) -> bytes:
    """``struct landlock_ruleset_attr`` sized for ``abi`` (newer fields zero)."""
    fs = _handled_fs(abi)
    if abi < 4:
        return struct.pack("=Q", fs)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP  # no rule allows a port: no TCP at all
    if abi < 6:
        return struct.pack("=QQ", fs, net)
    return struct.pack("=QQQ", fs, net, _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"Landlock {what}: {os.strerror(err)}")
    return ret


def _add_path(ruleset: int, path: Path, rights: int, handled: int) -> None:
    """Allow ``rights`` beneath ``path`` (a missing path is skipped)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not path.is_dir():
            rights &= _FILE_RIGHTS
        rights &= handled
        # struct landlock_path_beneath_attr is packed: u64 rights, s32 fd.
        attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd))
        ret = _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, attr, 0)
        _check(int(ret), f"rule for {path}")
    finally:
        os.close(fd)


def restrict(
    *, read: Iterable[Path], write: Iterable[Path], abi: int | None = None
) -> int:
    """Restrict this process (and its future children) to ``read`` and ``write``.

    ``read`` paths may be read and executed; ``write`` paths may also be
    written, created and removed beneath. Everything else on the filesystem is
    denied, as is every TCP bind and connect (ABI >= 4), and signals and
    abstract UNIX sockets outside the sandbox (ABI >= 6). ``PR_SET_NO_NEW_PRIVS``
    must already be set.

    Returns
    -------
    int
        The ABI version the restriction used.

    Raises
    ------
    LandlockError
        Landlock is unavailable, older than :data:`MIN_ABI`, or refused a step.
    """
    abi = abi_version() if abi is None else abi
    if abi < MIN_ABI:
        raise LandlockError(
            errno.ENOSYS,
            "Landlock is unavailable"
            if abi == 0
            else f"Landlock ABI {abi} is too old (need {MIN_ABI}: Linux 6.2 or later)",
        )
    attr_bytes = _ruleset_attr(abi)
    attr = ctypes.create_string_buffer(attr_bytes)
    ruleset = _check(
        int(_libc.syscall(_SYS_CREATE_RULESET, attr, len(attr_bytes), 0)),
        "create ruleset",
    )
    try:
        handled = _handled_fs(abi)
        for path in read:
            _add_path(ruleset, path, READ, handled)
        for path in write:
            _add_path(ruleset, path, handled, handled)
        _check(int(_libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0)), "restrict self")
    finally:
        os.close(ruleset)
    return abi
