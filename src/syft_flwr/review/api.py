"""The review workflow as Python functions (the ``syft_flwr`` review commands call these).

Submissions travel as ordinary syft_flwr requests of the app
:data:`REVIEW_APP`, endpoint :data:`REVIEW_ENDPOINT`, over the client's own
transport, sealed to the data owner by the body codec policy (X3DH, signed by
the researcher) when encryption is on. The data owner's decision is the
response to that request, sealed back the same way: only the addressed data
owner can write a decision the researcher accepts. Serving an approved project
is :mod:`syft_flwr.review.serve` (re-exported here).

This module is the face the CLI and users call; the work lives in
:mod:`~syft_flwr.review.channel` (the review inbox's address and RPC),
:mod:`~syft_flwr.review.submissions` (the researcher's side) and
:mod:`~syft_flwr.review.decisions` (the data owner's side).
"""

from __future__ import annotations

# Re-exports: ``as`` keeps the names this module had before the split
# (private ones included, for old imports and tests).
from syft_flwr.review.channel import REVIEW_APP as REVIEW_APP
from syft_flwr.review.channel import REVIEW_ENDPOINT as REVIEW_ENDPOINT
from syft_flwr.review.channel import SUBMISSION_TTL as SUBMISSION_TTL
from syft_flwr.review.channel import review_rpc
from syft_flwr.review.decisions import _check_and_store as _check_and_store
from syft_flwr.review.decisions import _decide as _decide
from syft_flwr.review.decisions import _reply as _reply
from syft_flwr.review.decisions import approve as approve
from syft_flwr.review.decisions import receive_projects as receive_projects
from syft_flwr.review.decisions import reject as reject
from syft_flwr.review.package import pack_app as pack_app
from syft_flwr.review.serve import prepare_work_dir as prepare_work_dir
from syft_flwr.review.serve import serve as serve
from syft_flwr.review.store import project_store as project_store
from syft_flwr.review.submissions import _MAX_DECISION_BYTES as _MAX_DECISION_BYTES
from syft_flwr.review.submissions import Submission as Submission
from syft_flwr.review.submissions import _decision as _decision
from syft_flwr.review.submissions import _submissions as _submissions
from syft_flwr.review.submissions import submission_status as submission_status
from syft_flwr.review.submissions import submit as submit

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

_rpc = review_rpc  # its name here before the split
