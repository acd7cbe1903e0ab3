"""The review commands: ``submit``, ``status``, ``projects``, ``show``, ``approve``,
``reject`` and ``serve``.

Each ``cmd_*`` function takes the parsed arguments, calls
:mod:`syft_flwr.review.api` and prints; the parser lives in :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports the review machinery only when a command runs
    from syft_flwr.review.api import Submission
    from syft_flwr.review.store import ProjectRecord

__all__ = [
    "add_commands",
    "add_run_config_option",
    "format_projects",
    "format_status",
]


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from syft_flwr.client.factory import create_client

    return create_client(config_path=args.config)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "-"


def format_projects(records: list[ProjectRecord], *, files: bool = True) -> str:
    """The text ``syft_flwr projects`` prints."""
    if not records:
        return "no projects submitted to you yet\n"
    lines = []
    for r in records:
        lines.append(f"{r.short}  [{r.status}]  {r.name}")
        lines.append(f"  from:        {r.researcher}")
        lines.append(f"  fingerprint: {r.fingerprint}")
        lines.append(f"  hash:        {r.project_hash}")
        lines.append(
            f"  received:    {_when(r.received)}   decided: {_when(r.decided)}"
        )
        if r.reason:
            lines.append(f"  reason:      {r.reason}")
        if files:
            lines += [f"    {path}  ({size} bytes)" for path, _, size in r.files]
    return "\n".join(lines) + "\n"


def format_status(subs: list[Submission]) -> str:
    """The text ``syft_flwr status`` prints."""
    if not subs:
        return "nothing submitted yet (syft_flwr submit APP_DIR --to EMAIL)\n"
    lines = []
    for s in subs:
        line = f"{s.data_owner}: {s.name} {s.project_hash[:12]} [{s.status}]"
        lines.append(line + (f"  reason: {s.reason}" if s.reason else ""))
    return "\n".join(lines) + "\n"


def cmd_submit(args: argparse.Namespace) -> int:
    """``syft_flwr submit``."""
    from syft_flwr.review.api import submit

    owners = [e.strip() for v in args.to for e in v.split(",") if e.strip()]
    subs = submit(args.app_dir, owners, client=_client(args), name=args.name)
    for s in subs:
        print(f"submitted {s.name} {s.project_hash[:12]} to {s.data_owner}")
    print(f"  project hash: {subs[0].project_hash}" if subs else "no data owners given")
    print("  see their decisions with: syft_flwr status")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``syft_flwr status``."""
    from syft_flwr.review.api import submission_status

    print(format_status(submission_status(_client(args))), end="")
    return 0


def cmd_projects(args: argparse.Namespace) -> int:
    """``syft_flwr projects``: fetch new submissions, then list every project."""
    from syft_flwr.review.api import project_store, receive_projects

    client = _client(args)
    new = receive_projects(client, researchers=args.researcher or ())
    if new:
        print(f"{len(new)} new submission(s)")
    records = project_store(client).records()
    if args.status:
        records = [r for r in records if r.status == args.status]
    print(format_projects(records, files=not args.brief), end="")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``syft_flwr show PROJECT``."""
    from syft_flwr.review.api import project_store
    from syft_flwr.review.store import show_text

    print(show_text(project_store(_client(args)), args.project), end="")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """``syft_flwr approve PROJECT``."""
    from syft_flwr.review.api import approve

    rec = approve(_client(args), args.project)
    print(f"approved {rec.name} {rec.project_hash} from {rec.researcher}")
    print("  the researcher was told; run it with: syft_flwr serve " + rec.short)
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    """``syft_flwr reject PROJECT --reason TEXT``."""
    from syft_flwr.review.api import reject

    rec = reject(_client(args), args.project, args.reason)
    print(f"rejected {rec.name} {rec.short} from {rec.researcher}: {rec.reason}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``syft_flwr serve [PROJECT]``."""
    from syft_flwr.logs import setup_logging
    from syft_flwr.review.api import serve

    setup_logging()
    handler = serve(
        _client(args),
        args.project,
        run_config=args.run_config,
        node_config=args.node_config,
        on_ready=lambda work: print(f"serving the approved code in {work}"),
    )
    handler.check_outcome()
    return 0


def add_run_config_option(parser: argparse.ArgumentParser) -> None:
    """The ``--run-config`` option shared by the commands that run an app."""
    parser.add_argument(
        "--run-config",
        action="append",
        default=None,
        help='app config overrides, e.g. "num-server-rounds=5"; repeatable',
    )


def add_commands(sub: argparse._SubParsersAction, config_help: str) -> None:
    """Add the review commands to the ``syft_flwr`` parser."""
    s = sub.add_parser(
        "submit", help="researcher: send an app to data owners for review"
    )
    s.add_argument("app_dir", type=Path, help="the Flower app folder (sources only)")
    s.add_argument(
        "--to",
        action="append",
        required=True,
        help="data owner emails, comma-separated or repeated",
    )
    s.add_argument(
        "--name", default=None, help="project name shown to them (default: folder)"
    )
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser(
        "status", help="researcher: each data owner's decision on your submissions"
    )
    s.set_defaults(func=cmd_status)

    s = sub.add_parser(
        "projects",
        help="data owner: fetch new submissions and list pending, approved and "
        "rejected projects",
    )
    s.add_argument(
        "--status",
        choices=["pending", "approved", "rejected"],
        default=None,
        help="list only projects with this status",
    )
    s.add_argument("--brief", action="store_true", help="leave out the file lists")
    s.add_argument(
        "--researcher",
        action="append",
        default=None,
        help="open the review inbox to this researcher (needed on Google Drive, "
        "which shares folders per peer); repeatable",
    )
    s.set_defaults(func=cmd_projects)

    project_help = "hash (at least 6 leading digits) from `projects`"
    for name, helptext, func in (
        ("show", "print a project's code and its diff to the last approval", cmd_show),
        ("approve", "approve a project (the researcher is told)", cmd_approve),
        ("reject", "reject a project (the researcher is told)", cmd_reject),
    ):
        s = sub.add_parser(name, help=f"data owner: {helptext}")
        s.add_argument("project", help=project_help)
        s.set_defaults(func=func)
    sub.choices["reject"].add_argument(
        "--reason", required=True, help="why; sent to the researcher"
    )

    s = sub.add_parser(
        "serve",
        help="data owner: run an approved project (only that code, in its own folder)",
    )
    s.add_argument(
        "project",
        nargs="?",
        default=None,
        help="hash prefix of the approved project (default: the only approved one)",
    )
    add_run_config_option(s)
    s.add_argument(
        "--node-config",
        action="append",
        default=None,
        help='node config, e.g. "partition-id=0 num-partitions=2"; repeatable',
    )
    s.set_defaults(func=cmd_serve)
    for name in ("submit", "status", "projects", "show", "approve", "reject", "serve"):
        sub.choices[name].add_argument("--config", default=None, help=config_help)
