"""The ``audit`` command: what ran on a data owner's data, and whether the trail holds."""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import typer

from syft_flwr.cli._common import (
    JsonOpt,
    client_for,
    print_json,
)
from syft_flwr.errors import ConfigError


def _parse_since(value: str | None) -> float | None:
    """``"1d"``/``"12h"`` (that long ago) or an ISO date/time, as POSIX time."""
    if not value:
        return None
    import time as _time

    from syft_flwr.config import parse_duration
    from syft_flwr.wire.envelope import parse_time

    try:
        return _time.time() - parse_duration(value)
    except ConfigError:
        pass
    try:
        return parse_time(value)
    except ValueError:
        raise ConfigError(
            f"--since {value!r}: use a duration like 1d or 12h, or an ISO date"
        ) from None


def audit(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="SyftBox client config path (default: SYFTBOX_CLIENT_CONFIG_PATH, "
            "then ~/.syftbox/config.json).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only events since then: a duration like 1d or 12h, or an ISO date.",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Only check that no line was changed, removed or added; exit 1 if "
            "one was, 3 if the trail cannot be fully verified.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Data owner: show what ran on your data, for whom, when, and what left."""
    from syft_flwr.data_owner.audit import audit_entries, format_audit, verify_audit

    client = client_for(config)
    report = verify_audit(client)
    if verify:
        if json_:
            print_json(dataclasses.asdict(report))
        else:
            print(report.summary())
        code = {"tampered": 1, "unverifiable": 3}.get(report.status, 0)
        if code:
            raise typer.Exit(code)
        return
    entries = audit_entries(client, since=_parse_since(since))
    if json_:
        print_json(entries)
        return
    print(format_audit(entries) if entries else "no audit events yet")
    if report.status in ("tampered", "unverifiable"):
        # The table is shown either way (it is what is there), and the warning
        # after it, on both streams, so a data owner cannot miss it.
        print(report.summary())
        print(f"syft_flwr audit: {report.summary()}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add ``audit`` to the ``syft_flwr`` app."""
    app.command()(audit)
