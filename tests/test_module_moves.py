"""Issue 25: the exchange moved into wire/, researcher/, data_owner/; old imports keep working."""

from __future__ import annotations

import importlib

import pytest

MOVED = {
    "syft_flwr.envelope": "syft_flwr.wire.envelope",
    "syft_flwr.frames": "syft_flwr.wire.frames",
    "syft_flwr.blobs": "syft_flwr.wire.blobs",
    "syft_flwr.rpc": "syft_flwr.wire.mailbox",
    "syft_flwr.strict_json": "syft_flwr.wire.strict_json",
    "syft_flwr.reasons": "syft_flwr.wire.reasons",
    "syft_flwr.fl_orchestrator.syft_grid": "syft_flwr.researcher.grid",
    "syft_flwr.fl_orchestrator.checkpoint": "syft_flwr.researcher.journal",
    "syft_flwr.fl_orchestrator.journal_seal": "syft_flwr.researcher.journal_seal",
    "syft_flwr.fl_orchestrator.reply_check": "syft_flwr.researcher.reply_check",
    "syft_flwr.fl_orchestrator.flower_server": "syft_flwr.researcher.runner",
    "syft_flwr.fl_orchestrator.flower_client": "syft_flwr.data_owner.runner",
    "syft_flwr.events.watcher": "syft_flwr.data_owner.loop",
    "syft_flwr.events.ledger": "syft_flwr.data_owner.ledger",
    "syft_flwr.events.kept_reply": "syft_flwr.data_owner.kept_reply",
    "syft_flwr.events.audit": "syft_flwr.data_owner.audit",
    "syft_flwr.events.audit_chain": "syft_flwr.data_owner.audit_chain",
    "syft_flwr.events.audit_verify": "syft_flwr.data_owner.audit_verify",
    "syft_flwr.events.refusals": "syft_flwr.data_owner.refusals",
    "syft_flwr.events.protocol": "syft_flwr.data_owner.protocol",
    "syft_flwr.researcher.reply_cache": "syft_flwr.data_owner.reply_cache",
    "syft_flwr.ids": "syft_flwr._ids",
    "syft_flwr.logs": "syft_flwr._logs",
    "syft_flwr.run_config": "syft_flwr._run_config",
}


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_module_name_is_the_new_module(old: str, new: str) -> None:
    # The same object: private names, isinstance checks and monkeypatching agree.
    assert importlib.import_module(old) is importlib.import_module(new)


def test_documented_names_resolve_through_old_paths() -> None:
    from syft_flwr.events import SyftFlwrEvents, create_events_watcher
    from syft_flwr.events.watcher import TransportEvents
    from syft_flwr.fl_orchestrator.syft_grid import SyftGrid
    from syft_flwr.researcher.grid import SyftGrid as Moved

    assert SyftGrid is Moved
    assert callable(create_events_watcher)
    assert isinstance(SyftFlwrEvents, type) and isinstance(TransportEvents, type)


def test_names_moved_between_modules_keep_their_old_paths() -> None:
    # Moved to break import cycles (issue 25): the same objects at both paths.
    import syft_flwr
    from syft_flwr import _version, project

    # `syft_flwr.run` the attribute is the function (as upstream); the module:
    run = importlib.import_module("syft_flwr.run")
    assert run.node_config_for is project.node_config_for
    assert run.DEFAULT_NODE_CONFIG is project.DEFAULT_NODE_CONFIG
    assert syft_flwr.__version__ == _version.__version__


