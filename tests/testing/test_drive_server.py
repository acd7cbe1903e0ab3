"""Tests of the loopback Drive v3 server, driven only through the real googleapiclient."""

from __future__ import annotations

import hashlib
import http.client
import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.exceptions import RefreshError
from googleapiclient.discovery import build, build_from_document
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload, MediaIoBaseUpload, build_http

from syft_flwr.testing.drive_server import FOLDER_MIME, FakeDriveServer

pytestmark = pytest.mark.gdrive

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.org"
KIB256 = 256 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def drive(clock: FakeClock) -> Iterator[FakeDriveServer]:
    with FakeDriveServer(clock=clock) as server:
        yield server


@pytest.fixture
def alice(drive: FakeDriveServer) -> Any:
    return drive.service(ALICE)


@pytest.fixture
def bob(drive: FakeDriveServer) -> Any:
    return drive.service(BOB)


@pytest.fixture
def carol(drive: FakeDriveServer) -> Any:
    return drive.service(CAROL)


def no_sleep(request: Any) -> Any:
    """Make googleapiclient's own retries instant."""
    request._sleep = lambda _s: None
    return request


def mkdir(svc: Any, name: str, parent: str | None = None) -> str:
    body: dict[str, Any] = {"name": name, "mimeType": FOLDER_MIME}
    if parent:
        body["parents"] = [parent]
    return svc.files().create(body=body, fields="id").execute()["id"]


