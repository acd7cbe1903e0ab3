"""Data-owner side: serve a Flower ``ClientApp`` on private data until told to stop.

:func:`run_data_owner` wires the pieces together: the serving loop
(:class:`~syft_flwr.data_owner.loop.TransportEvents`), the ClientApp handler
(:class:`~syft_flwr.data_owner.handler.ClientAppHandler`), its reply cache and
the heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Context
from flwr.clientapp import ClientApp

from syft_flwr.client.factory import wrap_client
from syft_flwr.client.syft_p2p_client import restrict_peers
from syft_flwr.config import Settings
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.heartbeat import Heartbeat
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.data_owner.privacy import (
    BudgetLedger,
    PrivacyGuard,
    PrivacyPolicy,
    budget_folder,
)
from syft_flwr.data_owner.protocol import SyftFlwrEvents
from syft_flwr.data_owner.reply_cache import ReplyCache
from syft_flwr.data_owner.worker import current_request
from syft_flwr.errors import ConfigError
from syft_flwr.events.factory import create_events_watcher
from syft_flwr.researcher.grid import DEFAULT_ENDPOINT
from syft_flwr.transports.base import Transport

if TYPE_CHECKING:
    from syft_flwr.data_owner.contain.app import ContainedClientApp

__all__ = ["ClientAppHandler", "Heartbeat", "run_data_owner", "syftbox_flwr_client"]

logger = logging.getLogger("syft_flwr.data_owner")


def run_data_owner(
    client_app: ClientApp | ContainedClientApp,
    app_name: str,
    *,
    client: Any | None = None,
    aggregators: Iterable[str] | None = None,
    run_config: dict[str, Any] | None = None,
    node_config: dict[str, Any] | None = None,
    settings: Settings | None = None,
    events: SyftFlwrEvents | None = None,
    endpoint: str = DEFAULT_ENDPOINT,
    check: Callable[[str | None], str | None] | None = None,
    state_dir: str | Path | None = None,
    privacy: PrivacyPolicy | str | Path | None = None,
) -> ClientAppHandler:
    """Serve ``client_app`` for ``app_name`` until the researcher's stop signal.

    A ``ClientApp`` object given here runs in this process (it was imported by
    the caller, so its code already runs here: it is not contained). ``serve``,
    ``run`` and the notebook's ``serve`` pass a
    :class:`~syft_flwr.data_owner.contain.app.ContainedClientApp` instead: the
    app runs in its own contained worker process. Either way the audit trail
    names the containment of every request.

    Parameters
    ----------
    client_app:
        The Flower ``ClientApp`` to run on this data owner's private data.
    app_name:
        The app folder name (must match the researcher's).
    client:
        ``SyftFlwrClient`` / ``syft_core.Client`` (``create_client()`` if None).
    aggregators:
        Emails allowed to send work (the researcher); others are refused.
    run_config, node_config:
        The Flower ``Context`` configs.
    settings:
        Defaults to ``Settings.from_env()``.
    events:
        A ready events adapter (else ``create_events_watcher``).
    check:
        Refuses requests before anything runs (see :class:`ClientAppHandler`).
    state_dir:
        Private folder for the reply cache (default: the client's state dir for
        the app; none when ``events`` is given without a client).
    privacy:
        The data owner's privacy policy (or its TOML file); default
        ``SYFT_FLWR_PRIVACY_POLICY``; none: replies leave as the ClientApp made
        them. See ``docs/privacy.md``.

    Returns
    -------
    ClientAppHandler
        After the loop ended (``stopped_reason`` says why).
    """
    aggregators = None if aggregators is None else list(aggregators)
    ev, state_dir = _open_events(
        app_name, client, events, aggregators, settings, state_dir
    )
    handler = ClientAppHandler(
        client_app,
        email=ev.client_email,
        reveal_errors=(settings or Settings.from_env()).reveal_errors,
        node_config=node_config,
        run_config=run_config,
        on_stop=lambda _reason: ev.stop(),
        check=check,
        reply_cache=_reply_cache(ev, state_dir),
        privacy=_privacy_guard(privacy, ev, state_dir, app_name),
    )
    ev.on_request(endpoint, _audited(handler, client_app))
    heartbeat = _start_heartbeat(ev, app_name, endpoint, aggregators, settings)
    _serve(ev, heartbeat, aggregators, close=events is None)
    return handler


#: The audit trail's containment of a ClientApp object run in this process.
IN_PROCESS = "in-process (not contained)"


def _audited(handler: ClientAppHandler, client_app: Any) -> Callable[[bytes], Any]:
    """``handler``, naming the containment in force in every request's audit entry."""

    def handle(body: bytes) -> Any:
        req = current_request()
        if req is not None:
            summary = getattr(client_app, "summary", None)
            req.audit["containment"] = (
                summary if isinstance(summary, str) else IN_PROCESS
            )
        return handler(body)

    return handle


def _open_events(
    app_name: str,
    client: Any | None,
    events: SyftFlwrEvents | None,
    aggregators: list[str] | None,
    settings: Settings | None,
    state_dir: str | Path | None,
) -> tuple[SyftFlwrEvents, str | Path | None]:
    """The serving loop (``events`` if given) and the private state folder."""
    if events is None:
        client = wrap_client(client)
        if aggregators is not None:
            # On Drive: share with, read from and answer only the aggregators.
            restrict_peers(client, aggregators)
    if state_dir is None and client is not None:
        state_dir = wrap_client(client).state_dir(app_name)
    ev = events or create_events_watcher(
        app_name,
        client=client,
        settings=settings or Settings.from_env(),
        allowed_senders=None if aggregators is None else list(aggregators),
    )
    return ev, state_dir


def _serve(
    ev: SyftFlwrEvents,
    heartbeat: Heartbeat | None,
    aggregators: list[str] | None,
    *,
    close: bool,
) -> None:
    """Serve until the stop signal (or Ctrl-C); stop the beat, close what we opened."""
    logger.info(
        "%s is waiting for work from %s",
        ev.client_email,
        ", ".join(aggregators or ["anyone"]),
    )
    try:
        ev.run_forever()
    except KeyboardInterrupt:
        # Stop cleanly, then let the caller see the interruption (exit 130).
        logger.info("interrupted; stopping")
        ev.stop()
        raise
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if close and isinstance(ev, TransportEvents):
            ev.close()


def _reply_cache(ev: SyftFlwrEvents, state_dir: str | Path | None) -> ReplyCache | None:
    """The reply cache: on the serving loop's ledger when it keeps it in ``state_dir``.

    There each reply is written once (the ledger's stored reply, with the
    request's fingerprint as an alias); replies an older version cached in
    ``state_dir/reply_cache`` are still read.
    """
    if state_dir is None:
        return None
    folder = Path(state_dir) / "reply_cache"
    ledger = getattr(ev, "ledger", None)
    if (
        isinstance(ev, TransportEvents)
        and ledger is not None
        and ledger.dir is not None
        and ledger.dir.resolve() == Path(state_dir).resolve()
    ):
        return ReplyCache.on_ledger(ledger, legacy=folder if folder.is_dir() else None)
    from syft_flwr.crypto.own_state import state_key_for

    client = getattr(ev, "_client", None)  # the data owner's own key, if any
    policy = getattr(getattr(ev, "rpc", None), "policy", None)
    return ReplyCache(folder, state_key=state_key_for(client, policy, "reply-cache"))


def _privacy_guard(
    privacy: PrivacyPolicy | str | Path | None,
    ev: SyftFlwrEvents,
    state_dir: str | Path | None,
    app_name: str,
) -> PrivacyGuard | None:
    """The privacy step of this data owner, or ``None`` without a policy."""
    policy = (
        privacy
        if isinstance(privacy, PrivacyPolicy)
        else PrivacyPolicy.from_env(path=privacy)
    )
    if policy is None:
        return None
    if state_dir is None:
        # Fail closed: a budget nobody keeps would be spent again on every start.
        raise ConfigError(
            "a privacy policy needs a private state folder to keep the budget in; "
            "serve with a client (or give state_dir)"
        )
    from syft_flwr.crypto.own_state import state_key_for

    client = getattr(ev, "_client", None)  # the data owner's own key, if any
    codec = getattr(getattr(ev, "rpc", None), "policy", None)
    ledger = BudgetLedger(
        budget_folder(state_dir), state_key_for(client, codec, "privacy-budget")
    )
    logger.info("privacy policy in force: %s", policy.describe())
    return PrivacyGuard(policy, ledger, default_project=app_name.strip("/"))


def _start_heartbeat(
    ev: SyftFlwrEvents,
    app_name: str,
    endpoint: str,
    aggregators: Iterable[str] | None,
    settings: Settings | None,
) -> Heartbeat | None:
    """Beat to the researchers while serving (none when the sender is unknown)."""
    transport = getattr(ev, "transport", None)
    if not isinstance(transport, Transport) or aggregators is None:
        return None
    s = settings or Settings.from_env()
    interval = s.heartbeat_interval or transport.default_heartbeat_interval
    return Heartbeat(
        transport, app_name.strip("/"), endpoint, aggregators, interval
    ).start()


def syftbox_flwr_client(
    client_app: ClientApp,
    context: Context,
    app_name: str,
    project_dir: str | Path | None = None,
) -> None:
    """Upstream-compatible entry point: serve ``client_app`` for ``app_name``.

    Raises
    ------
    RunFailed
        Every ClientApp call failed, or the researcher reported a failed run.
    """
    from syft_flwr.client.factory import create_client

    handler = run_data_owner(
        client_app,
        app_name,
        client=create_client(project_dir=project_dir) if project_dir else None,
        run_config=dict(context.run_config),
        node_config=dict(context.node_config),
    )
    handler.check_outcome()