def test_data_owner_names_resolve_after_the_split() -> None:
    # docs/api.md names fl_orchestrator.flower_client.run_data_owner; the handler,
    # the heartbeat and the loop's request context kept their old import paths too.
    from syft_flwr.data_owner.handler import ClientAppHandler
    from syft_flwr.data_owner.heartbeat import Heartbeat
    from syft_flwr.data_owner.loop import RequestInfo, _current, current_request
    from syft_flwr.data_owner.runner import run_data_owner
    from syft_flwr.data_owner.worker import RequestInfo as Info
    from syft_flwr.data_owner.worker import _current as var
    from syft_flwr.events import current_request as documented
    from syft_flwr.fl_orchestrator import flower_client

    assert flower_client.run_data_owner is run_data_owner
    assert flower_client.ClientAppHandler is ClientAppHandler
    assert flower_client.Heartbeat is Heartbeat
    assert flower_client.syftbox_flwr_client.__module__ == "syft_flwr.data_owner.runner"
    assert RequestInfo is Info and _current is var
    assert documented is current_request


def test_kept_replies_have_one_home_at_the_data_owner() -> None:
    # ReplyCache is the data owner's; the researcher's paths are re-exports, and it
    # writes and tags through neutral helpers, not the researcher's journal files.
    import ast
    from pathlib import Path

    from syft_flwr import _fs
    from syft_flwr.crypto import state_mac
    from syft_flwr.data_owner import reply_cache
    from syft_flwr.researcher.journal import DEFAULT_CACHED_REPLIES, ReplyCache

    assert ReplyCache is reply_cache.ReplyCache
    assert ReplyCache.__module__ == "syft_flwr.data_owner.reply_cache"
    assert DEFAULT_CACHED_REPLIES is reply_cache.DEFAULT_CACHED_REPLIES
    assert reply_cache.write_durable is _fs.write_durable
    assert reply_cache.TAG_LEN == state_mac.TAG_LEN == 32
    tree = ast.parse(Path(reply_cache.__file__).read_text(encoding="utf-8"))
    imported = {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert not {m for m in imported if m.startswith("syft_flwr.researcher")}


def test_review_names_keep_their_paths_after_the_splits() -> None:
    # review/api.py and review/package.py were split (issue 25): every name they
    # had, private ones included, is the same object at the old path.
    from syft_flwr.review import (
        api,
        channel,
        decisions,
        manifest,
        package,
        records,
        show,
        store,
        submissions,
    )

    for name in ("REVIEW_APP", "REVIEW_ENDPOINT", "SUBMISSION_TTL"):
        assert getattr(api, name) == getattr(channel, name)
    assert api._rpc is channel.review_rpc
    for name in ("receive_projects", "approve", "reject", "_reply", "_decide"):
        assert getattr(api, name) is getattr(decisions, name)
    for name in ("submit", "submission_status", "Submission", "_decision"):
        assert getattr(api, name) is getattr(submissions, name)
    assert api.pack_app is package.pack_app
    for name in (
        "FileEntry",
        "Manifest",
        "Package",
        "check_member_path",
        "project_hash_of",
        "verify_manifest",
        "_entries",
        "_signed_bytes",
    ):
        assert getattr(package, name) is getattr(manifest, name)
    assert store.show_text is show.show_text
    assert store.ProjectStore.get.__module__ == "syft_flwr.review.store"
    assert callable(records.find_record)
    assert set(api.__all__) <= set(dir(api))
    assert set(package.__all__) <= set(dir(package))


def test_progress_names_keep_their_paths_after_the_split() -> None:
    # syft_flwr.progress became a package (issue 25): the face is unchanged.
    from syft_flwr import progress
    from syft_flwr.progress import handles, live, log

    assert progress.RichReporter is live.RichReporter
    assert progress.LogReporter is log.LogReporter
    for name in ("TransferHandle", "WaitHandle", "Reporter", "NullReporter"):
        assert getattr(progress, name) is getattr(handles, name)
    assert progress.format_bytes(1536) == "1.5 KB"
    assert set(progress.__all__) <= set(dir(progress))


def test_pinned_peer_keeps_its_path_after_the_trust_split() -> None:
    from syft_flwr.crypto import pins, trust

    assert trust.PinnedPeer is pins.PinnedPeer
    assert "PinnedPeer" in trust.__all__
