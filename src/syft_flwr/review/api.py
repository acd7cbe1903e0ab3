"""The review workflow as Python functions (the ``syft_flwr`` review commands call these).

Submissions travel as ordinary syft_flwr requests of the app
:data:`REVIEW_APP`, endpoint :data:`REVIEW_ENDPOINT`, over the client's own
transport, sealed to the data owner by the body codec policy (X3DH, signed by
the researcher) when encryption is on. The data owner's decision is the
response to that request, sealed back the same way: only the addressed data
owner can write a decision the researcher accepts. Serving an approved project
is :mod:`syft_flwr.review.serve` (re-exported here).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from syft_flwr._email import fold_domain
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.crypto.keys import fingerprint
from syft_flwr.crypto.policy import KeyDirectory, default_policy, load_or_create_keys
from syft_flwr.crypto.store import FileKeyStore, key_store_for
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
from syft_flwr.review.inbox import MAX_PENDING_PER_RESEARCHER, InboxQuota
from syft_flwr.review.package import pack_app, printable
from syft_flwr.review.serve import prepare_work_dir, serve
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
from syft_flwr.wire import strict_json
from syft_flwr.wire.mailbox import Incoming, SyftFlwrRpc

__all__ = [
    "REVIEW_APP",
    "REVIEW_ENDPOINT",
    "Submission",
    "approve",
    "prepare_work_dir",
    "project_store",
    "receive_projects",
    "reject",
    "serve",
    "submission_status",
    "submit",
]

logger = logging.getLogger("syft_flwr.review")

#: App folder and endpoint of every data owner's review inbox.
REVIEW_APP, REVIEW_ENDPOINT = "syft_flwr", "projects"
#: How long a submission waits for a decision (seconds).
SUBMISSION_TTL = 30 * 24 * 3600.0
_MAX_DECISION_BYTES = 64 * 1024


def _rpc(
    client: SyftFlwrClient, transport: Transport, settings: Settings
) -> SyftFlwrRpc:
    return SyftFlwrRpc(
        transport,
        REVIEW_APP,
        settings=settings,
        policy=default_policy(client, transport, settings),
    )


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
    rpc = _rpc(client, transport, settings)
    owners = [fold_domain(o) for o in to]
    closed = [
        o for o in owners if not transport.is_prepared(o, REVIEW_APP, REVIEW_ENDPOINT)
    ]
    if closed:
        # On SyftBox a write before the owner's permissions exist is refused for good.
        raise ConfigError(
            f"{', '.join(closed)} has no review inbox yet: ask them to run "
            "`syft_flwr projects` once (it opens the inbox), then submit again"
        )
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
    rpc = _rpc(client, transport, settings)
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
    transport.prepare(
        REVIEW_APP, REVIEW_ENDPOINT, [fold_domain(r) for r in researchers]
    )
    rpc = _rpc(client, transport, settings)
    directory = KeyDirectory(
        transport,
        TrustStore(key_store_for(client), load_or_create_keys(client, transport)),
    )
    new = []
    recorded = {k for r in store.records() for k, _ in requests_of(r)}
    quota = InboxQuota(store, max_pending)
    for key in rpc.pending_request_keys(REVIEW_ENDPOINT):
        if key in recorded:
            continue  # pending review: it is answered when decided
        if not quota.admit(key):
            continue  # that researcher has enough waiting: read when some are decided
        try:
            inc = rpc.read(key)
        except IncompleteMessage:
            continue  # still syncing
        except (EnvelopeError, EncryptionError, SecurityError, TransportError) as exc:
            logger.warning("set aside submission %s: %s", key, exc)
            continue
        rec = _check_and_store(inc, key, rpc, directory, store)
        if rec is not None:
            new = [r for r in new if r.key != rec.key] + [rec]  # once per record
    quota.report()
    return new


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
    rpc = _rpc(client, transport or client.make_transport(), settings)
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
