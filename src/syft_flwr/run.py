"""Run a bootstrapped Flower app as researcher or data owner (``main.py``'s logic)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from syft_flwr._email import fold_domain
from syft_flwr._proctitle import set_party_title
from syft_flwr.client.factory import create_client
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.errors import ConfigError, RunFailed
from syft_flwr.logs import setup_logging
from syft_flwr.project import (
    DEFAULT_NODE_CONFIG,
    ProjectConfig,
    load_component,
    load_project,
    node_config_for,
    parse_run_config,
)

__all__ = [
    "DEFAULT_NODE_CONFIG",
    "main",
    "node_config_for",
    "run",
    "pick_role",
    "run_role",
    "run_project_data_owner",
    "run_project_researcher",
    "syftbox_run_flwr_client",
    "syftbox_run_flwr_server",
]

logger = logging.getLogger("syft_flwr.run")

# DEFAULT_NODE_CONFIG and node_config_for live in syft_flwr.project (the
# data-owner runner of review/ needs them, and review/ sits below this module);
# they stay importable from here, as documented upstream.

RESEARCHER, DATA_OWNER = "researcher", "data-owner"


def pick_role(cfg: ProjectConfig, email: str, role: str | None = None) -> str:
    """Pick the role by exact email match (never substring), or check ``role``.

    Raises
    ------
    ConfigError
        No aggregator configured, or the email is neither aggregator nor datasite.
    """
    if cfg.aggregator is None:
        raise ConfigError(
            f"{cfg.app_dir} is not bootstrapped: no [tool.syft_flwr] aggregator "
            "(run `syft_flwr bootstrap`)"
        )
    if role is not None:
        if role not in (RESEARCHER, DATA_OWNER):
            raise ConfigError(f"--role must be {RESEARCHER} or {DATA_OWNER}")
        return role
    email = fold_domain(email)
    if email == cfg.aggregator:
        return RESEARCHER
    if email in cfg.datasites:
        return DATA_OWNER
    raise ConfigError(
        f"{email} is neither the aggregator ({cfg.aggregator}) nor one of the data "
        f"owners ({', '.join(cfg.datasites)}) of this app"
    )


def _restrict_peers(
    client: SyftFlwrClient, cfg: ProjectConfig, extra: list[str]
) -> None:
    """On Google Drive, ignore folders shared by anyone outside this app."""
    from syft_flwr.client.syft_p2p_client import SyftP2PClient

    if isinstance(client, SyftP2PClient) and client.allowed_peers is None:
        peers = {*cfg.datasites, *extra}
        if cfg.aggregator:
            peers.add(cfg.aggregator)
        client.allowed_peers = peers


def _project_hash(app_dir: Path) -> str | None:
    """The hash data owners approved this code under (``syft_flwr submit``)."""
    from syft_flwr.review.package import hash_tree

    try:
        return hash_tree(app_dir)
    except ConfigError as exc:
        logger.warning("requests will name no project hash: %s", exc)
        return None


def _folder_hash(cfg: ProjectConfig) -> str | None:
    """The hash of a local folder's code, for the record of an unreviewed serve."""
    from syft_flwr.review.package import hash_tree

    try:
        return hash_tree(cfg.app_dir)
    except ConfigError:
        return None  # e.g. a file no package could hold; served all the same


def run_project_researcher(
    cfg: ProjectConfig,
    client: SyftFlwrClient,
    *,
    run_config: str | list[str] | None = None,
    datasites: list[str] | None = None,
    settings: Settings | None = None,
    run_id: int | None = None,
    fresh: bool = False,
) -> Any:
    """Load the app's ServerApp and run it with a SyftGrid (resuming unless ``fresh``)."""
    from syft_flwr.researcher.runner import run_researcher

    server_app = load_component(cfg.serverapp, cfg.app_dir)
    rc = parse_run_config(cfg.app_config, run_config)
    _restrict_peers(client, cfg, list(datasites or []))
    return run_researcher(
        server_app,
        cfg.flwr_app_name,
        list(datasites or cfg.datasites),
        client=client,
        run_config=rc,
        settings=settings,
        run_id=run_id,
        project_hash=_project_hash(cfg.app_dir),
        fresh=fresh,
    )


