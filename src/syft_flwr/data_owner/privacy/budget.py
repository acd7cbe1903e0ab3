"""The durable privacy-budget ledger of a data owner's datasets (private state).

One file per dataset, ``<folder>/<dataset>.json``, holds every charge ever made
against the dataset (counts per project and kind of event), the budget it was
charged under, and an HMAC tag under ``StateKey(keys, "privacy-budget")``.
A charge is decided and written under an exclusive ``flock`` on
``<dataset>.lock``, so two serving processes (two projects) cannot both spend
the last of a budget; each write is a temp file, fsync'd, renamed, and the
folder fsync'd, before the reply it pays for may leave.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.privacy.accountant import epsilon_spent, event_key
from syft_flwr.data_owner.privacy.policy import PrivacyPolicy
from syft_flwr.errors import PrivacyBudgetExceeded, StateIntegrityError

__all__ = ["BudgetLedger", "BudgetState", "Charge"]

logger = logging.getLogger("syft_flwr.data_owner.privacy")

_VERSION = 1
_MAX_BYTES = 1 << 20


@dataclass
class BudgetState:
    """Every charge against one dataset: project -> event key -> count."""

    dataset: str
    projects: dict[str, dict[str, int]] = field(default_factory=dict)
    epsilon: float | None = None  # the budget of the last charge's policy
    delta: float | None = None

    def all_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for counts in self.projects.values():
            for key, n in counts.items():
                total[key] = total.get(key, 0) + n
        return total

    def spent(self, delta: float, project: str | None = None) -> float:
        """Epsilon spent at ``delta``, in total or by ``project``."""
        counts = self.all_counts() if project is None else self.projects.get(project)
        return epsilon_spent(counts or {}, delta)


@dataclass(frozen=True)
class Charge:
    """What one charge cost: epsilon spent after it, in total and by its project."""

    dataset: str
    project: str
    total: float
    project_total: float
    left: float


class BudgetLedger:
    """The budget files of one data owner.

    Parameters
    ----------
    folder : Path
        Private, never-synced folder (outside any one app's state, so new
        projects and fresh runs share it).
    key : StateKey or None
        ``StateKey(keys, "privacy-budget")``; ``None`` without an identity key
        (the files are then not authenticated).
    """

    def __init__(self, folder: str | Path, key: StateKey | None) -> None:
        self.folder = Path(folder)
        self.key = key

    def path(self, dataset: str) -> Path:
        return self.folder / f"{dataset}.json"

    def charge(
        self, policy: PrivacyPolicy, project: str, *, sampling_rate: float
    ) -> Charge:
        """Charge one reply against ``policy``'s dataset, durably, or refuse it.

        Raises
        ------
        PrivacyBudgetExceeded
            The charge would take the dataset past ``epsilon``, or the project
            past ``per_project_epsilon`` (nothing is written).
        StateIntegrityError
            The budget file was changed outside syft_flwr (nothing is charged).
        """
        key = event_key(policy.noise_multiplier, sampling_rate)
        with self._locked(policy.dataset):
            state = self.read(policy.dataset)
            before = state.spent(policy.delta)
            mine = state.projects.setdefault(project, {})
            mine[key] = mine.get(key, 0) + 1
            total = state.spent(policy.delta)
            proj = state.spent(policy.delta, project)
            _check(policy, project, before, total, proj)
            state.epsilon, state.delta = policy.epsilon, policy.delta
            self._write(state)
        return Charge(policy.dataset, project, total, proj, policy.epsilon - total)

    def read(self, dataset: str) -> BudgetState:
        """The charges against ``dataset`` (none yet: an empty state)."""
        p = self.path(dataset)
        try:
            with open(p, "rb") as f:
                raw = f.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            return BudgetState(dataset)
        if len(raw) > _MAX_BYTES:
            raise StateIntegrityError(f"the privacy budget file {p} is too large")
        return self._parse(p, dataset, raw)

    def datasets(self) -> list[str]:
        """The datasets with a budget file."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json"))

    def _parse(self, p: Path, dataset: str, raw: bytes) -> BudgetState:
        bad = StateIntegrityError(
            f"the privacy budget file {p} is damaged or was changed outside "
            "syft_flwr; nothing is answered under it until the data owner restores "
            "it from a backup"
        )
        try:
            doc = json.loads(raw)
            body, tag = doc["body"], doc.get("tag")
            state = _state_of(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise bad from exc
        if self.key is not None:
            self.key.verify(
                tag if isinstance(tag, str) else "",
                "privacy-budget",
                dataset,
                _canonical(body),
                what=f"the privacy budget file {p}",
            )
        if state.dataset != dataset:
            raise bad
        return state

    def _write(self, state: BudgetState) -> None:
        body = {
            "version": _VERSION,
            "dataset": state.dataset,
            "epsilon": state.epsilon,
            "delta": state.delta,
            "projects": state.projects,
        }
        tag = (
            None
            if self.key is None
            else self.key.tag_hex("privacy-budget", state.dataset, _canonical(body))
        )
        data = json.dumps({"body": body, "tag": tag}, indent=1).encode()
        p = self.path(state.dataset)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        dfd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)

    @contextmanager
    def _locked(self, dataset: str) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.folder / f"{dataset}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _check(
    policy: PrivacyPolicy,
    project: str,
    before: float,
    total: float,
    proj: float,
) -> None:
    """Raise :class:`PrivacyBudgetExceeded` if the charge goes past a limit."""
    if total > policy.epsilon:
        raise PrivacyBudgetExceeded(
            f"dataset {policy.dataset!r} is out of privacy budget: epsilon "
            f"{before:.4g} of {policy.epsilon:g} is spent ({max(0.0, policy.epsilon - before):.4g} "
            f"left) and answering would bring it to {total:.4g} (delta {policy.delta:g})"
        )
    cap = policy.per_project_epsilon
    if cap is not None and proj > cap:
        raise PrivacyBudgetExceeded(
            f"project {project} is out of privacy budget on dataset "
            f"{policy.dataset!r}: answering would bring the project to epsilon "
            f"{proj:.4g}, over its cap of {cap:g} per project (the dataset has spent "
            f"{before:.4g} of {policy.epsilon:g}, "
            f"{max(0.0, policy.epsilon - before):.4g} left)"
        )


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _state_of(body: Any) -> BudgetState:
    if not isinstance(body, dict) or body.get("version") != _VERSION:
        raise ValueError("not a version-1 budget body")
    dataset, projects = body["dataset"], body["projects"]
    if not isinstance(dataset, str) or not isinstance(projects, dict):
        raise TypeError("bad budget body")
    clean: dict[str, dict[str, int]] = {}
    for name, counts in projects.items():
        if not isinstance(counts, dict):
            raise TypeError("bad counts")
        clean[str(name)] = {}
        for key, n in counts.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise TypeError("bad count")
            event_key(*map(float, str(key).split("|")))  # parses, or ValueError
            clean[str(name)][str(key)] = n
    eps, delta = body.get("epsilon"), body.get("delta")
    return BudgetState(
        dataset,
        clean,
        float(eps) if isinstance(eps, (int, float)) else None,
        float(delta) if isinstance(delta, (int, float)) else None,
    )
