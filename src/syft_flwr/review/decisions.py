"""The data owner's side of review: receive submissions, check them, decide.

A submission that fails the checks is answered with an authenticated
``"refused"`` decision and never stored; a decision is stored durably before
the researcher is told.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from syft_flwr._email import fold_domain
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.crypto.keys import fingerprint
from syft_flwr.crypto.policy import KeyDirectory, load_or_create_keys
from syft_flwr.crypto.store import key_store_for
from syft_flwr.crypto.trust import TrustStore
from syft_flwr.errors import (
    ConfigError,
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    ReviewError,
    SecurityError,
    TransportError,
)
from syft_flwr.review.channel import REVIEW_APP, REVIEW_ENDPOINT, review_rpc
from syft_flwr.review.inbox import MAX_PENDING_PER_RESEARCHER, InboxQuota
from syft_flwr.review.package import printable
from syft_flwr.review.store import (
    APPROVED,
    REJECTED,
    ProjectRecord,
    ProjectStore,
    project_store,
    requests_of,
)
from syft_flwr.review.unpack import read_package
from syft_flwr.transports.base import RpcPath, Transport
from syft_flwr.wire.mailbox import Incoming, SyftFlwrRpc

__all__ = ["approve", "receive_projects", "reject"]

logger = logging.getLogger("syft_flwr.review")


def receive_projects(
    client: SyftFlwrClient,
    *,
    transport: Transport | None = None,
    settings: Settings | None = None,
    store: ProjectStore | None = None,
    researchers: Iterable[str] = (),
    max_pending: int = MAX_PENDING_PER_RESEARCHER,
) -> list[ProjectRecord]:
    """Open the review inbox; read new submissions, check them, record them pending.

    A submission that cannot be opened, is malformed or unsafe, or is not signed
    by the pinned identity key of the researcher who sent it, is answered with
    an authenticated ``"refused"`` decision and never stored. Each record is
    that researcher's own: the same files from another researcher are another
    record, decided on its own.

    Parameters
    ----------
    client : SyftFlwrClient
        The data owner.
    transport : Transport, optional
        Default ``client.make_transport()``.
    settings : Settings, optional
        Default ``Settings.from_env()``.
    store : ProjectStore, optional
        Default :func:`project_store`.
    researchers : iterable of str, optional
        Researchers to open the inbox to (Google Drive shares folders per
        peer; SyftBox lets every peer write only its own sub-folder).
    max_pending : int, optional
        At most this many projects of one researcher wait for review; more of
        its submissions stay unread in the inbox (logged) until some are decided.

    Returns
    -------
    list of ProjectRecord
        The projects recorded by this call.
    """
    settings = settings or Settings.from_env()
    transport = transport or client.make_transport()
    store = store or project_store(client)
    rpc, directory = _open_inbox(client, transport, settings, researchers)
    new: list[ProjectRecord] = []
    recorded = {k for r in store.records() for k, _ in requests_of(r)}
    quota = InboxQuota(store, max_pending)
    for key in rpc.pending_request_keys(REVIEW_ENDPOINT):
        if key in recorded:
            continue  # pending review: it is answered when decided
        if not quota.admit(key):
            continue  # that researcher has enough waiting: read when some are decided
        inc = _open_submission(rpc, key)
        if inc is None:
            continue
        rec = _check_and_store(inc, key, rpc, directory, store)
        if rec is not None:
            new = [r for r in new if r.key != rec.key] + [rec]  # once per record
    quota.report()
    return new


def _open_inbox(
    client: SyftFlwrClient,
    transport: Transport,
    settings: Settings,
    researchers: Iterable[str],
) -> tuple[SyftFlwrRpc, KeyDirectory]:
    """Open the review inbox to ``researchers``; its mailbox and the pinned keys."""
    transport.prepare(
        REVIEW_APP, REVIEW_ENDPOINT, [fold_domain(r) for r in researchers]
    )
    directory = KeyDirectory(
        transport,
        TrustStore(key_store_for(client), load_or_create_keys(client, transport)),
    )
    return review_rpc(client, transport, settings), directory


def _open_submission(rpc: SyftFlwrRpc, key: str) -> Incoming | None:
    """Open the submission at ``key``; ``None`` while it syncs or when set aside."""
    try:
        return rpc.read(key)
    except IncompleteMessage:
        return None  # still syncing
    except (EnvelopeError, EncryptionError, SecurityError, TransportError) as exc:
        logger.warning("set aside submission %s: %s", key, exc)
        return None


def _check_and_store(
    inc: Incoming,
    key: str,
    rpc: SyftFlwrRpc,
    directory: KeyDirectory,
    store: ProjectStore,
) -> ProjectRecord | None:
    """Check one opened submission; store it pending, or answer a refusal."""
    try:
        pkg = read_package(inc.body)
        if pkg.manifest.researcher != inc.sender:
            raise ReviewError(
                f"{inc.sender} sent a project signed as {pkg.manifest.researcher}"
            )
        bundle = directory.get(inc.sender)
        pkg.verify(bundle.identity_key)
    except (ReviewError, EncryptionError) as exc:
        logger.warning("refused a submission from %s: %s", inc.sender, exc)
        _reply(rpc, key, inc.head.expires, "", inc.sender, "refused", str(exc))
        return None
    rec = store.add(
        pkg,
        researcher=inc.sender,
        fingerprint=fingerprint(bundle),
        request_key=key,
        expires=inc.head.expires,
        data=inc.body,
    )
    if rec.status != "pending":  # a resubmission of a project it had decided
        _reply(
            rpc,
            key,
            rec.expires,
            rec.project_hash,
            rec.researcher,
            rec.status,
            rec.reason,
        )
    return rec


def _reply(
    rpc: SyftFlwrRpc,
    key: str,
    expires: str,
    project_hash: str,
    researcher: str,
    status: str,
    reason: str,
) -> None:
    path = RpcPath.parse(key)
    if (
        path is None
        or (path.owner, path.app, path.endpoint)
        != (rpc.identity, REVIEW_APP, REVIEW_ENDPOINT)
        or fold_domain(path.peer) != fold_domain(researcher)
        or not path.name.endswith(".request")
    ):
        # Only ever an answer to a submission of that researcher in this data
        # owner's own review inbox, whatever a record says.
        raise ReviewError(
            f"{printable(key)[:200]!r} is not a submission of {researcher} to you"
        )
    # The decision names the researcher it is for: the researcher believes
    # only a decision that names itself.
    body = json.dumps(
        {
            "status": status,
            "reason": reason,
            "project_hash": project_hash,
            "researcher": researcher,
        }
    )
    rpc.send_response(
        path,
        request_id=path.name.split(".")[0],
        expires=expires,
        status_code=200 if status != "refused" else 400,
        body=body.encode(),
    )


def _decide(
    client: SyftFlwrClient,
    ref: str,
    researcher: str | None,
    status: str,
    reason: str,
    transport: Transport | None,
    settings: Settings | None,
) -> ProjectRecord:
    settings = settings or Settings.from_env()
    store = project_store(client)
    who = fold_domain(researcher) if researcher else None
    rec = store.get(ref, who)
    asked = requests_of(rec)  # latest first
    rec = store.decide(rec.project_hash, rec.researcher, status, reason)  # durable
    rpc = review_rpc(client, transport or client.make_transport(), settings)
    for i, (key, expires) in reversed(list(enumerate(asked))):
        try:
            _reply(rpc, key, expires, rec.project_hash, rec.researcher, status, reason)
        except ReviewError as exc:
            logger.warning(
                "stored the decision on %s, but could not tell %s: %s; they are "
                "told when they submit it again",
                rec.short,
                rec.researcher,
                exc,
            )
        except (TransportError, EncryptionError):
            if i == 0:
                raise  # the latest request: decide again to retry telling them
            logger.warning(
                "could not answer an earlier submission of %s by %s",
                rec.short,
                rec.researcher,
                exc_info=True,
            )
    return rec


def approve(
    client: SyftFlwrClient,
    ref: str,
    *,
    researcher: str | None = None,
    transport: Transport | None = None,
    settings: Settings | None = None,
) -> ProjectRecord:
    """Approve project ``ref`` (a hash prefix) for its researcher, and tell them.

    The approval is stored durably before the researcher is told. It approves
    that researcher's submission only: another researcher who submits the same
    files has a record of its own.

    Parameters
    ----------
    researcher : str, optional
        Whose submission, when several researchers submitted the project.

    Returns
    -------
    ProjectRecord
    """
    return _decide(client, ref, researcher, APPROVED, "", transport, settings)


def reject(
    client: SyftFlwrClient,
    ref: str,
    reason: str,
    *,
    researcher: str | None = None,
    transport: Transport | None = None,
    settings: Settings | None = None,
) -> ProjectRecord:
    """Reject project ``ref`` with ``reason``, and tell its researcher.

    Parameters
    ----------
    researcher : str, optional
        Whose submission, when several researchers submitted the project.

    Returns
    -------
    ProjectRecord
    """
    if not reason.strip():
        raise ConfigError("give a reason for the rejection")
    return _decide(
        client, ref, researcher, REJECTED, reason.strip(), transport, settings
    )
