"""Enforce the containment policy inside the worker, and probe it for real.

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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from syft_flwr.data_owner.contain.policy import ContainmentPolicy

__all__ = ["LAYERS", "Enforced", "Layer", "enter", "probe", "release"]

#: The layers, in the order they are reported.
LAYERS: tuple[str, ...] = ("network", "processes", "files", "memory", "limits")


@dataclass(frozen=True)
class Layer:
    """One layer: whether it holds, and how (or why not), in a data owner's words."""

    name: str
    enforced: bool
    how: str


@dataclass(frozen=True)
class Enforced:
    """What holds in a worker (or, from :func:`probe`, on this machine)."""

    level: str
    layers: tuple[Layer, ...]

    @property
    def missing(self) -> tuple[Layer, ...]:
        """The layers that do not hold."""
        return tuple(layer for layer in self.layers if not layer.enforced)

    def summary(self) -> str:
        """One line for the audit trail and ``status``: ``"full"`` or what is off."""
        if self.level != "full":
            return self.level
        gone = [layer.name for layer in self.missing]
        return "full" if not gone else "full except " + ", ".join(gone)


def enter(
    policy: ContainmentPolicy, *, read: Sequence[Path], write: Sequence[Path]
) -> Enforced:
    """Contain the calling process; return what holds.

    Must be called in a fresh worker process (single-threaded, before the app
    is imported). With level ``"full"`` this forks once: the original process
    stays outside as the supervisor, waits and exits with the child's status
    (it never returns); the call returns in the child, the first process of the
    new PID namespace.

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
    raise NotImplementedError  # filled in by the sandbox slice


def release(worker_pid: int) -> None:
    """Clean up what :func:`enter` left outside a worker that has ended (its cgroup)."""


def probe(policy: ContainmentPolicy) -> Enforced:
    """Try each layer for real in a contained child and report what holds.

    The child attempts a socket to a loopback listener of this process, a read
    of a file outside its allowed paths, a write outside its scratch folder, an
    allocation past the memory limit and processes past the process limit.
    """
    raise NotImplementedError  # filled in by the sandbox slice
