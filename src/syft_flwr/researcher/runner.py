"""Researcher side: run a Flower ``ServerApp`` with a ``SyftGrid``."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.server.run_serverapp import run as run_serverapp
from flwr.serverapp import ServerApp

from syft_flwr._flwr_compat import AGGREGATOR_NODE_ID
from syft_flwr.config import Settings
from syft_flwr.errors import CheckpointError, RunFailed
from syft_flwr.history import capture_history, save_history
from syft_flwr.ids import new_run_id
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.researcher.journal import Journal

__all__ = ["run_researcher", "syftbox_flwr_server"]

logger = logging.getLogger("syft_flwr.researcher")

#: Seconds the researcher waits, before round 1, for data owners to serve the app.
#: Enough for a local simulation's start-up; on a real network, owners still
#: starting get their requests when they are ready.
READY_WAIT = 5.0


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so the stop signal is still sent."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_researcher(
    server_app: ServerApp,
    app_name: str,
    datasites: list[str],
    *,
    client: Any | None = None,
    run_config: dict[str, Any] | None = None,
    run_id: int | None = None,
    settings: Settings | None = None,
    grid: SyftGrid | None = None,
    stop_wait: float = 10.0,
    project_hash: str | None = None,
    fresh: bool = False,
    state_dir: str | Path | None = None,
) -> Context:
    """Run ``server_app`` against ``datasites`` and stop them when it ends.

    The stop signal goes out when the run ends, fails or is interrupted (Ctrl-C
    or SIGTERM); errors propagate so a CLI can exit non-zero.

    Parameters
    ----------
    server_app:
        A Flower ``ServerApp`` (``@app.main()`` or legacy ``server_fn``).
    app_name:
        The app folder name (must match the data owners').
    datasites:
        Data owner emails.
    client:
        The researcher's ``SyftFlwrClient`` / ``syft_core.Client``.
    run_config:
        ``Context.run_config`` (the app config plus overrides).
    run_id:
        Random if None.
    stop_wait:
        Seconds to wait for stop acknowledgements.
    project_hash:
        The reviewed project's hash, named in every request (``syft_flwr submit``).
    fresh:
        Start over even if an interrupted run of the same app, data owners and
        run config left a checkpoint (by default the run resumes from it).
    state_dir:
        Private folder for the checkpoint (default: the client's state dir for
        the app; no checkpoint when neither exists).

    Returns
    -------
    Context
        The server Context after the run.

    Raises
    ------
    RunFailed
        Work was sent and not one ClientApp call succeeded (each one raised,
        was refused or never answered): the run produced nothing.
    """
    grid = grid or SyftGrid(
        app_name,
        datasites,
        client=client,
        settings=settings,
        project_hash=project_hash,
    )
    try:
        journal = _open_journal(grid, app_name, datasites, run_config, state_dir, fresh)
    except BaseException:  # saved progress refused: nothing was sent
        grid.close()
        raise
    rid = _start_run(grid, journal, run_id)
    context = Context(
        run_id=rid,
        node_id=AGGREGATOR_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )
    logger.info(
        "run %d of %s with %d data owners: %s",
        rid,
        app_name,
        len(datasites),
        ", ".join(datasites),
    )
    reason, outcome = "Training complete", "completed"
    try:
        return _serve(grid, server_app, context, app_name, state_dir, journal)
    except BaseException as exc:
        reason, outcome = _say_how_it_ended(exc)
        raise
    finally:
        _stop(grid, journal, reason, outcome, stop_wait)


def _start_run(grid: SyftGrid, journal: Journal | None, run_id: int | None) -> int:
    """The run id (the checkpoint's when resuming), set on the grid and journal."""
    if journal is not None and journal.run_id is not None and run_id is None:
        rid = journal.run_id
        logger.info(
            "resuming run %d from its checkpoint (use --fresh to start over)", rid
        )
    else:
        rid = run_id if run_id is not None else new_run_id()
    if journal is not None:
        if journal.run_id != rid:
            journal.begin(rid)
        grid.journal = journal
    grid.set_run(rid)  # also sets Flower's TaskIdentity for this process
    return rid


def _serve(
    grid: SyftGrid,
    server_app: ServerApp,
    context: Context,
    app_name: str,
    state_dir: str | Path | None,
    journal: Journal | None,
) -> Context:
    """Run the ServerApp to its end; keep its history; close the checkpoint."""
    grid.warm_up(wait=READY_WAIT)
    with _sigterm_as_interrupt(), capture_history() as histories:
        out = run_serverapp(
            grid=grid,
            context=context,
            server_app_dir=".",
            loaded_server_app=server_app,
        )
    _check_work(grid)
    if histories:  # for `simulate --history-out/--plot-out` and notebooks
        folder = _state_folder(grid, app_name, state_dir)
        if folder is not None:
            save_history(folder, histories[-1])
    if journal is not None:
        journal.finish()
    return out


def _say_how_it_ended(exc: BaseException) -> tuple[str, str]:
    """Log why the run ended early; the stop signal's (reason, outcome)."""
    if isinstance(exc, KeyboardInterrupt):
        logger.warning("interrupted: stopping the data owners")
        return "Researcher interrupted the run", "interrupted"
    if isinstance(exc, RunFailed):
        logger.error("the run failed: %s", exc)
        return f"Run failed: {exc}", "failed"
    logger.error("the ServerApp failed: %s", exc)
    return f"Server failed: {type(exc).__name__}", "failed"


def _stop(
    grid: SyftGrid,
    journal: Journal | None,
    reason: str,
    outcome: str,
    stop_wait: float,
) -> None:
    """Make the checkpoint durable, tell the data owners to stop, close the grid."""
    if journal is not None:
        try:  # what a resume needs is on disk before this process ends
            journal.flush()
        except CheckpointError as exc:
            logger.error("%s", exc)
    try:
        grid.send_stop_signal(
            group_id="final", reason=reason, wait=stop_wait, outcome=outcome
        )
    except Exception:  # never mask the run's own outcome
        logger.exception("could not send the stop signal")
    grid.close()


def _state_folder(
    grid: SyftGrid, app_name: str, state_dir: str | Path | None
) -> Path | None:
    """The researcher's private folder for this app (None: nowhere to keep state)."""
    if state_dir is not None:
        return Path(state_dir)
    if grid.client is not None:
        folder = grid.client.state_dir(app_name)
        return None if folder is None else Path(folder)
    return None


def _open_journal(
    grid: SyftGrid,
    app_name: str,
    datasites: list[str],
    run_config: dict[str, Any] | None,
    state_dir: str | Path | None,
    fresh: bool,
) -> Journal | None:
    """The resume journal in the researcher's private state (None: nowhere to keep it)."""
    folder = _state_folder(grid, app_name, state_dir)
    if folder is None:
        return None
    # "The same command": same app, same data owners, same run config.
    key = hashlib.sha256(
        json.dumps(
            [app_name, sorted(datasites), dict(run_config or {})],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    # Bound to this researcher: a journal copied from another fails its MAC.
    from syft_flwr.crypto.own_state import state_key_for

    return Journal(
        folder / "resume",
        key,
        fresh=fresh,
        state_key=state_key_for(grid.client, grid.rpc.policy, "journal"),
        owner=grid.get_client_email(),
    )


def _check_work(grid: SyftGrid) -> None:
    """Raise :class:`RunFailed` when no ClientApp call of the run succeeded."""
    t = grid.tally
    for node_id, reason in sorted(t.out_of_budget.items()):
        # The end-of-run summary names every site that stopped for its budget.
        try:
            who = grid.email_of(node_id)
        except KeyError:
            who = f"node {node_id}"
        logger.warning("site out of privacy budget: %s (%s)", who, reason)
    if t.all_failed:
        raise RunFailed(
            f"none of the {t.sent} ClientApp calls succeeded "
            f"({t.failed} failed, {t.sent - t.failed} unanswered)"
        )
    logger.info(
        "ClientApp calls: %d sent, %d succeeded, %d failed",
        t.sent,
        t.succeeded,
        t.failed,
    )


def syftbox_flwr_server(
    server_app: ServerApp,
    context: Context,
    datasites: list[str],
    app_name: str,
    project_dir: str | Path | None = None,
) -> Context:
    """Upstream-compatible entry point (``project_dir`` picks the transport)."""
    from syft_flwr.client.factory import create_client

    client = create_client(project_dir=project_dir) if project_dir else None
    return run_researcher(
        server_app,
        app_name,
        datasites,
        client=client,
        run_config=dict(context.run_config),
    )