def upload(
    svc: Any,
    name: str,
    data: bytes,
    parent: str | None = None,
    *,
    resumable: bool = False,
    chunksize: int = KIB256,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if parent:
        body["parents"] = [parent]
    media = MediaIoBaseUpload(
        io.BytesIO(data),
        "application/octet-stream",
        chunksize=chunksize,
        resumable=resumable,
    )
    return (
        svc.files()
        .create(body=body, media_body=media, fields="id,name,size,md5Checksum,parents")
        .execute()
    )


def download(svc: Any, file_id: str, chunksize: int = 1024 * 1024) -> tuple[bytes, int]:
    buf = io.BytesIO()
    loader = MediaIoBaseDownload(
        buf, svc.files().get_media(fileId=file_id), chunksize=chunksize
    )
    done, chunks = False, 0
    while not done:
        _, done = loader.next_chunk()
        chunks += 1
    return buf.getvalue(), chunks


def share(svc: Any, file_id: str, email: str, role: str = "writer") -> dict[str, Any]:
    return (
        svc.permissions()
        .create(
            fileId=file_id,
            body={"type": "user", "role": role, "emailAddress": email},
            sendNotificationEmail=False,
        )
        .execute()
    )


def names(svc: Any, q: str, **kw: Any) -> list[str]:
    res = svc.files().list(q=q, fields="files(name),nextPageToken", **kw).execute()
    return sorted(f["name"] for f in res["files"])


def reason_of(exc: HttpError) -> str:
    return exc.error_details[0]["reason"]


# -- identity ---------------------------------------------------------------------------


def test_about_reports_the_bearer_identity(alice: Any) -> None:
    about = alice.about().get(fields="user(emailAddress,me)").execute()
    assert about == {"user": {"emailAddress": ALICE, "me": True}}


def test_missing_token_is_401(drive: FakeDriveServer) -> None:
    anon = build_from_document(drive.discovery_document(), http=build_http())
    with pytest.raises(HttpError) as info:
        anon.files().list().execute()
    assert info.value.status_code == 401


def test_bad_token_cannot_refresh(drive: FakeDriveServer) -> None:
    from google.oauth2.credentials import Credentials
    from google_auth_httplib2 import AuthorizedHttp

    http = AuthorizedHttp(Credentials(token="not-a-fake-token"), http=build_http())
    svc = build_from_document(drive.discovery_document(), http=http)
    with pytest.raises(RefreshError):
        svc.files().list().execute()


def test_discovery_endpoint_serves_a_rerooted_document(drive: FakeDriveServer) -> None:
    from google.oauth2.credentials import Credentials

    svc = build(
        "drive",
        "v3",
        credentials=Credentials(token=f"fake:{ALICE}"),
        discoveryServiceUrl=drive.url + "discovery/v1/apis/{api}/{apiVersion}/rest",
        static_discovery=False,
        cache_discovery=False,
    )
    assert svc.about().get(fields="user/emailAddress").execute()["user"] == {
        "emailAddress": ALICE
    }


def test_expired_token_refreshes_against_token_endpoint(drive: FakeDriveServer) -> None:
    from google.oauth2.credentials import Credentials
    from google_auth_httplib2 import AuthorizedHttp

    info = drive.authorized_user_info(BOB)
    # google-auth >= 2.5x pins token_uri to Google in from_authorized_user_info, so
    # build the credentials directly. The server answers 401 to the stale token and
    # AuthorizedHttp refreshes against the fake's /token endpoint.
    creds = Credentials(
        token="expired",
        refresh_token=info["refresh_token"],
        token_uri=info["token_uri"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    svc = build_from_document(
        drive.discovery_document(), http=AuthorizedHttp(creds, http=build_http())
    )
    assert svc.about().get(fields="user").execute()["user"]["emailAddress"] == BOB
    assert creds.token == f"fake:{BOB}"
    assert drive.count("oauth.token") == 1


# -- uploads and downloads -------------------------------------------------------------------


def test_simple_media_upload_without_metadata(
    alice: Any, drive: FakeDriveServer
) -> None:
    media = MediaIoBaseUpload(io.BytesIO(b"hello"), "text/plain")
    res = (
        alice.files().create(media_body=media, fields="id,name,mimeType,size").execute()
    )
    assert res["name"] == "Untitled"
    assert res["mimeType"] == "text/plain"
    assert res["size"] == "5"
    assert download(alice, res["id"])[0] == b"hello"


def test_multipart_upload_is_binary_safe(alice: Any) -> None:
    data = bytes(range(256)) * 64 + b"\r\n--not-a-boundary\r\n\n\r"
    res = upload(alice, "bin.dat", data)
    assert res["size"] == str(len(data))
    assert res["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert download(alice, res["id"])[0] == data


def test_resumable_upload_in_several_chunks(alice: Any, drive: FakeDriveServer) -> None:
    data = bytes(i % 251 for i in range(5 * 1024 * 1024 + 12345))
    res = upload(alice, "big.bin", data, resumable=True, chunksize=KIB256 * 4)
    assert res["size"] == str(len(data))
    # 1 session start + ceil(size / 1 MiB) PUTs.
    assert drive.count("files.create") == 1
    assert drive.count("upload.put") == 6
    got, chunks = download(alice, res["id"], chunksize=2 * 1024 * 1024)
    assert got == data
    assert chunks == 3


def test_resumable_empty_file_is_one_put(alice: Any, drive: FakeDriveServer) -> None:
    res = upload(alice, "empty.bin", b"", resumable=True)
    assert res["size"] == "0"
    assert drive.count("upload.put") == 1
    assert download(alice, res["id"])[0] == b""


def test_misaligned_chunk_is_rejected(alice: Any) -> None:
    data = b"x" * (KIB256 + 10)
    with pytest.raises(HttpError) as info:
        upload(alice, "bad.bin", data, resumable=True, chunksize=1000)
    assert info.value.status_code == 400


def test_resumable_upload_resumes_after_a_failed_chunk(
    alice: Any, drive: FakeDriveServer
) -> None:
    data = bytes(i % 13 for i in range(3 * KIB256 + 7))
    media = MediaIoBaseUpload(
        io.BytesIO(data), "application/octet-stream", chunksize=KIB256, resumable=True
    )
    request = alice.files().create(
        body={"name": "r.bin"}, media_body=media, fields="id,size"
    )
    status, body = request.next_chunk()  # session start + first chunk
    assert body is None and status.resumable_progress == KIB256
    drive.inject_faults([(503, None)], methods=["upload.put"])
    with pytest.raises(HttpError):
        request.next_chunk()
    body = None
    while body is None:  # the client asks "bytes */N" first, then resumes
        _, body = request.next_chunk()
    assert body["size"] == str(len(data))
    assert download(alice, body["id"])[0] == data


def test_ranged_download_and_empty_file(alice: Any) -> None:
    res = upload(alice, "ten.txt", b"0123456789")
    got, chunks = download(alice, res["id"], chunksize=3)
    assert got == b"0123456789"
    assert chunks == 4
    empty = upload(alice, "empty.txt", b"")
    assert download(alice, empty["id"], chunksize=3) == (b"", 1)


def test_folder_is_not_downloadable(alice: Any) -> None:
    folder = mkdir(alice, "f")
    with pytest.raises(HttpError) as info:
        download(alice, folder)
    assert info.value.status_code == 403


# -- metadata, fields, update -------------------------------------------------------------------


def test_fields_masks_select_nested_values(alice: Any) -> None:
    res = upload(alice, "a.txt", b"a")
    got = (
        alice.files().get(fileId=res["id"], fields="id,owners(emailAddress)").execute()
    )
    assert got == {"id": res["id"], "owners": [{"emailAddress": ALICE}]}
    listed = alice.files().list(fields="files/name").execute()
    assert listed == {"files": [{"name": "a.txt"}]}
    default = alice.files().get(fileId=res["id"]).execute()
    assert set(default) == {"kind", "id", "name", "mimeType"}


def test_unknown_field_selection_is_400(alice: Any) -> None:
    with pytest.raises(HttpError) as info:
        alice.files().list(fields="files(id,nosuchfield)").execute()
    assert info.value.status_code == 400


def test_update_renames_moves_and_replaces_content(alice: Any) -> None:
    src, dst = mkdir(alice, "src"), mkdir(alice, "dst")
    res = upload(alice, "f.txt", b"old", src)
    before = (
        alice.files().get(fileId=res["id"], fields="version,modifiedTime").execute()
    )
    media = MediaIoBaseUpload(io.BytesIO(b"new content"), "text/plain")
    alice.files().update(fileId=res["id"], media_body=media).execute()
    moved = (
        alice.files()
        .update(
            fileId=res["id"],
            body={"name": "g.txt"},
            addParents=dst,
            removeParents=src,
            fields="name,parents,version,modifiedTime,size",
        )
        .execute()
    )
    assert moved["name"] == "g.txt"
    assert moved["parents"] == [dst]
    assert moved["size"] == str(len(b"new content"))
    assert int(moved["version"]) > int(before["version"])
    assert moved["modifiedTime"] > before["modifiedTime"]
    assert download(alice, res["id"])[0] == b"new content"


def test_parents_are_not_writable_and_single_parent(alice: Any) -> None:
    a, b = mkdir(alice, "a"), mkdir(alice, "b")
    res = upload(alice, "f", b"x", a)
    with pytest.raises(HttpError) as info:
        alice.files().update(fileId=res["id"], body={"parents": [b]}).execute()
    assert reason_of(info.value) == "fieldNotWritable"
    with pytest.raises(HttpError) as info:
        alice.files().update(fileId=res["id"], addParents=b).execute()
    assert reason_of(info.value) == "cannotAddParent"


# -- sharing, visibility, ownership --------------------------------------------------------------


def test_sharing_makes_folder_contents_visible_to_that_user_only(
    alice: Any, bob: Any, carol: Any
) -> None:
    folder = mkdir(alice, "out")
    inner = mkdir(alice, "deeper", folder)
    f = upload(alice, "x.request", b"payload", inner)
    assert names(bob, "trashed = false") == []
    share(alice, folder, BOB)
    assert names(bob, "trashed = false") == ["deeper", "out", "x.request"]
    assert names(bob, "sharedWithMe") == ["out"]  # inherited access is not "shared"
    assert download(bob, f["id"])[0] == b"payload"
    assert names(carol, "trashed = false") == []
    with pytest.raises(HttpError) as info:
        carol.files().get(fileId=f["id"]).execute()
    assert info.value.status_code == 404


def test_permissions_list_and_delete_revoke_access(alice: Any, bob: Any) -> None:
    folder = mkdir(alice, "out")
    perm = share(alice, folder, BOB, role="reader")
    listed = alice.permissions().list(
        fileId=folder, fields="permissions(id,role,emailAddress)"
    )
    roles = {p["emailAddress"]: p["role"] for p in listed.execute()["permissions"]}
    assert roles == {ALICE: "owner", BOB: "reader"}
    with pytest.raises(HttpError) as info:  # a reader cannot add children
        upload(bob, "nope", b"x", folder)
    assert reason_of(info.value) == "insufficientFilePermissions"
    alice.permissions().delete(fileId=folder, permissionId=perm["id"]).execute()
    with pytest.raises(HttpError) as info:
        bob.files().get(fileId=folder).execute()
    assert info.value.status_code == 404


def test_only_the_owner_can_delete(alice: Any, bob: Any) -> None:
    folder = mkdir(alice, "shared")
    share(alice, folder, BOB)
    mine = upload(alice, "alice.txt", b"a", folder)
    with pytest.raises(HttpError) as info:
        bob.files().delete(fileId=mine["id"]).execute()
    assert info.value.status_code == 403
    assert reason_of(info.value) == "insufficientFilePermissions"
    bobs = upload(bob, "bob.txt", b"b", folder)
    with pytest.raises(HttpError):
        alice.files().delete(
            fileId=bobs["id"]
        ).execute()  # owning the folder is not enough
    # Deleting the folder deletes alice's descendants and orphans bob's file.
    alice.files().delete(fileId=folder).execute()
    with pytest.raises(HttpError):
        alice.files().get(fileId=mine["id"]).execute()
    orphan = bob.files().get(fileId=bobs["id"], fields="id,parents").execute()
    assert orphan == {"id": bobs["id"], "parents": []}


def test_files_of_reports_owned_files(alice: Any, drive: FakeDriveServer) -> None:
    folder = mkdir(alice, "f")
    upload(alice, "a", b"abc", folder)
    owned = {f["name"]: f for f in drive.files_of(ALICE)}
    assert set(owned) == {"f", "a"}
    assert owned["a"]["parents"] == [folder]
    assert owned["a"]["size"] == 3
    assert drive.files_of(BOB) == []


# -- search -----------------------------------------------------------------------------------


def test_contains_is_token_prefix_not_substring(alice: Any) -> None:
    for name in (
        "HelloWorld",
        "hello_world.txt",
        "syft#v1#bob.smith@x.org#to#amy@y.com",
    ):
        upload(alice, name, b"")
    assert names(alice, "name contains 'Hello'") == ["HelloWorld", "hello_world.txt"]
    assert names(alice, "name contains 'hello'") == ["HelloWorld", "hello_world.txt"]
    assert names(alice, "name contains 'World'") == ["hello_world.txt"]
    assert names(alice, "name contains 'ello'") == []
    # Every query token must prefix some name token, in any order.
    assert names(alice, "name contains 'amy@y.com#to#bob'") == [
        "syft#v1#bob.smith@x.org#to#amy@y.com"
    ]
    # Token collision: "bob@x.org" matches bob.smith@x.org's name too.
    assert names(alice, "name contains 'bob@x.org'") == [
        "syft#v1#bob.smith@x.org#to#amy@y.com"
    ]
    assert names(alice, "name contains 'bobby'") == []


def test_query_operators_and_escapes(alice: Any) -> None:
    folder = mkdir(alice, "dir")
    upload(alice, "it's.txt", b"", folder)
    upload(alice, "back\\slash", b"", folder)
    upload(alice, "b.request", b"", folder)
    assert names(alice, r"name = 'it\'s.txt'") == ["it's.txt"]
    assert names(alice, r"name = 'back\\slash'") == ["back\\slash"]
    q = f"'{folder}' in parents and not (name = 'b.request' or name contains 'back')"
    assert names(alice, q) == ["it's.txt"]
    q = f"mimeType != '{FOLDER_MIME}' and 'me' in owners and trashed = false"
    assert len(names(alice, q)) == 3
    assert names(alice, "'root' in parents") == ["dir"]
    assert names(alice, f"mimeType = '{FOLDER_MIME}'") == ["dir"]


def test_trash_and_role_collections(alice: Any, bob: Any) -> None:
    folder = mkdir(alice, "box")
    inner = upload(alice, "inner.txt", b"", folder)
    share(alice, folder, BOB, role="reader")
    assert names(alice, f"'{BOB}' in readers and not '{BOB}' in writers") == [
        "box",
        "inner.txt",
    ]
    assert names(bob, "'me' in writers") == []
    with pytest.raises(HttpError) as info:  # only the owner may trash
        bob.files().update(fileId=folder, body={"trashed": True}).execute()
    assert info.value.status_code in (403, 404)
    alice.files().update(fileId=folder, body={"trashed": True}).execute()
    assert names(alice, "trashed = false") == []  # descendants are trashed too
    assert names(alice, "trashed = true") == ["box", "inner.txt"]
    got = alice.files().get(fileId=inner["id"], fields="trashed,explicitlyTrashed")
    assert got.execute() == {"trashed": True, "explicitlyTrashed": False}
    alice.files().emptyTrash().execute()
    assert alice.files().list(fields="files(id)").execute() == {"files": []}


def test_modified_time_comparisons(alice: Any) -> None:
    first = upload(alice, "first", b"")
    stamp = alice.files().get(fileId=first["id"], fields="modifiedTime").execute()
    upload(alice, "second", b"")
    assert names(alice, f"modifiedTime > '{stamp['modifiedTime']}'") == ["second"]
    assert names(alice, f"modifiedTime <= '{stamp['modifiedTime']}'") == ["first"]


@pytest.mark.parametrize(
    "q",
    [
        "name = ",
        "name = 'x' and",
        "(name = 'x'",
        "bogus = 'x'",
        "name ~ 'x'",
        "'x' in nothing",
    ],
)
def test_query_syntax_errors_are_400_invalid(alice: Any, q: str) -> None:
    with pytest.raises(HttpError) as info:
        alice.files().list(q=q).execute()
    assert info.value.status_code == 400
    assert reason_of(info.value) == "invalid"


def test_paging_across_pages(alice: Any) -> None:
    folder = mkdir(alice, "many")
    for i in range(23):
        alice.files().create(body={"name": f"f{i:02d}", "parents": [folder]}).execute()
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        res = (
            alice.files()
            .list(
                q=f"'{folder}' in parents",
                pageSize=7,
                pageToken=token,
                orderBy="name desc",
                fields="nextPageToken,files(name)",
            )
            .execute()
        )
        seen += [f["name"] for f in res["files"]]
        pages += 1
        token = res.get("nextPageToken")
        if not token:
            break
    assert pages == 4
    assert seen == [f"f{i:02d}" for i in reversed(range(23))]


def test_default_page_size_is_100(alice: Any) -> None:
    folder = mkdir(alice, "lots")
    batch = alice.new_batch_http_request()
    for i in range(100):
        batch.add(alice.files().create(body={"name": f"n{i}", "parents": [folder]}))
    batch.execute()
    alice.files().create(body={"name": "last", "parents": [folder]}).execute()
    res = alice.files().list(q=f"'{folder}' in parents").execute()
    assert len(res["files"]) == 100
    rest = alice.files().list(
        q=f"'{folder}' in parents", pageToken=res["nextPageToken"]
    )
    assert [f["name"] for f in rest.execute()["files"]] == ["last"]


def test_long_query_uses_post_override(alice: Any, drive: FakeDriveServer) -> None:
    target = mkdir(alice, "target")
    upload(alice, "hit", b"", target)
    q = (
        " or ".join(f"'{i:040d}' in parents" for i in range(60))
        + f" or '{target}' in parents"
    )
    assert len(q) > 2048
    assert names(alice, q) == ["hit"]
    assert drive.count("files.list") == 1


def test_name_index_lag_hides_only_name_queries(
    clock: FakeClock, drive: FakeDriveServer, alice: Any
) -> None:
    drive.name_index_delay = 5.0
    folder = mkdir(alice, "inbox")
    res = upload(alice, "fresh.request", b"", folder)
    assert names(alice, "name = 'fresh.request'") == []
    assert names(alice, "name contains 'fresh'") == []
    assert names(alice, f"'{folder}' in parents") == ["fresh.request"]
    assert names(alice, f"name = 'fresh.request' and '{folder}' in parents") == [
        "fresh.request"
    ]
    assert alice.files().get(fileId=res["id"]).execute()["name"] == "fresh.request"
    clock.now += 5.1
    assert names(alice, "name = 'fresh.request'") == ["fresh.request"]


# -- changes --------------------------------------------------------------------------------------


def changes_since(svc: Any, token: str, **kw: Any) -> tuple[list[dict[str, Any]], str]:
    out: list[dict[str, Any]] = []
    while True:
        res = (
            svc.changes()
            .list(
                pageToken=token,
                fields="nextPageToken,newStartPageToken,changes(fileId,removed,file(name,parents))",
                **kw,
            )
            .execute()
        )
        out += res["changes"]
        if "newStartPageToken" in res:
            return out, res["newStartPageToken"]
        token = res["nextPageToken"]


def test_changes_report_creates_and_deletes_to_sharees_only(
    alice: Any, bob: Any, carol: Any
) -> None:
    folder = mkdir(alice, "out")
    share(alice, folder, BOB)
    bob_token = bob.changes().getStartPageToken().execute()["startPageToken"]
    carol_token = carol.changes().getStartPageToken().execute()["startPageToken"]
    f = upload(alice, "m.request", b"x", folder)
    changes, bob_token = changes_since(bob, bob_token)
    assert [(c["fileId"], c["removed"], c["file"]["name"]) for c in changes] == [
        (f["id"], False, "m.request")
    ]
    assert changes[0]["file"]["parents"] == [folder]
    alice.files().delete(fileId=f["id"]).execute()
    changes, bob_token = changes_since(bob, bob_token)
    assert changes == [{"fileId": f["id"], "removed": True}]
    assert changes_since(bob, bob_token)[0] == []
    assert changes_since(carol, carol_token)[0] == []


def test_changes_paging_and_collapsing(alice: Any) -> None:
    token = alice.changes().getStartPageToken().execute()["startPageToken"]
    ids = [upload(alice, f"c{i}", b"")["id"] for i in range(5)]
    alice.files().update(fileId=ids[0], body={"name": "c0-renamed"}).execute()
    changes, _ = changes_since(alice, token, pageSize=2)
    # Two changes to c0 collapse into the latest one, which sorts last.
    assert [c["fileId"] for c in changes] == ids[1:] + ids[:1]
    assert changes[-1]["file"]["name"] == "c0-renamed"


def test_sharing_a_folder_shows_up_as_a_change(alice: Any, bob: Any) -> None:
    folder = mkdir(alice, "out")
    upload(alice, "old.request", b"", folder)
    token = bob.changes().getStartPageToken().execute()["startPageToken"]
    share(alice, folder, BOB)
    changes, _ = changes_since(bob, token)
    assert sorted(c["file"]["name"] for c in changes) == ["old.request", "out"]


def test_changes_list_requires_page_token(alice: Any) -> None:
    with pytest.raises(HttpError) as info:
        alice.changes().list(pageToken="").execute()
    assert info.value.status_code == 400


# -- batch ------------------------------------------------------------------------------------------


def test_batch_delete(alice: Any, drive: FakeDriveServer) -> None:
    ids = [upload(alice, f"d{i}", b"")["id"] for i in range(3)]
    results: dict[str, int | None] = {}

    def callback(request_id: str, response: Any, exc: HttpError | None) -> None:
        results[request_id] = exc.status_code if exc else None

    batch = alice.new_batch_http_request(callback=callback)
    for file_id in [*ids, "missing"]:
        batch.add(alice.files().delete(fileId=file_id))
    batch.execute()
    assert results == {"1": None, "2": None, "3": None, "4": 404}
    assert drive.files_of(ALICE) == []
    assert drive.count("batch") == 1
    assert drive.count("files.delete") == 4


# -- faults -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, None), (500, None), (503, None), (403, "rateLimitExceeded")],
)
def test_injected_faults_surface_then_retries_succeed(
    alice: Any, drive: FakeDriveServer, status: int, reason: str | None
) -> None:
    drive.inject_faults([(status, reason)])
    with pytest.raises(HttpError) as info:
        alice.files().list().execute()
    assert info.value.status_code == status
    drive.fault_storm(status, 3, reason=reason)
    res = no_sleep(alice.files().list(fields="files(id)")).execute(num_retries=3)
    assert res == {"files": []}
    assert drive.pending_faults == 0
    assert drive.count("files.list") == 5


def test_faults_can_target_one_method(alice: Any, drive: FakeDriveServer) -> None:
    drive.inject_faults([(500, None)], methods=["changes.list"])
    alice.files().list().execute()  # untouched
    assert drive.pending_faults == 1
    token = alice.changes().getStartPageToken().execute()["startPageToken"]
    with pytest.raises(HttpError):
        alice.changes().list(pageToken=token).execute()
    drive.fault_storm(500, 4)
    drive.clear_faults()
    assert alice.files().list().execute()["files"] == []


def test_dropped_connection(alice: Any, drive: FakeDriveServer) -> None:
    alice.files().list().execute()  # open a keep-alive connection
    # httplib2 silently resends once on a stale keep-alive socket: drop twice to see it.
    drive.inject_faults([(0, "drop"), (0, "drop")])
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        alice.files().list().execute()
    drive.inject_faults([(0, "reset")])
    with pytest.raises(ConnectionError):
        alice.files().list().execute()
    drive.inject_faults([(0, "drop"), (0, "drop")])
    assert no_sleep(alice.files().list()).execute(num_retries=2)["files"] == []


# -- HTTP behaviour ----------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(alice: Any, drive: FakeDriveServer) -> None:
    folder = mkdir(alice, "k")
    for i in range(5):
        res = upload(alice, f"k{i}", b"abc", folder, resumable=True)
        alice.files().delete(fileId=res["id"]).execute()  # 204 with Content-Length: 0
    alice.files().list().execute()
    assert drive.connections_opened == 1


def test_concurrent_users_from_threads(drive: FakeDriveServer) -> None:
    owner = drive.service(ALICE)
    folder = mkdir(owner, "shared")
    users = [f"user{i}@example.com" for i in range(4)]
    for user in users:
        share(owner, folder, user)
    errors: list[BaseException] = []

    def work(user: str) -> None:
        try:
            svc = drive.service(user)  # one service (one httplib2.Http) per thread
            for i in range(15):
                upload(svc, f"{user}-{i}", user.encode(), folder, resumable=i % 2 == 0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    listed = names(owner, f"'{folder}' in parents", pageSize=1000)
    assert len(listed) == 60
    assert {f["name"] for f in drive.files_of(users[0])} == {
        f"{users[0]}-{i}" for i in range(15)
    }


# -- exactly-once creates and lost responses ---------------------------------------------------


def test_generated_ids_make_a_repeated_create_conflict(
    alice: Any, drive: FakeDriveServer
) -> None:
    got = alice.files().generateIds(count=3, space="drive").execute()
    assert got["kind"] == "drive#generatedIds" and len(set(got["ids"])) == 3
    fid = got["ids"][0]
    body = {"id": fid, "name": "once.request"}
    assert alice.files().create(body=body, fields="id").execute()["id"] == fid
    with pytest.raises(HttpError) as info:
        alice.files().create(body=body, fields="id").execute()
    assert info.value.status_code == 409 and reason_of(info.value) == "duplicate"
    assert [f["name"] for f in drive.files_of("alice@example.com")].count(
        "once.request"
    ) == 1
    with pytest.raises(HttpError) as bad:  # an id Drive never handed out
        alice.files().create(body={"id": "1madeup", "name": "x"}).execute()
    assert bad.value.status_code == 400


def test_lost_response_fault_applies_the_request(
    alice: Any, drive: FakeDriveServer
) -> None:
    alice.files().list().execute()  # a keep-alive connection to lose
    # Two: httplib2 silently re-sends once on a dropped connection.
    drive.inject_faults([(0, "lost"), (0, "lost")], methods=["files.create"])
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        alice.files().create(body={"name": "ghost"}).execute()
    # Both sends took effect although neither answer arrived: the duplicate
    # that ids from generateIds prevent.
    names_now = [f["name"] for f in drive.files_of("alice@example.com")]
    assert names_now.count("ghost") == 2


def test_strict_name_lag_also_hides_parent_scoped_name_queries(
    clock: FakeClock, alice: Any
) -> None:
    with FakeDriveServer(
        name_index_delay=5.0, name_lag_with_parents=True, clock=clock
    ) as strict:
        svc = strict.service("alice@example.com")
        folder = mkdir(svc, "inbox")
        upload(svc, "fresh.request", b"", folder)
        q = f"name = 'fresh.request' and '{folder}' in parents"
        assert names(svc, q) == []
        assert names(svc, f"'{folder}' in parents") == ["fresh.request"]
        clock.now += 5.1
        assert names(svc, q) == ["fresh.request"]
        assert strict.requests_by("alice@example.com") >= 5
