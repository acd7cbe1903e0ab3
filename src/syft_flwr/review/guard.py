"""Which code may run: every request names its project hash; the data owner checks it.

Where the hash travels: the researcher's outbox
(:func:`~syft_flwr.researcher.outbox.split_request`, for
:class:`~syft_flwr.researcher.grid.SyftGrid`) adds a ``ConfigRecord`` named
:data:`PROJECT_RECORD` to the content of every Flower message it sends, while
serializing it; the data owner's handler takes it out
again before the ``ClientApp`` sees the message. The record is inside the
serialized Flower message, i.e. inside the envelope *body*: with encryption on,
the body is sealed with AES-GCM and the whole ciphertext is signed by the
researcher's identity key (X3DH transcript signature), so the hash is as
authenticated as the model weights next to it. The envelope head's ``headers``
are *not* covered by the AEAD, which is why the hash is not put there. With
encryption off, nothing is authenticated beyond folder ownership (see
``docs/security.md``), and the hash is only a consistency check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from flwr.app import ConfigRecord, Message

from syft_flwr._email import fold_domain
from syft_flwr.errors import ConfigError, StateIntegrityError
from syft_flwr.events import current_request
from syft_flwr.review.package import FileEntry
from syft_flwr.review.store import ProjectStore
from syft_flwr.review.workdir import work_dir_problem

__all__ = ["PROJECT_RECORD", "ProjectGuard", "attach_project_hash", "take_project_hash"]

logger = logging.getLogger("syft_flwr.review")

#: Name of the content record that carries the project hash.
PROJECT_RECORD = "syft_flwr.project"


def attach_project_hash(msg: Message, project_hash: str) -> None:
    """Name ``project_hash`` in ``msg``'s content (researcher side)."""
    if msg.has_content():
        msg.content[PROJECT_RECORD] = ConfigRecord({"hash": project_hash})


def take_project_hash(msg: Message) -> str | None:
    """Remove and return the project hash ``msg`` names (``None`` if none).

    Always removed, so a ClientApp never sees the record, guarded or not.
    """
    if not msg.has_content() or PROJECT_RECORD not in msg.content:
        return None
    rec = msg.content[PROJECT_RECORD]
    del msg.content[PROJECT_RECORD]
    value = rec.get("hash") if isinstance(rec, ConfigRecord) else None
    return value if isinstance(value, str) else None


class ProjectGuard:
    """Refuses requests for code that is not the approved, unchanged project.

    Parameters
    ----------
    store : ProjectStore
        Where approvals are kept (read at every request: a revoked approval
        counts at once).
    project_hash : str
        The approved project this data owner serves.
    work_dir : Path
        The folder the ClientApp was loaded from; re-hashed at every request,
        every file in it (not only those a packer would pack): an extra file,
        e.g. a planted ``__pycache__``, refuses the request.
    files : sequence of FileEntry, optional
        The approved manifest's files, so a refusal names the file that differs.

    Notes
    -----
    Approval is per *(researcher, hash)*: the request's authenticated sender is
    taken from :func:`syft_flwr.data_owner.worker.current_request` (set on the
    data owner's worker thread); a request served without it is refused.
    """

    def __init__(
        self,
        store: ProjectStore,
        project_hash: str,
        work_dir: Path,
        *,
        files: Sequence[FileEntry] | None = None,
    ) -> None:
        self.store = store
        self.project_hash = project_hash
        self.work_dir = Path(work_dir)
        self.files = None if files is None else tuple(files)
        self.refused = 0

    def __call__(self, named: str | None) -> str | None:
        """Return why the request must be refused, or ``None`` to let it run.

        Parameters
        ----------
        named : str or None
            The project hash the request names.
        """
        reason = self._reason(named)
        if reason is not None:
            self.refused += 1
            logger.warning("refused a request: %s", reason)
        return reason

    def _reason(self, named: str | None) -> str | None:
        if named is None:
            return "the request names no project hash; submit the project for review"
        if named != self.project_hash:
            return (
                f"the request is for project {named[:12]}, but this data owner serves "
                f"approved project {self.project_hash[:12]} here"
            )
        # Approval is per (researcher, hash): approving these files for one
        # researcher lets no one else run them.
        req = current_request()
        if req is None:
            return (
                "the request's sender is not known, so its approval cannot be checked"
            )
        sender = fold_domain(req.sender)
        try:
            approved = self.store.is_approved(named, sender)
        except (ConfigError, StateIntegrityError) as exc:
            return f"the review store cannot be read: {exc}"
        if not approved:
            return (
                f"project {named[:12]} is not approved for {sender} by this data owner"
            )
        problem = work_dir_problem(self.work_dir, self.project_hash, self.files)
        if problem is not None:
            return (
                f"the files of project {named[:12]} changed since approval "
                f"({problem}); this request was not run"
            )
        return None
