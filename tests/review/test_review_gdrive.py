"""The review flow over Google Drive (the loopback Drive-compatible server)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _support import wait_until

from syft_flwr.client import SyftP2PClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import load_or_create_keys
from syft_flwr.review import api
from syft_flwr.testing.drive_server import FakeDriveServer
from syft_flwr.transports.gdrive import GDriveTransport

pytestmark = pytest.mark.gdrive

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
DS, DO = "ds@example.org", "do@example.org"
S = Settings(poll_interval=0.5)


def _client(server: FakeDriveServer, email: str, tmp: Path) -> SyftP2PClient:
    def factory() -> GDriveTransport:
        return GDriveTransport(email, lambda: server.service(email), poll_interval=0.5)

    return SyftP2PClient(email, transport_factory=factory, state_root=tmp / email)


def test_submit_and_reject_over_drive(tmp_path: Path):
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app)
    with FakeDriveServer() as server:
        researcher = _client(server, DS, tmp_path)
        owner = _client(server, DO, tmp_path)
        r_tr, do_tr = researcher.make_transport(), owner.make_transport()
        try:
            load_or_create_keys(owner, do_tr)
            api.receive_projects(owner, transport=do_tr, settings=S, researchers=[DS])
            [sub] = api.submit(app, [DO], client=researcher, transport=r_tr, settings=S)
            # Drive finds a newly shared channel folder at most once a second
            [rec] = wait_until(
                lambda: api.receive_projects(owner, transport=do_tr, settings=S),
                message="the submission on the data owner's side",
            )
            assert rec.project_hash == sub.project_hash and rec.researcher == DS
            api.reject(owner, rec.short, "no network calls, please", transport=do_tr)
            [st] = wait_until(
                lambda: [
                    s
                    for s in api.submission_status(
                        researcher, transport=r_tr, settings=S
                    )
                    if s.status != "pending"
                ],
                message="the decision on the researcher's side",
            )
            assert (st.status, st.reason) == ("rejected", "no network calls, please")
        finally:
            r_tr.close()
            do_tr.close()
