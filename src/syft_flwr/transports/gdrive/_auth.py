"""Credentials: OAuth token files, service accounts, and Drive-compatible servers."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syft_flwr.errors import ConfigError

__all__ = ["DRIVE_SCOPES", "rerooted_drive_discovery"]

DRIVE_SCOPES = ("https://www.googleapis.com/auth/drive",)


def rerooted_drive_discovery(root_url: str) -> str:
    """Return googleapiclient's shipped Drive v3 discovery doc pointed at ``root_url``.

    ``client_options={"api_endpoint": ...}`` alone is not enough: media uploads
    keep ``https`` and batches keep Google's host. Re-rooting ``rootUrl``,
    ``mtlsRootUrl`` and ``baseUrl`` moves every call.
    """
    import googleapiclient.discovery as discovery

    path = (
        Path(discovery.__file__).parent
        / "discovery_cache"
        / "documents"
        / "drive.v3.json"
    )
    doc = json.loads(path.read_text(encoding="utf-8"))
    root = root_url if root_url.endswith("/") else root_url + "/"
    doc.update(rootUrl=root, mtlsRootUrl=root, baseUrl=root + "drive/v3/")
    return json.dumps(doc)


class _PersistingCredentialsMixin:
    """Writes refreshed OAuth tokens back to their file (mode 0600)."""

    _syft_path: Path | None = None
    _syft_lock = threading.Lock()

    def refresh(self, request: Any) -> None:
        with self._syft_lock:
            super().refresh(request)  # type: ignore[misc]
            if self._syft_path is not None:
                _write_private(self._syft_path, self.to_json())  # type: ignore[attr-defined]


def _write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, readable by the owner only."""
    # mkstemp creates the file with mode 0600, so the token is never world-readable.
    fd, tmp = tempfile.mkstemp(prefix=".token-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        os.chmod(path, 0o600)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _authorized_service_factory(
    credentials: Any, document: str | None, timeout: float
) -> Callable[[], Any]:
    def factory() -> Any:
        from google_auth_httplib2 import AuthorizedHttp
        from googleapiclient.discovery import build, build_from_document
        from googleapiclient.http import build_http

        raw = build_http()  # drops 308 from httplib2's redirect codes
        raw.timeout = timeout
        http = AuthorizedHttp(credentials, http=raw)
        if document is None:
            return build(
                "drive", "v3", http=http, static_discovery=True, cache_discovery=False
            )
        return build_from_document(document, http=http)

    return factory


def token_file_factory(
    path: str | os.PathLike[str],
    *,
    api_root: str | None,
    token_uri: str | None,
    http_timeout: float,
) -> Callable[[], Any]:
    """A service factory from an OAuth *authorized user* token file.

    Refreshed access tokens are written back to ``path`` with mode ``0600``.

    Raises
    ------
    ConfigError
        If the file is missing or is not an authorized-user token.
    """
    from google.oauth2.credentials import Credentials

    class _Creds(_PersistingCredentialsMixin, Credentials):
        pass

    token_path = Path(path)
    try:
        creds = _Creds.from_authorized_user_file(str(token_path), list(DRIVE_SCOPES))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load Drive token file {token_path}: {exc}") from None
    if token_uri is not None:
        creds = creds.with_token_uri(token_uri)
    creds._syft_path = token_path
    document = rerooted_drive_discovery(api_root) if api_root else None
    return _authorized_service_factory(creds, document, http_timeout)


def service_account_factory(
    identity: str,
    path: str | os.PathLike[str],
    *,
    api_root: str | None,
    http_timeout: float,
) -> Callable[[], Any]:
    """A service factory from a service-account key file (impersonating
    ``identity`` when it is not the account's own email).

    Raises
    ------
    ConfigError
        If the key file cannot be loaded.
    """
    from google.oauth2 import service_account

    try:
        creds = service_account.Credentials.from_service_account_file(
            str(path), scopes=list(DRIVE_SCOPES)
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load service account file {path}: {exc}") from None
    if creds.service_account_email.lower() != identity.strip().lower():
        creds = creds.with_subject(identity.strip().lower())
    document = rerooted_drive_discovery(api_root) if api_root else None
    return _authorized_service_factory(creds, document, http_timeout)


def api_root_factory(
    root_url: str, credentials: Any, *, http_timeout: float
) -> Callable[[], Any]:
    """A service factory for any Drive v3-compatible server at ``root_url``."""
    document = rerooted_drive_discovery(root_url)
    return _authorized_service_factory(credentials, document, http_timeout)
