"""What key files and DID documents share: names, file modes, base64url, atomic writes.

Private to :mod:`syft_flwr.crypto` (imported by :mod:`~syft_flwr.crypto.key_files`,
:mod:`~syft_flwr.crypto.did` and the state stores that write files the same way).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

from syft_flwr._fs import fsync_dir
from syft_flwr.errors import ConfigError, EncryptionError, KeyNotFound

IDENTITY_KID = "identity-key"
PREKEY_KID = "signed-prekey"
DID_CONTEXT = [
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/suites/ed25519-2020/v1",
    "https://w3id.org/security/suites/x25519-2020/v1",
]
_KEY_FILE_MODE = 0o600
_KEY_DIR_MODE = 0o700
_DID_FILE_MODE = 0o644  # did.json is public by design; umask still applies
_CONFLICT_NAME = "did.conflict.json"
#: Member of the private key file holding the current key version.
_KEY_FILE_VERSION = "prekey_version"

# pydantic is what syft-core uses for ``server_url``; normalizing with the very same
# type is the only way to reproduce syft-crypto's key path hash byte for byte.
_URL_ADAPTER: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64url(value: Any, what: str, size: int) -> bytes:
    """Decode unpadded base64url, strictly, and check the decoded length."""
    if not isinstance(value, str):
        raise EncryptionError(f"{what}: expected a base64url string")
    try:
        raw = base64.b64decode(
            value + "=" * (-len(value) % 4), altchars=b"-_", validate=True
        )
    except (binascii.Error, ValueError) as exc:
        raise EncryptionError(f"{what}: invalid base64url") from exc
    if len(raw) != size:
        raise EncryptionError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def _server_url(server_url: str) -> AnyHttpUrl:
    try:
        return _URL_ADAPTER.validate_python(str(server_url))
    except ValidationError as exc:
        raise ConfigError(f"invalid server_url {server_url!r}") from exc


def _did_id(email: str, server_url: str) -> str:
    # syft-crypto: "did:web:<server host, no port>:<email, fully percent-encoded>"
    host = _server_url(server_url).host or ""
    return f"did:web:{host}:{urllib.parse.quote(email, safe='')}"


def _email_from_did_id(did_id: Any) -> str:
    if not isinstance(did_id, str) or not did_id.startswith("did:web:"):
        raise EncryptionError(f"DID document id {did_id!r} is not a did:web id")
    email = urllib.parse.unquote(did_id.rsplit(":", 1)[-1])
    if "@" not in email:
        raise EncryptionError(f"DID document id {did_id!r} does not name an email")
    return email


def _atomic_write(
    path: Path, data: bytes, mode: int, *, exclusive: bool = False, force_mode: bool
) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one.

    The temp file ends in ``.tmp`` because both SyftBox sync clients ignore that
    suffix, so a half-written file is never uploaded. It is created with ``mode``
    from the start (``os.open``), so a private key is never world-readable, not
    even for a moment. With ``exclusive`` the final name must not exist yet
    (``FileExistsError`` otherwise): ``os.link`` publishes the file atomically
    *and* refuses to replace, which is what makes concurrent first runs safe.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if force_mode and hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)  # independent of the umask
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:
                # A filesystem without hard links: keep the atomic rename and accept
                # a tiny check-then-act window instead of a non-atomic write.
                if path.exists():
                    raise FileExistsError(str(path)) from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def _read_json(path: Path, what: str) -> Any:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise KeyNotFound(f"no {what} at {path}") from exc
    except UnicodeDecodeError as exc:
        raise EncryptionError(f"{what} at {path} is not UTF-8") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EncryptionError(f"{what} at {path} is not valid JSON: {exc}") from exc


def _check_okp(jwk: dict[str, Any], crv: str, what: str) -> None:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != crv:
        raise EncryptionError(f"{what}: expected an OKP {crv} JWK")


def hex_fingerprint(identity: Ed25519PublicKey) -> str:
    """The identity key's fingerprint: 8 groups of 4 hex digits (see ``keys.fingerprint``)."""
    digest = hashlib.sha256(identity.public_bytes_raw()).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))