def run_project_data_owner(
    cfg: ProjectConfig,
    client: SyftFlwrClient,
    *,
    run_config: str | list[str] | None = None,
    node_config: str | list[str] | dict[str, Any] | None = None,
    aggregators: list[str] | None = None,
    settings: Settings | None = None,
    no_review: bool | None = None,
    privacy: Any | None = None,
    containment: ContainmentPolicy | None = None,
) -> Any:
    """Serve the app's ClientApp from its local folder until the stop signal.

    The ClientApp runs in its own worker process, contained as ``containment``
    says (default: the data owner's ``SYFT_FLWR_CONTAINMENT*``, level full);
    the worker starts before any request is accepted and a machine that cannot
    contain is refused (:class:`~syft_flwr.errors.ContainmentUnavailable`),
    except in a local simulation, which warns and runs uncontained.

    This runs code nobody reviewed, so it is an explicit opt-down: ``no_review``
    (``--no-review``; default ``SYFT_FLWR_NO_REVIEW``) must be true. It is
    logged, and remembered for ``syft_flwr status``. Reviewed code is served by
    ``syft_flwr serve`` (:func:`syft_flwr.review.serve.serve`).

    ``node_config`` is merged over :func:`node_config_for`'s defaults.

    Raises
    ------
    ConfigError
        ``no_review`` is not set.
    RunFailed
        Every ClientApp call failed, or the researcher reported a failed run.
    """
    from syft_flwr.data_owner.contain.serving import start_contained
    from syft_flwr.data_owner.runner import run_data_owner
    from syft_flwr.review.unreviewed import record_unreviewed

    settings = settings or Settings.from_env()
    if not (settings.no_review if no_review is None else no_review):
        raise ConfigError(
            f"{client.email} would serve {cfg.app_dir} without review: code nobody "
            "approved would run on your data. Serve a project you approved with "
            "`syft_flwr serve`, or, for your own code or a local simulation, run "
            "this with --no-review (SYFT_FLWR_NO_REVIEW=1)"
        )
    record_unreviewed(client, cfg.flwr_app_name, cfg.app_dir, _folder_hash(cfg))
    rc = parse_run_config(cfg.app_config, run_config)
    nc = node_config_for(cfg, node_config)
    client_app = start_contained(
        app_dir=cfg.app_dir,
        ref=cfg.clientapp,
        files=None,
        email=client.email,
        app_name=cfg.flwr_app_name,
        client=client,
        policy=containment,
        settings=settings,
        node_config=nc,
        run_config=rc,
    )
    aggs = aggregators or ([cfg.aggregator] if cfg.aggregator else None)
    try:
        _restrict_peers(client, cfg, list(aggs or []))
        handler = run_data_owner(
            client_app,
            cfg.flwr_app_name,
            client=client,
            aggregators=aggs,
            run_config=rc,
            node_config=nc,
            settings=settings,
            privacy=privacy,
        )
    finally:
        client_app.close()
    handler.check_outcome()
    return handler


def syftbox_run_flwr_server(flower_project_dir: str | Path) -> Any:
    """Upstream-compatible: run the researcher side of a bootstrapped app.

    Raises
    ------
    RunFailed
        The ServerApp raised, or no ClientApp call succeeded.
    """
    setup_logging()
    cfg = load_project(flower_project_dir)
    return run_project_researcher(cfg, create_client(project_dir=cfg.app_dir))


def syftbox_run_flwr_client(flower_project_dir: str | Path) -> Any:
    """Upstream-compatible: serve the data-owner side of a bootstrapped app.

    The app folder's code is served without review, so only with
    ``SYFT_FLWR_NO_REVIEW=1`` (set by the local simulators for their data
    owners); see :func:`run_project_data_owner`.

    Raises
    ------
    ConfigError
        ``SYFT_FLWR_NO_REVIEW`` is not set.
    RunFailed
        Every ClientApp call failed, or the researcher reported a failed run.
    """
    setup_logging()
    cfg = load_project(flower_project_dir)
    return run_project_data_owner(cfg, create_client(project_dir=cfg.app_dir))


