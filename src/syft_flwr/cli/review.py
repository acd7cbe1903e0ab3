"""The review commands: ``submit``, ``status``, ``projects``, ``show``, ``approve``,
``reject`` and ``serve``.

Each command calls :mod:`syft_flwr.review.api` and prints; :func:`register`
adds them to the ``syft_flwr`` typer app.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from syft_flwr._printable import printable
from syft_flwr.cli._common import (
    ConfigOpt,
    JsonOpt,
    PrivacyOpt,
    RunConfigOpt,
    client_for,
    print_json,
)
from syft_flwr.cli._common import emails as _emails
from syft_flwr.cli._containment import (
    AllowReadOpt,
    AllowWriteOpt,
    ContainmentOpt,
    CpuSecondsOpt,
    MaxFileMbOpt,
    MaxProcessesOpt,
    MemoryMbOpt,
    policy_from,
)

if TYPE_CHECKING:  # the CLI imports the review machinery only when a command runs
    from syft_flwr.review.api import Submission
    from syft_flwr.review.store import ProjectRecord
    from syft_flwr.review.unreviewed import UnreviewedServe

__all__ = [
    "format_containment",
    "format_projects",
    "format_status",
    "format_unreviewed",
    "register",
]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "-"


def format_projects(records: list[ProjectRecord], *, files: bool = True) -> str:
    """The text ``syft_flwr projects`` prints."""
    if not records:
        return "no projects submitted to you yet\n"
    p = printable  # names, emails and file names come from researchers
    lines = []
    for r in records:
        lines.append(f"{p(r.short)}  [{p(r.status)}]  {p(r.name)}")
        lines.append(f"  from:        {p(r.researcher)}")
        lines.append(f"  fingerprint: {p(r.fingerprint)}")
        lines.append(f"  hash:        {p(r.project_hash)}")
        lines.append(
            f"  received:    {_when(r.received)}   decided: {_when(r.decided)}"
        )
        if r.reason:
            lines.append(f"  reason:      {p(r.reason)}")
        if r.note:
            lines.append(f"  note:        {p(r.note)}")
        if files:
            lines += [f"    {p(path)}  ({p(size)} bytes)" for path, _, size in r.files]
    return "\n".join(lines) + "\n"


def format_status(subs: list[Submission]) -> str:
    """The text ``syft_flwr status`` prints."""
    if not subs:
        return "nothing submitted yet (syft_flwr submit APP_DIR --to EMAIL)\n"
    p = printable  # a data owner's reason and names read from shared folders
    lines = []
    for s in subs:
        line = (
            f"{p(s.data_owner)}: {p(s.name)} {p(s.project_hash[:12])} [{p(s.status)}]"
        )
        lines.append(line + (f"  reason: {p(s.reason)}" if s.reason else ""))
    return "\n".join(lines) + "\n"


def format_unreviewed(serves: list[UnreviewedServe]) -> str:
    """The lines ``syft_flwr status`` adds for local folders served without review."""
    from syft_flwr.review.package import printable

    return "".join(
        f"served WITHOUT REVIEW (--no-review): {printable(u.app_name)} from "
        f"{printable(u.folder)}, hash {u.project_hash[:12] or '?'}, "
        f"since {_when(u.started)}\n"
        for u in serves
    )


def _record_dict(rec: ProjectRecord, *, files: bool = True) -> dict[str, Any]:
    """A project record for ``--json`` (no request internals, files optional)."""
    out = dataclasses.asdict(rec)
    del out["request_key"], out["other_requests"]
    if files:
        out["files"] = [
            {"path": path, "sha256": digest, "size": size}
            for path, digest, size in rec.files
        ]
    else:
        del out["files"]
    return out


ProjectArg = Annotated[
    str, typer.Argument(help="Hash of the project (at least 6 leading digits).")
]
ResearcherOpt = Annotated[
    str | None,
    typer.Option(
        "--researcher",
        help="Whose submission, when several researchers submitted the same files "
        "(each is decided on its own).",
    ),
]


def submit(
    app_dir: Annotated[
        Path, typer.Argument(help="The Flower app folder (sources only).")
    ],
    to: Annotated[
        list[str],
        typer.Option("--to", help="Data owner emails, comma-separated or repeated."),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Project name shown to them (default: folder)."),
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Researcher: send an app to data owners for review."""
    from syft_flwr.review.api import submit as _submit

    owners = [e for v in to for e in _emails(v)]
    subs = _submit(app_dir, owners, client=client_for(config), name=name)
    if json_:
        print_json([dataclasses.asdict(s) for s in subs])
        return
    for s in subs:
        print(
            f"submitted {printable(s.name)} {s.project_hash[:12]} to {printable(s.data_owner)}"
        )
    print(f"  project hash: {subs[0].project_hash}" if subs else "no data owners given")
    print("  see their decisions with: syft_flwr status")


def format_containment(serves: list[dict[str, object]]) -> str:
    """The containment each recent serve ran its ClientApp with (newest per app)."""
    latest: dict[str, dict[str, object]] = {}
    for entry in serves:
        latest[str(entry.get("app_name"))] = entry
    if not latest:
        return ""
    lines = ["containment of the ClientApp (as a data owner):"]
    for name, entry in latest.items():
        when = entry.get("started")
        stamp = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
            if isinstance(when, int | float)
            else "?"
        )
        level = printable(str(entry.get("containment")))
        lines.append(f"  {printable(name)}: {level} (since {stamp})")
    return "\n".join(lines) + "\n"


