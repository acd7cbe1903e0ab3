"""Private key files: syft-crypto 0.1.2's ``pvt.jwks.json``, mode 0600, never world-readable.

The private halves live in ``<data_dir>/../.syftbox/<hash8>/pvt.jwks.json``; the
location and JSON layout are exactly syft-crypto's (see :mod:`syft_flwr.crypto.keys`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from syft_flwr.crypto._key_io import (
    _KEY_DIR_MODE,
    _KEY_FILE_MODE,
    _KEY_FILE_VERSION,
    IDENTITY_KID,
    PREKEY_KID,
    _atomic_write,
    _b64url,
    _check_okp,
    _read_json,
    _server_url,
    _unb64url,
    hex_fingerprint,
)
from syft_flwr.crypto.key_version import check_version
from syft_flwr.errors import EncryptionError, KeyFilePermissionError, KeyNotFound

__all__ = [
    "PrivateKeys",
    "generate_keys",
    "load_private_keys",
    "private_key_path",
    "save_private_keys",
]


@dataclass(frozen=True, eq=False)
class PrivateKeys:
    """A user's two long-term private keys.

    Attributes
    ----------
    identity : Ed25519PrivateKey
        Signs the signed prekey; never used for encryption.
    signed_prekey : X25519PrivateKey
        Static Diffie-Hellman key of the user.
    prekey_version : int
        Key version of ``signed_prekey``: increased by every rotation and
        published, signed, in the DID (0: keys from syft-crypto or older
        syft_flwr, published without a version).

    Notes
    -----
    Two instances compare equal when they hold the same key material (constant-time
    comparison; the version is not key material). The ``repr`` shows only the
    fingerprint, never secret bytes.
    """

    identity: Ed25519PrivateKey
    signed_prekey: X25519PrivateKey
    prekey_version: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.identity, Ed25519PrivateKey):
            raise EncryptionError("identity must be an Ed25519PrivateKey")
        if not isinstance(self.signed_prekey, X25519PrivateKey):
            raise EncryptionError("signed_prekey must be an X25519PrivateKey")
        check_version(self.prekey_version, "private keys")

    def _raw(self) -> bytes:
        return (
            self.identity.private_bytes_raw() + self.signed_prekey.private_bytes_raw()
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKeys):
            return NotImplemented
        return hmac.compare_digest(self._raw(), other._raw())

    __hash__ = None  # type: ignore[assignment]  # secret material: not a dict key

    def __repr__(self) -> str:
        return (
            f"PrivateKeys(fingerprint={hex_fingerprint(self.identity.public_key())!r})"
        )


def private_key_path(data_dir: Path, server_url: str, email: str) -> Path:
    """Where syft-crypto 0.1.2 keeps the private keys of ``email`` on ``server_url``.

    ``<data_dir>/../.syftbox/<sha256("<server_url>::<email>").hexdigest()[:8]>/
    pvt.jwks.json``, where ``data_dir`` is expanded and resolved like syft-core
    does and ``server_url`` is normalized like pydantic's ``AnyHttpUrl`` (so
    ``http://h:8080`` becomes ``http://h:8080/``).

    Parameters
    ----------
    data_dir : Path
        The SyftBox data directory (the one containing ``datasites/``).
    server_url : str
        The SyftBox server URL from the client config.
    email : str
        The user's email exactly as in the client config (not re-cased here:
        changing it would move the key file).

    Returns
    -------
    Path
    """
    partition = f"{_server_url(server_url)}::{email}"
    digest = hashlib.sha256(partition.encode("utf-8")).hexdigest()[:8]
    base = Path(data_dir).expanduser().resolve().parent
    return base / ".syftbox" / digest / "pvt.jwks.json"


def generate_keys() -> PrivateKeys:
    """Generate a fresh identity key and signed prekey.

    Returns
    -------
    PrivateKeys
    """
    return PrivateKeys(
        identity=Ed25519PrivateKey.generate(),
        signed_prekey=X25519PrivateKey.generate(),
        prekey_version=1,
    )


def _private_jwks(keys: PrivateKeys) -> dict[str, Any]:
    jwks: dict[str, Any] = {
        "identity_key": {
            "kty": "OKP",
            "kid": IDENTITY_KID,
            "crv": "Ed25519",
            "x": _b64url(keys.identity.public_key().public_bytes_raw()),
            "d": _b64url(keys.identity.private_bytes_raw()),
        },
        "signed_prekey": {
            "kty": "OKP",
            "kid": PREKEY_KID,
            "crv": "X25519",
            "x": _b64url(keys.signed_prekey.public_key().public_bytes_raw()),
            "d": _b64url(keys.signed_prekey.private_bytes_raw()),
        },
    }
    if keys.prekey_version:
        jwks[_KEY_FILE_VERSION] = keys.prekey_version
    return jwks


def _prepare_key_dir(path: Path) -> None:
    parent = Path(path).parent
    parent.mkdir(mode=_KEY_DIR_MODE, parents=True, exist_ok=True)
    if os.name != "nt":
        # The <hash8> directory is dedicated to this file; syft-crypto created it
        # 0755, so tighten it rather than trusting the umask or history.
        os.chmod(parent, _KEY_DIR_MODE)


def _write_private_keys(path: Path, keys: PrivateKeys, *, exclusive: bool) -> None:
    _prepare_key_dir(path)
    data = (json.dumps(_private_jwks(keys), indent=2) + "\n").encode("utf-8")
    _atomic_write(
        Path(path), data, _KEY_FILE_MODE, exclusive=exclusive, force_mode=True
    )


def save_private_keys(path: Path, keys: PrivateKeys) -> None:
    """Write ``keys`` as syft-crypto's ``pvt.jwks.json``, atomically, mode 0600.

    The file is ``{"identity_key": JWK, "signed_prekey": JWK}`` with OKP JWKs
    (``kty``, ``kid``, ``crv``, ``x``, ``d``; unpadded base64url). The parent
    directory is created if needed and set to 0700. An existing file is replaced:
    use :func:`ensure_keys` for the never-overwrite policy.

    Parameters
    ----------
    path : Path
        Usually :func:`private_key_path`.
    keys : PrivateKeys
        The keys to store.
    """
    _write_private_keys(Path(path), keys, exclusive=False)


def _check_key_file_mode(path: Path) -> None:
    if os.name == "nt":  # POSIX modes mean nothing there
        return
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise KeyNotFound(f"no private keys at {path}") from exc
    if st.st_mode & 0o077:
        raise KeyFilePermissionError(
            f"private key file {path} is accessible by other users "
            f"(mode {st.st_mode & 0o777:04o}); run `chmod 600 {path}` after checking "
            "nobody else copied it"
        )


def _private_key_from_jwk(jwk: Any, crv: str, what: str) -> Any:
    if not isinstance(jwk, dict):
        raise EncryptionError(f"{what}: expected a JWK object")
    _check_okp(jwk, crv, what)
    d = _unb64url(jwk.get("d"), f"{what} d", 32)
    key: Ed25519PrivateKey | X25519PrivateKey
    if crv == "Ed25519":
        key = Ed25519PrivateKey.from_private_bytes(d)
    else:
        key = X25519PrivateKey.from_private_bytes(d)
    # "x" is redundant; if present it must agree, otherwise the file is corrupt.
    if "x" in jwk:
        x = _unb64url(jwk["x"], f"{what} x", 32)
        if x != key.public_key().public_bytes_raw():
            raise EncryptionError(f"{what}: public part does not match private part")
    return key


def load_private_keys(path: Path) -> PrivateKeys:
    """Load a ``pvt.jwks.json`` written by this module or by syft-crypto.

    Parameters
    ----------
    path : Path
        Usually :func:`private_key_path`.

    Returns
    -------
    PrivateKeys

    Raises
    ------
    KeyNotFound
        The file does not exist.
    KeyFilePermissionError
        The file is readable or writable by group/other (checked before reading).
    EncryptionError
        The file is not valid JSON or not a valid key set.
    """
    path = Path(path)
    _check_key_file_mode(path)
    data = _read_json(path, "private keys")
    if not isinstance(data, dict):
        raise EncryptionError(f"private keys at {path}: expected a JSON object")
    return PrivateKeys(
        identity=_private_key_from_jwk(
            data.get("identity_key"), "Ed25519", "identity_key"
        ),
        signed_prekey=_private_key_from_jwk(
            data.get("signed_prekey"), "X25519", "signed_prekey"
        ),
        prekey_version=check_version(
            data.get(_KEY_FILE_VERSION, 0), f"private keys at {path}"
        ),
    )
