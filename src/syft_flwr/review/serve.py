"""Run an approved project: unpacked afresh into its own folder, guarded per request.

Order matters: the working folder is checked against the approved manifest
(every file, nothing extra) *before* anything of the project is imported, and
the import, in the ClientApp's own contained worker process (never in this
one), compiles the verified source bytes themselves, each re-checked against
its sha256 (:class:`~syft_flwr.review.loader.VerifiedSourceFinder`), never a
bytecode cache; after that each request re-checks the folder
(:class:`~syft_flwr.review.guard.ProjectGuard`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.errors import ConfigError, ProjectNotApproved
from syft_flwr.review.package import Package
from syft_flwr.review.store import APPROVED, ProjectRecord, ProjectStore, project_store
from syft_flwr.review.unpack import write_tree
from syft_flwr.review.workdir import work_dir_problem

__all__ = ["prepare_work_dir", "serve"]


def prepare_work_dir(
    store: ProjectStore, ref: str | None
) -> tuple[ProjectRecord, Path]:
    """Unpack an approved project, fresh, into its own working folder.

    Parameters
    ----------
    store : ProjectStore
    ref : str or None
        Hash prefix; ``None`` picks the only approved project.

    Returns
    -------
    tuple of (ProjectRecord, Path)
        One approved record of the project (every approved record of a hash has
        the same files; the guard checks each request's sender).

    Raises
    ------
    ProjectNotApproved
        The project is not approved (or none / several are, with ``ref=None``),
        or the folder written is not exactly its approved files.
    """
    prefix = None if ref is None else ref.strip().lower()
    approved = [
        r
        for r in store.records()
        if r.status == APPROVED
        and (prefix is None or r.project_hash.startswith(prefix))
    ]
    hashes = {r.project_hash for r in approved}
    if ref is None and len(hashes) != 1:
        raise ProjectNotApproved(
            f"{len(hashes)} approved projects: name one (syft_flwr projects)"
        )
    if not approved:
        _not_approved(store, ref or "")
    if len(hashes) != 1:
        raise ConfigError(f"{len(hashes)} approved projects match {ref!r}")
    rec = approved[0]
    pkg = store.package(rec)
    if pkg.project_hash != rec.project_hash:
        raise ProjectNotApproved(f"stored package of {rec.short} changed")
    work = store.directory / "work" / rec.project_hash[:16]
    store.remove_work(work)  # never run leftovers of an earlier serve
    write_tree(pkg.files, work)
    _check_before_import(work, pkg)
    return rec, work


def _check_before_import(work: Path, pkg: Package) -> None:
    """Refuse a working folder that is not exactly the approved files."""
    problem = work_dir_problem(work, pkg.project_hash, pkg.manifest.files)
    if problem is not None:
        raise ProjectNotApproved(
            f"the working folder of project {pkg.project_hash[:12]} is not the "
            f"approved code ({problem}); nothing of it was imported or run"
        )


def _not_approved(store: ProjectStore, ref: str) -> NoReturn:
    """Raise why nothing of ``ref`` can be served: unknown, or whose it is and how."""
    prefix = ref.strip().lower()
    found = [
        r
        for r in store.records()
        if len(prefix) >= 6 and r.project_hash.startswith(prefix)
    ]
    if not found:
        store.get(ref)  # raises: unknown, too short, or only a damaged record
    who = ", ".join(sorted(f"{r.researcher} ({r.status})" for r in found))
    raise ProjectNotApproved(f"project {found[0].short} is not approved: {who}")


def serve(
    client: SyftFlwrClient,
    ref: str | None = None,
    *,
    settings: Settings | None = None,
    events: Any | None = None,
    run_config: str | list[str] | None = None,
    node_config: str | list[str] | dict[str, Any] | None = None,
    on_ready: Callable[[Path], None] | None = None,
    privacy: Any | None = None,
    containment: ContainmentPolicy | None = None,
) -> Any:
    """Serve an approved project until its researcher's stop signal.

    The ClientApp is loaded from the project's own working folder; only the
    researchers whose own submission of it was approved may send work; every
    request must name the approved hash, and the folder is re-hashed before each
    one (:class:`~syft_flwr.review.guard.ProjectGuard`).

    Parameters
    ----------
    client : SyftFlwrClient
        The data owner.
    ref : str, optional
        Hash prefix of the project; default: the only approved one.
    settings : Settings, optional
        Default ``Settings.from_env()``.
    events : SyftFlwrEvents, optional
        A ready events adapter (tests); default: built for the project's app.
    run_config : str or list of str, optional
        Overrides of the project's app config (``"k=v k2=v2"``).
    node_config : str or list of str or dict, optional
        This data owner's node config (see :func:`syft_flwr.project.node_config_for`).
    on_ready : callable, optional
        Called with the working folder once the project is unpacked.
    privacy : PrivacyPolicy or path, optional
        The data owner's privacy policy (default ``SYFT_FLWR_PRIVACY_POLICY``).
    containment : ContainmentPolicy, optional
        How the ClientApp's worker is contained (default: the data owner's
        ``SYFT_FLWR_CONTAINMENT*``, level full). The worker starts before any
        request is accepted.

    Raises
    ------
    ContainmentUnavailable
        A layer of ``containment`` cannot be enforced here: nothing ran.

    Returns
    -------
    ClientAppHandler
    """
    from syft_flwr.data_owner.contain.serving import start_contained
    from syft_flwr.data_owner.runner import run_data_owner
    from syft_flwr.project import load_project, node_config_for, parse_run_config
    from syft_flwr.review.guard import ProjectGuard

    store = project_store(client)
    rec, work = prepare_work_dir(store, ref)  # checked before any import
    pkg = store.package(rec)
    if pkg.project_hash != rec.project_hash:
        raise ProjectNotApproved(f"stored package of {rec.short} changed")
    cfg = load_project(work)
    # Only the worker imports the project (re-checking each file's sha256
    # first); this process keeps the keys, the ledger and the audit trail.
    client_app = start_contained(
        app_dir=work,
        ref=cfg.clientapp,
        files={f.path: f.sha256 for f in pkg.manifest.files},
        email=client.email,
        app_name=cfg.flwr_app_name,
        client=client,
        policy=containment,
        settings=settings,
        node_config=node_config_for(cfg, node_config),
        run_config=parse_run_config(cfg.app_config, run_config),
    )
    try:
        if on_ready is not None:
            on_ready(work)
        return run_data_owner(
            client_app,
            cfg.flwr_app_name,
            client=client,
            # The researchers this data owner approved these files for (each one's
            # own record; not what the pyproject says); the guard checks per request.
            aggregators=store.approved_researchers(rec.project_hash),
            run_config=parse_run_config(cfg.app_config, run_config),
            node_config=node_config_for(cfg, node_config),
            settings=settings,
            events=events,
            check=ProjectGuard(store, rec.project_hash, work, files=pkg.manifest.files),
            privacy=privacy,
        )
    finally:
        client_app.close()