def status(
    config: ConfigOpt = None, json_: JsonOpt = False, privacy: PrivacyOpt = None
) -> None:
    """Researcher: each data owner's decision on your submissions (and, as a data
    owner, the local app folders you served without review and the privacy
    policy in force, from --privacy or SYFT_FLWR_PRIVACY_POLICY)."""
    from syft_flwr.data_owner.contain.serving import containment_in_force
    from syft_flwr.review.api import submission_status
    from syft_flwr.review.unreviewed import unreviewed_serves

    client = client_for(config)
    subs = submission_status(client)
    if json_:
        print_json([dataclasses.asdict(s) for s in subs])
    else:
        print(format_status(subs), end="")
        print(format_unreviewed(unreviewed_serves(client)), end="")
        from syft_flwr.cli.privacy import privacy_status

        print(privacy_status(client, privacy), end="")
        print(format_containment(containment_in_force(client)), end="")


def projects(
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            click_type=click.Choice(["pending", "approved", "rejected"]),
            help="List only projects with this status.",
        ),
    ] = None,
    brief: Annotated[
        bool, typer.Option("--brief", help="Leave out the file lists.")
    ] = False,
    researcher: Annotated[
        list[str] | None,
        typer.Option(
            "--researcher",
            help="Open the review inbox to this researcher (needed on Google Drive, "
            "which shares folders per peer); repeatable.",
        ),
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Data owner: fetch new submissions, list pending, approved, rejected ones."""
    from syft_flwr.review.api import project_store, receive_projects

    client = client_for(config)
    new = receive_projects(client, researchers=researcher or ())
    store = project_store(client)
    records = store.records()
    if status:
        records = [r for r in records if r.status == status]
    if json_:
        print_json([_record_dict(r, files=not brief) for r in records])
        return
    if new:
        print(f"{len(new)} new submission(s)")
    if store.damaged:
        print(
            f"{len(store.damaged)} record(s) in your review store failed their "
            "integrity check (changed or copied by someone else): ignored, never "
            "approved; the warnings say which"
        )
    print(format_projects(records, files=not brief), end="")


def show(
    project: ProjectArg,
    researcher: ResearcherOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Data owner: print a project's code, the file each entry point runs, the diff."""
    from syft_flwr.review.api import project_store
    from syft_flwr.review.entry import entry_points
    from syft_flwr.review.store import show_text

    store = project_store(client_for(config))
    if not json_:
        print(show_text(store, project, researcher), end="")
        return
    rec = store.get(project, researcher)
    prev = store.previous_approved(rec)
    code = store.package(rec).files
    print_json(
        _record_dict(rec)
        | {
            "entry_points": [dataclasses.asdict(e) for e in entry_points(code)],
            "previous_approved": None if prev is None else prev.project_hash,
            "code": {
                p: code[p].decode("utf-8", errors="replace") for p in sorted(code)
            },
        }
    )


def approve(
    project: ProjectArg, researcher: ResearcherOpt = None, config: ConfigOpt = None
) -> None:
    """Data owner: approve a project for its researcher (who is told)."""
    from syft_flwr.review.api import approve as _approve

    rec = _approve(client_for(config), project, researcher=researcher)
    print(
        f"approved {printable(rec.name)} {rec.project_hash} "
        f"for {printable(rec.researcher)} only"
    )
    print("  the researcher was told; run it with: syft_flwr serve " + rec.short)


def reject(
    project: ProjectArg,
    reason: Annotated[
        str, typer.Option("--reason", help="Why; sent to the researcher.")
    ],
    researcher: ResearcherOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Data owner: reject a project (its researcher, and only they, are told)."""
    from syft_flwr.review.api import reject as _reject

    rec = _reject(client_for(config), project, reason, researcher=researcher)
    print(
        f"rejected {printable(rec.name)} {rec.short} from "
        f"{printable(rec.researcher)}: {printable(rec.reason)}"
    )


def serve(
    project: Annotated[
        str | None,
        typer.Argument(
            help="Hash prefix of the approved project (default: the only approved one)."
        ),
    ] = None,
    run_config: RunConfigOpt = None,
    node_config: Annotated[
        list[str] | None,
        typer.Option(
            "--node-config",
            help='Node config, e.g. "partition-id=0 num-partitions=2"; repeatable.',
        ),
    ] = None,
    config: ConfigOpt = None,
    privacy: PrivacyOpt = None,
    containment: ContainmentOpt = None,
    memory_mb: MemoryMbOpt = None,
    cpu_seconds: CpuSecondsOpt = None,
    max_processes: MaxProcessesOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    allow_read: AllowReadOpt = None,
    allow_write: AllowWriteOpt = None,
) -> None:
    """Data owner: run an approved project (only that code, in its own folder,
    its ClientApp in a contained worker process)."""
    from syft_flwr.logs import setup_logging
    from syft_flwr.review.api import serve as _serve

    setup_logging()
    handler = _serve(
        client_for(config),
        project,
        run_config=run_config,
        node_config=node_config,
        on_ready=lambda work: print(f"serving the approved code in {work}"),
        privacy=privacy,
        containment=policy_from(
            containment,
            memory_mb,
            cpu_seconds,
            max_processes,
            max_file_mb,
            allow_read,
            allow_write,
        ),
    )
    handler.check_outcome()


def register(app: typer.Typer) -> None:
    """Add the review commands to the ``syft_flwr`` typer app."""
    for command in (submit, status, projects, show, approve, reject, serve):
        app.command()(command)