def run_role(
    cfg: ProjectConfig,
    client: SyftFlwrClient,
    role: str,
    *,
    run_config: str | list[str] | None = None,
    node_config: str | list[str] | None = None,
    fresh: bool = False,
    no_review: bool | None = None,
    privacy: Any | None = None,
    containment: ContainmentPolicy | None = None,
) -> Any:
    """Run ``role`` (researcher or data owner) of ``cfg``; used by main.py and the CLI.

    ``fresh`` makes the researcher start over instead of resuming an interrupted run;
    ``no_review`` lets a data owner serve the local folder unreviewed (see
    :func:`run_project_data_owner`); ``privacy`` is the data owner's privacy
    policy or its file (default ``SYFT_FLWR_PRIVACY_POLICY``).

    Raises
    ------
    RunFailed
        This party's run failed (see :class:`~syft_flwr.errors.RunFailed`).
    """
    if role == RESEARCHER:
        return run_project_researcher(cfg, client, run_config=run_config, fresh=fresh)
    return run_project_data_owner(
        cfg,
        client,
        run_config=run_config,
        node_config=node_config,
        no_review=no_review,
        privacy=privacy,
        containment=containment,
    )


def build_main_parser() -> argparse.ArgumentParser:
    """The options of a bootstrapped app's ``main.py``."""
    p = argparse.ArgumentParser(
        description="Run this Flower app with syft_flwr as researcher or data "
        "owner (picked by your email, or --role).",
    )
    p.add_argument(
        "--role",
        choices=[RESEARCHER, DATA_OWNER],
        help="run this role instead of picking it by exact email match",
    )
    p.add_argument(
        "--run-config",
        action="append",
        default=None,
        help='app config overrides, e.g. "num-server-rounds=5"; repeatable, '
        "later values win",
    )
    p.add_argument(
        "--node-config",
        action="append",
        default=None,
        help='data owner node config, e.g. "partition-id=0 num-partitions=2"; '
        "repeatable, later values win (default: partition-id=0 num-partitions=1)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="SyftBox client config path (default: SYFTBOX_CLIENT_CONFIG_PATH, "
        "then ~/.syftbox/config.json)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="researcher: start over instead of resuming an interrupted run",
    )
    p.add_argument(
        "--no-review",
        action="store_true",
        default=None,
        help="data owner: serve this local folder's code although nobody reviewed "
        "it (your own code, a local simulation); logged and shown by `syft_flwr "
        "status`. Reviewed projects are served with `syft_flwr serve`",
    )
    p.add_argument(
        "-s",
        "--simulation",
        action="store_true",
        help="accepted for upstream syft-flwr compatibility (its simulator "
        "passes it); changes nothing",
    )
    return p


def main(project_dir: str | Path, argv: list[str] | None = None) -> None:
    """Entry point of a bootstrapped app's ``main.py`` (exits the process).

    Exit codes: 0 the run succeeded, 1 it failed, 2 configuration error,
    130 interrupted.
    """
    args = build_main_parser().parse_args(argv)
    setup_logging()
    try:
        cfg = load_project(project_dir)
        client = create_client(project_dir=cfg.app_dir, config_path=args.config)
        role = pick_role(cfg, client.email, args.role)
        set_party_title(role, client.email)
        logger.info("%s runs %s as %s", client.email, cfg.name, role)
        logger.info(
            "DATA_DIR=%s OUTPUT_DIR=%s",
            os.environ.get("DATA_DIR"),
            os.environ.get("OUTPUT_DIR"),
        )
        run_role(
            cfg,
            client,
            role,
            run_config=args.run_config,
            node_config=args.node_config,
            fresh=args.fresh,
            no_review=args.no_review,
        )
    except ConfigError as exc:
        print(f"syft_flwr: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as exc:
        logger.error("the run failed: %s", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        logger.exception("the run failed")
        sys.exit(1)
    sys.exit(0)


def run(
    project_dir: str | Path, mock_dataset_paths: list[str | Path]
) -> Any:  # bool | asyncio.Task[bool]
    """Upstream-compatible alias of :func:`syft_flwr.run_simulation.run`."""
    from syft_flwr.run_simulation import run as _run

    return _run(project_dir, mock_dataset_paths)
