"""The researcher's side of review: submit a project, read the data owners' decisions.

A decision is believed only when it arrived sealed by the data owner it was
sent to, and names this researcher and the project submitted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from syft_flwr._email import fold_domain
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import load_or_create_keys
from syft_flwr.crypto.store import FileKeyStore
from syft_flwr.errors import (
    ConfigError,
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    SecurityError,
    TransportError,
)
from syft_flwr.review.channel import (
    REVIEW_APP,
    REVIEW_ENDPOINT,
    SUBMISSION_TTL,
    review_rpc,
)
from syft_flwr.review.package import pack_app, printable
from syft_flwr.review.store import APPROVED, REJECTED
from syft_flwr.transports.base import Transport
from syft_flwr.wire import strict_json

__all__ = ["Submission", "submission_status", "submit"]

logger = logging.getLogger("syft_flwr.review")

_MAX_DECISION_BYTES = 64 * 1024


@dataclass(frozen=True)
class Submission:
    """One submission of a project to one data owner, as the researcher sees it.

    Attributes
    ----------
    data_owner, project_hash, name, request_id : str
    status : str
        ``"pending"``, ``"approved"``, ``"rejected"``, ``"refused"`` (the data
        owner's checks failed: unsafe archive, wrong signer), or
        ``"undeliverable"`` (the sync refused the submission, or a decision file
        could not be read or was not sealed by the data owner: not believed).
    reason : str
        The data owner's reason, or why the submission or decision failed.
    """

    data_owner: str
    project_hash: str
    name: str
    request_id: str
    status: str = "pending"
    reason: str = ""


def _submissions(client: SyftFlwrClient) -> FileKeyStore:
    folder = client.state_dir("_review")
    if folder is None:
        raise ConfigError(f"{client!r} has no state folder to remember submissions in")
    return FileKeyStore(folder)


def submit(
    app_dir: str | Path,
    to: Iterable[str],
    *,
    client: SyftFlwrClient,
    transport: Transport | None = None,
    settings: Settings | None = None,
    name: str | None = None,
) -> list[Submission]:
    """Pack ``app_dir``, sign it, and send it to each data owner for review.

    Parameters
    ----------
    app_dir : str or Path
        The Flower app folder (sources and ``pyproject.toml``; data is left out).
    to : iterable of str
        Data owner emails.
    client : SyftFlwrClient
        The researcher.
    transport : Transport, optional
        Default ``client.make_transport()``.
    settings : Settings, optional
        Default ``Settings.from_env()``.
    name : str, optional
        Project name shown to data owners (default: the folder's name).

    Returns
    -------
    list of Submission
    """
    settings = settings or Settings.from_env()
    transport = transport or client.make_transport()
    keys = load_or_create_keys(client, transport)
    data, manifest = pack_app(app_dir, client.email, keys.identity, name=name)
    rpc = review_rpc(client, transport, settings)
    owners = [fold_domain(o) for o in to]
    _check_inboxes_open(transport, owners)
    store = _submissions(client)
    out = []
    with store.lock:
        known = store.read_json("submissions.json") or []
        for owner in owners:
            mid = rpc.send_request(
                owner,
                REVIEW_ENDPOINT,
                data,
                expires_at=time.time() + SUBMISSION_TTL,
            )
            sub = Submission(owner, manifest.project_hash, manifest.name, mid)
            known.append(sub.__dict__)
            out.append(sub)
        store.write_json("submissions.json", known)
    logger.info("submitted %s (%s)", manifest.name, manifest.project_hash[:12])
    return out


def _check_inboxes_open(transport: Transport, owners: list[str]) -> None:
    """Refuse before sending anything when a data owner's review inbox is not open."""
    closed = [
        o for o in owners if not transport.is_prepared(o, REVIEW_APP, REVIEW_ENDPOINT)
    ]
    if closed:
        # On SyftBox a write before the owner's permissions exist is refused for good.
        raise ConfigError(
            f"{', '.join(closed)} has no review inbox yet: ask them to run "
            "`syft_flwr projects` once (it opens the inbox), then submit again"
        )


def submission_status(
    client: SyftFlwrClient,
    *,
    transport: Transport | None = None,
    settings: Settings | None = None,
) -> list[Submission]:
    """Each submission with the data owner's (authenticated) decision, if any.

    Returns
    -------
    list of Submission
        ``status`` is ``"pending"`` until a decision sealed by that data owner
        arrived.
    """
    settings = settings or Settings.from_env()
    transport = transport or client.make_transport()
    rpc = review_rpc(client, transport, settings)
    out = []
    for doc in _submissions(client).read_json("submissions.json") or []:
        sub = Submission(**doc)
        try:
            inc = rpc.response_for(sub.data_owner, REVIEW_ENDPOINT, sub.request_id)
        except IncompleteMessage:
            inc = None
        except (EnvelopeError, EncryptionError, SecurityError, TransportError) as exc:
            out.append(
                Submission(**{**doc, "status": "undeliverable", "reason": str(exc)})
            )
            continue
        if inc is not None:
            sub = _decision(sub, inc.body, fold_domain(client.email))
        out.append(sub)
    return out


def _decision(sub: Submission, body: bytes, me: str) -> Submission:
    try:
        doc = strict_json.loads(body, max_bytes=_MAX_DECISION_BYTES)
        status, reason = (
            str(doc["status"]),
            printable(str(doc.get("reason", "")))[:2000],
        )
        named = str(doc["project_hash"])
        who = doc.get("researcher")
    except (EnvelopeError, KeyError, TypeError) as exc:
        return Submission(
            **{**sub.__dict__, "status": "undeliverable", "reason": str(exc)}
        )
    if not isinstance(who, str) or fold_domain(who) != me:
        # A decision is for the researcher it names and no one else; one that
        # names no one (an older data owner) could be another's decision.
        why = (
            "the decision names no researcher (the data owner runs an older "
            "syft_flwr; ask them to update and decide again)"
            if who is None
            else f"the decision is for {printable(str(who))[:200]}, not for {me}"
        )
        return Submission(**{**sub.__dict__, "status": "undeliverable", "reason": why})
    if status == "refused":  # the package failed the checks: maybe no hash to name
        return Submission(**{**sub.__dict__, "status": status, "reason": reason})
    if named != sub.project_hash or status not in (APPROVED, REJECTED):
        return Submission(
            **{**sub.__dict__, "status": "undeliverable", "reason": "bad decision"}
        )
    return Submission(**{**sub.__dict__, "status": status, "reason": reason})
