"""Run an example in one process over syft_flwr's in-memory network.

    python examples/run_local.py fedavg_tabular [--data-owners 2] [--run-config "num-server-rounds=3"]

The researcher's ServerApp runs in the main thread through a ``SyftGrid``; each
data owner serves the ClientApp in a background thread through
``run_data_owner``. All messages go through the same envelope, end-to-end
encryption and events code as over SyftBox or Google Drive; only the transport
is an in-memory hub. Data owner ``i`` gets ``partition-id=i``.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Context

from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.runner import run_data_owner
from syft_flwr.project import load_component, load_project, parse_run_config
from syft_flwr.researcher.runner import run_researcher
from syft_flwr.transports.memory import MemoryHub

EXAMPLES_DIR = Path(__file__).resolve().parent


@dataclass
class LocalRun:
    """What a local run left behind, for assertions."""

    context: Context
    handlers: list[ClientAppHandler | None]
    threads: list[threading.Thread]
    errors: list[BaseException] = field(default_factory=list)
    seconds: float = 0.0


def _wait_for_keys(hub: MemoryHub, emails: list[str], timeout: float) -> None:
    """Wait until every data owner has published its public keys (encryption)."""
    deadline = time.monotonic() + timeout
    keys = {f"{e}/public/did.json" for e in emails}
    while not keys <= hub.snapshot().keys():
        if time.monotonic() > deadline:
            missing = sorted(keys - hub.snapshot().keys())
            raise TimeoutError(f"data owners did not start: {missing}")
        time.sleep(0.01)


def run_local(
    example: str | Path,
    *,
    data_owners: list[str] | None = None,
    run_config: dict[str, Any] | None = None,
    overrides: str | None = None,
    settings: Settings | None = None,
    join_timeout: float = 30.0,
) -> LocalRun:
    """Run ``example`` (a folder name under ``examples/`` or a path) locally.

    Parameters
    ----------
    example:
        ``"fedavg_tabular"`` or the path of a Flower app folder.
    data_owners:
        Emails of the data owners (default: ``[tool.syft_flwr] datasites``).
    run_config:
        Replaces the app's ``[tool.flwr.app.config]`` (then ``overrides`` apply).
    overrides:
        ``--run-config`` style overrides, e.g. ``"num-server-rounds=2"``.
    settings:
        syft_flwr settings for every party (default: encryption on).
    join_timeout:
        Seconds to wait for each data owner to exit after the stop signal.
    """
    app_dir = Path(example)
    if not app_dir.is_dir():
        app_dir = EXAMPLES_DIR / str(example)
    cfg = load_project(app_dir)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    client_app = load_component(cfg.clientapp, cfg.app_dir)
    rc = parse_run_config(
        cfg.app_config if run_config is None else run_config, overrides
    )
    emails = list(data_owners or cfg.datasites)
    researcher = cfg.aggregator or "researcher@example.org"
    settings = settings or Settings(encryption_enabled=True)
    hub = MemoryHub()
    handlers: list[ClientAppHandler | None] = [None] * len(emails)
    errors: list[BaseException] = []

    def serve(i: int, email: str) -> None:
        try:
            handlers[i] = run_data_owner(
                client_app,
                cfg.flwr_app_name,
                client=MemoryClient(email, hub),
                aggregators=[researcher],
                run_config=rc,
                node_config={"partition-id": i, "num-partitions": len(emails)},
                settings=settings,
            )
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    threads = [
        threading.Thread(target=serve, args=(i, e), name=f"do-{e}", daemon=True)
        for i, e in enumerate(emails)
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    _wait_for_keys(hub, emails, timeout=join_timeout)
    context = run_researcher(
        server_app,
        cfg.flwr_app_name,
        emails,
        client=MemoryClient(researcher, hub),
        run_config=rc,
        settings=settings,
    )
    for t in threads:
        t.join(timeout=join_timeout)
    return LocalRun(context, handlers, threads, errors, time.monotonic() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Run an example over the in-memory network."
    )
    p.add_argument("example", help="folder under examples/, e.g. fedavg_tabular")
    p.add_argument("--data-owners", type=int, default=None)
    p.add_argument("--run-config", default=None)
    args = p.parse_args(argv)
    owners = (
        None
        if args.data_owners is None
        else [f"do{i + 1}@example.org" for i in range(args.data_owners)]
    )
    run = run_local(args.example, data_owners=owners, overrides=args.run_config)
    alive = [t.name for t in run.threads if t.is_alive()]
    print(
        f"finished in {run.seconds:.1f} s; data owners still running: {alive or 'none'}"
    )


if __name__ == "__main__":
    main()
