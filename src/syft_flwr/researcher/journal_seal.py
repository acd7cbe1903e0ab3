"""Authenticate the researcher's resume journal with a key only the researcher holds.

The journal (:class:`~syft_flwr.researcher.journal.Journal`) is private
state that a resumed run acts on: its recorded replies are handed to the
ServerApp as if the data owners had just sent them. With the researcher's
``StateKey(keys, "journal")``:

* ``run.json`` carries ``"tag"``, an HMAC over the format version, the command key
  (app, data owners, run config), the run id, a random nonce written when the run
  starts, and the researcher's email;
* each ``<n>.exchange`` file ends with a 32-byte HMAC over that nonce, the run id,
  the file's name and the SHA-256 of its bytes (hashed as they are written).

A journal that was changed, copied from another researcher or another run, or
written by a version without tags is refused with a
:class:`~syft_flwr.errors.CheckpointError` (caused by a
:class:`~syft_flwr.errors.StateIntegrityError`): the resume stops, nothing is
replayed, and the researcher is told to run with ``--fresh``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from syft_flwr.crypto.state_mac import TAG_LEN, StateKey
from syft_flwr.errors import CheckpointError, StateIntegrityError

__all__ = ["TAG_LEN", "JournalSeal"]

logger = logging.getLogger("syft_flwr.checkpoint")


class JournalSeal:
    """Tags and checks one researcher's journal in ``folder``.

    Parameters
    ----------
    mac : StateKey or None
        The researcher's journal key; ``None`` (no identity key): nothing is
        tagged or checked, and a tagged journal is refused.
    folder : Path
        The journal folder (named in errors).
    """

    def __init__(self, mac: StateKey | None, folder: Path) -> None:
        self._mac = mac
        self.folder = folder

    def tag_meta(self, meta: dict[str, Any]) -> str | None:
        """The ``"tag"`` of a run record (``None`` without a key)."""
        return None if self._mac is None else self._mac.tag_hex(*_meta_fields(meta))

    def check_meta(self, meta: dict[str, Any], version: int) -> None:
        """Refuse a run record this researcher cannot vouch for.

        Raises
        ------
        CheckpointError
            Another format version, no tag, a tag that fails, or a tag while
            this researcher has no key.
        """
        got, tag = meta.get("version"), meta.get("tag")
        if got != version:
            self.refuse(
                f"it was written by another version of syft_flwr (format {got!r}) "
                "that did not authenticate it"
            )
        if self._mac is None:
            if tag is not None:
                self.refuse(
                    "it is authenticated with an identity key this researcher "
                    "does not have now (encryption off, or other keys)"
                )
            return
        if not isinstance(tag, str):
            self.refuse("it carries no integrity tag (written without a key)")
        try:
            self._mac.verify(tag, *_meta_fields(meta), what="its run record")
        except StateIntegrityError as exc:
            self.refuse(str(exc), cause=exc)

    def sealer(
        self, nonce: str, run_id: int | None, name: str
    ) -> Callable[[bytes], bytes] | None:
        """What turns an exchange file's SHA-256 into its trailing tag (or None)."""
        mac = self._mac
        if mac is None:
            return None
        bound = _exchange_fields(nonce, run_id, name)
        return lambda digest: mac.tag(*bound, digest)

    def opened(self, nonce: str, run_id: int | None, path: Path, data: bytes) -> bytes:
        """An exchange file's bytes without their tag, once the tag is checked."""
        if self._mac is None:
            return data
        body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
        digest = hashlib.sha256(body).digest()
        try:
            self._mac.verify(
                tag,
                *_exchange_fields(nonce, run_id, path.name),
                digest,
                what=f"its record {path.name}",
            )
        except StateIntegrityError as exc:
            self.refuse(str(exc), cause=exc)
        return body

    def refuse(self, why: str, cause: Exception | None = None) -> NoReturn:
        """Log and raise the researcher-facing refusal (nothing is replayed)."""
        msg = (
            f"the saved progress in {self.folder} cannot be trusted: {why}; "
            "nothing of it was replayed. Check who can write your state "
            "folder, then run with --fresh to start over"
        )
        logger.error("%s", msg)
        raise CheckpointError(msg) from (cause or StateIntegrityError(why))


def _meta_fields(meta: dict[str, Any]) -> tuple[str, ...]:
    return (
        "run",
        str(meta.get("version")),
        str(meta.get("key")),
        str(meta.get("run_id")),
        str(meta.get("nonce")),
        str(meta.get("owner")),
    )


def _exchange_fields(nonce: str, run_id: int | None, name: str) -> tuple[str, ...]:
    # What binds an exchange file to its place: this run (nonce) and its name.
    return ("exchange", nonce, str(run_id), name)
