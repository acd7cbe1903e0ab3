"""The audit trail as a plain-text table (``syft_flwr audit``)."""

from __future__ import annotations

from typing import Any

from syft_flwr._printable import printable

__all__ = ["format_audit"]


def format_audit(entries: list[dict[str, Any]]) -> str:
    """A plain-text table of audit events (no colour codes)."""
    import datetime as _dt

    rows = [("time (UTC)", "event", "app", "researcher", "details")]
    for e in entries:
        ts = _dt.datetime.fromtimestamp(float(e.get("ts", 0)), tz=_dt.UTC)
        details = []
        if e.get("event") == "run":
            details.append(f"{e.get('message_type', '?')} {e.get('group', '')}".strip())
            details.append(f"{float(e.get('end', 0)) - float(e.get('start', 0)):.2f} s")
            details.append(str(e.get("outcome", e.get("status", ""))))
        elif e.get("event") == "refused" and e.get("count"):
            # A flood, aggregated (events.refusals): one row for the rest.
            since = _dt.datetime.fromtimestamp(float(e.get("since", 0)), tz=_dt.UTC)
            details.append(
                f"{e['count']} more refusal(s) in {e.get('folder', '?')} since "
                f"{since:%Y-%m-%d %H:%M:%S}; last {e.get('status')}: "
                f"{e.get('reason', '')}"
            )
        elif e.get("event") == "refused":
            details.append(f"{e.get('status')}: {e.get('reason', '')}")
        elif e.get("event") == "head_lost":
            details.append(
                "the trail's head was missing or changed when the data owner "
                "started: lines cut off before this one cannot be ruled out"
            )
        elif e.get("event") in ("received", "replied"):
            details.append(f"{e.get('bytes', 0)} bytes")
            if e.get("status") is not None:
                details.append(f"status {e.get('status')}")
            if e.get("fingerprint"):
                details.append(f"key {str(e['fingerprint'])[:16]}")
        # Every cell is escaped: message types, group ids, reasons and names
        # come from researchers and must not drive the terminal.
        rows.append(
            (
                ts.strftime("%Y-%m-%d %H:%M:%S"),
                printable(e.get("event", "")),
                printable(e.get("app", "")),
                printable(e.get("sender", "")),
                printable(", ".join(d for d in details if d)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
