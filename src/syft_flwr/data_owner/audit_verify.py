"""Check the audit trail: every kept line, its chain, its MAC, and the kept head.

:func:`verify_trail` walks the lines oldest first (see
:mod:`syft_flwr.data_owner.audit_chain` for what each carries) and says, in words a
data owner understands, what was changed, removed or added, and what cannot be
verified. ``syft_flwr audit --verify`` prints its summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.audit_chain import (
    CURRENT,
    ZERO_HASH,
    dir_lock,
    line_hash,
    mac_ok,
    parse_line,
    trail_lines,
)
from syft_flwr.data_owner.audit_head import HEAD_FILE, read_head
from syft_flwr.errors import StateIntegrityError

__all__ = ["AuditReport", "verify_trail"]


@dataclass
class AuditReport:
    """What :func:`verify_trail` found.

    Attributes
    ----------
    status : str
        ``"intact"`` (every line chained, authenticated and present),
        ``"tampered"`` (see ``problems``), ``"unverifiable"`` (lines with no
        chain, or no key to check them with) or ``"empty"``.
    lines, verified, legacy : int
        Lines read, lines whose chain and MAC checked, lines with no chain.
    unauthenticated : int
        Chained lines with no MAC, written before the data owner had keys.
    problems, notes : list of str
        What is wrong, in words; what is worth knowing but not wrong.
    """

    status: str = "empty"
    lines: int = 0
    verified: int = 0
    legacy: int = 0
    unauthenticated: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The report in a few lines for the data owner."""
        head = {
            "intact": f"audit trail intact: {self.verified} line(s) chained and "
            "authenticated, none changed, removed or added",
            "empty": "the audit trail is empty",
            "unverifiable": "the audit trail cannot be fully verified",
            "tampered": "WARNING: the audit trail was changed after it was written",
        }[self.status]
        return "\n".join([head, *(f"  - {p}" for p in self.problems + self.notes)])


@dataclass
class _Walk:
    """The state of a walk along the chain."""

    key: StateKey | None
    report: AuditReport = field(default_factory=AuditReport)
    seq: int | None = None  # last chained line's seq
    hash: str = ZERO_HASH
    first: int | None = None
    keyed: bool = False  # a line with a valid MAC was seen: all after need one

    def line(self, where: str, raw: bytes) -> None:
        r = self.report
        r.lines += 1
        entry = parse_line(raw)
        if entry is None:
            r.problems.append(f"{where} is not a line the trail wrote (unreadable)")
            return
        if "seq" not in entry:
            if self.seq is None:
                r.legacy += 1
            else:
                r.problems.append(f"{where} has no chain fields: it was inserted")
            return
        ok = self._follows(where, entry) and self._authentic(where, entry, raw)
        r.verified += ok
        self.hash = line_hash(raw)

    def _authentic(self, where: str, entry: dict[str, Any], raw: bytes) -> bool:
        if self.key is None:
            return True  # the chain only (reported)
        if "mac" not in entry and not self.keyed:
            # Before the data owner had keys: ordered, but not authenticated.
            self.report.unauthenticated += 1
            return False
        if "mac" in entry and mac_ok(raw, self.key):
            self.keyed = True
            return True
        self.report.problems.append(
            f"{where} (line #{entry.get('seq')}) was changed, or was not "
            "written by this data owner"
        )
        return False

    def _follows(self, where: str, entry: dict[str, Any]) -> bool:
        seq, prev = entry.get("seq"), entry.get("prev")
        if not isinstance(seq, int) or not isinstance(prev, str):
            self.report.problems.append(f"{where} has broken chain fields")
            return False
        last, self.seq = self.seq, seq
        if last is None:
            self.first = seq
            return True
        if seq != last + 1:
            gap = "removed" if seq > last + 1 else "inserted, reordered or repeated"
            self.report.problems.append(
                f"{where}: line #{seq} follows line #{last} (lines {gap})"
            )
            return False
        if prev != self.hash:
            self.report.problems.append(
                f"{where}: line #{seq} does not follow the line before it "
                "(that line was changed or replaced)"
            )
            return False
        return True


def verify_trail(directory: Path, key: StateKey | None) -> AuditReport:
    """Check every kept line of the trail in ``directory`` and its head.

    Parameters
    ----------
    directory : Path
        The data owner's audit folder.
    key : StateKey or None
        ``StateKey(keys, "audit")``; None checks the chain only (reported).

    Returns
    -------
    AuditReport
    """
    walk = _Walk(key)
    r = walk.report
    for path, n, raw, last in trail_lines(directory):
        if last and path.name == CURRENT and parse_line(raw) is None:
            r.notes.append(f"{path.name}: a torn last line (a crash mid-write) skipped")
            continue
        walk.line(f"{path.name} line {n}", raw)
    _check_head(directory, walk)
    if r.legacy:
        r.notes.append(
            f"{r.legacy} line(s) were written before the trail was chained "
            "(an older syft_flwr): they cannot be verified"
        )
    if r.unauthenticated:
        r.notes.append(
            f"{r.unauthenticated} line(s) were written before this data owner had "
            "keys (no MAC): their order is checked, not who wrote them"
        )
    if key is None and r.lines:
        r.notes.append(
            "no identity key to check the lines' MACs with: the chain shows "
            "accidents, not a forger who rewrote it"
        )
    r.status = _status(r, key)
    return r


def _check_head(directory: Path, walk: _Walk) -> None:
    r = walk.report
    try:
        # Under the writers' lock: the head is rewritten in place, and a read
        # in the middle of a write would look like a damaged head.
        with dir_lock(directory, create=False):
            head = read_head(directory, walk.key, unkeyed_ok=True)
    except StateIntegrityError as exc:
        r.problems.append(str(exc))
        return
    if head is not None and not head.keyed and walk.keyed:
        r.problems.append(
            f"the trail's head ({HEAD_FILE}) carries no MAC although its lines do: "
            "it was not written by this data owner"
        )
        return
    if head is None:
        if walk.seq is not None:
            r.problems.append(
                f"the trail's head ({HEAD_FILE}) is missing: removal of the last "
                "lines cannot be ruled out"
            )
        return
    last = walk.seq or 0
    if head.seq > last:
        r.problems.append(
            f"the last {head.seq - last} line(s) are missing (the trail ends at "
            f"#{last}, its head says #{head.seq}): the end was cut off, or lost in "
            "a crash of the machine before it reached the disk"
        )
    elif head.seq == last and last and head.hash != walk.hash:
        r.problems.append(f"the last line (#{last}) is not the one the head recorded")
    elif head.seq < last:
        r.notes.append(
            f"{last - head.seq} line(s) after the recorded head (written just "
            "before the data owner stopped)"
        )
    if r.legacy > head.legacy:
        r.problems.append(
            f"{r.legacy - head.legacy} line(s) with no chain fields were added in "
            "front of the chain (the trail had "
            f"{head.legacy} such line(s) from an older syft_flwr when it was chained)"
        )
    if walk.first is not None and walk.first != head.first:
        r.problems.append(
            f"the oldest kept line is #{walk.first} but the head says #{head.first}: "
            "older lines or files were removed"
        )


def _status(r: AuditReport, key: StateKey | None) -> str:
    if r.problems:
        return "tampered"
    if not r.lines:
        return "empty"
    if r.legacy or r.unauthenticated or key is None:
        return "unverifiable"
    return "intact"
