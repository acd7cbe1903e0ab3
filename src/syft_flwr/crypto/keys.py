"""Identity keys, signed prekeys and DID documents, in syft-crypto 0.1.2's formats.

Every SyftBox user has two long-term key pairs:

* an **identity key** (Ed25519), used only to sign the prekey, and
* a **signed prekey** ("SPK", X25519), used for Diffie-Hellman.

The private halves live in ``<data_dir>/../.syftbox/<hash8>/pvt.jwks.json`` (mode
0600) and the public halves in the synced, world-readable
``<datasites>/<email>/public/did.json``. Both the locations and the JSON layouts are
exactly syft-crypto 0.1.2's, so keys created by syft-rpc/syft-event keep working and
keys created here work there.

One addition, which syft-crypto readers ignore: a **key version** that every
prekey rotation increases, kept in the key file (``"prekey_version"``) and
published, signed, in the DID (see :mod:`syft_flwr.crypto.key_version`). Keys and
DIDs without it are version 0.

Everything here is a plain function of paths/bytes; nothing talks to the network.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

from syft_flwr._email import fold_domain
from syft_flwr._fs import fsync_dir
from syft_flwr.crypto.key_version import (
    KEY_VERSION_FIELD,
    MAX_KEY_VERSION,
    check_version,
    key_version_message,
    read_version,
)
from syft_flwr.errors import (
    BadSignatureError,
    ConfigError,
    EncryptionError,
    KeyConflictError,
    KeyFilePermissionError,
    KeyNotFound,
)

__all__ = [
    "PrivateKeys",
    "PublicBundle",
    "did_path",
    "ensure_keys",
    "fingerprint",
    "fingerprint_digits",
    "fingerprint_matches",
    "catch_up_version",
    "generate_keys",
    "load_private_keys",
    "load_public_bundle",
    "make_did_document",
    "private_key_path",
    "public_bundle_of",
    "save_did_document",
    "save_private_keys",
]

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


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- types


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
        return f"PrivateKeys(fingerprint={fingerprint(self)!r})"


@dataclass(frozen=True, eq=False)
class PublicBundle:
    """A peer's public keys, with the prekey signature already verified.

    Construction verifies ``signature`` (Ed25519 over the raw 32-byte prekey) under
    ``identity_key`` and raises :class:`~syft_flwr.errors.BadSignatureError` if it
    does not verify, so holding a ``PublicBundle`` means the prekey is authentic
    *relative to the identity key*; whether the identity key really is ``email``'s
    is what :func:`fingerprint` lets humans check.

    Attributes
    ----------
    email : str
        The datasite the keys belong to.
    identity_key : Ed25519PublicKey
        Long-term signing key.
    signed_prekey : X25519PublicKey
        Long-term Diffie-Hellman key.
    signature : bytes
        64-byte Ed25519 signature over ``signed_prekey``'s raw bytes.
    version : int
        The signed key version (0 when the DID carries none).
    version_signature : bytes or None
        64-byte Ed25519 signature over :func:`key_version_message`; required
        (and verified at construction) when ``version`` is not 0.
    """

    email: str
    identity_key: Ed25519PublicKey
    signed_prekey: X25519PublicKey
    signature: bytes
    version: int = 0
    version_signature: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.email, str) or "@" not in self.email:
            raise EncryptionError(f"invalid email {self.email!r}")
        if not isinstance(self.identity_key, Ed25519PublicKey):
            raise EncryptionError("identity_key must be an Ed25519PublicKey")
        if not isinstance(self.signed_prekey, X25519PublicKey):
            raise EncryptionError("signed_prekey must be an X25519PublicKey")
        if (
            not isinstance(self.signature, bytes | bytearray)
            or len(self.signature) != 64
        ):
            raise BadSignatureError(f"prekey signature of {self.email} is malformed")
        try:
            self.identity_key.verify(
                bytes(self.signature), self.signed_prekey.public_bytes_raw()
            )
        except InvalidSignature:
            raise BadSignatureError(
                f"the signed prekey of {self.email} is not signed by its identity key"
            ) from None
        self._verify_version()

    def _verify_version(self) -> None:
        check_version(self.version, f"DID document of {self.email}")
        if self.version == 0:
            if self.version_signature is not None:
                raise BadSignatureError(f"key version 0 of {self.email} is signed")
            return
        sig = self.version_signature
        if not isinstance(sig, bytes | bytearray) or len(sig) != 64:
            raise BadSignatureError(f"key version of {self.email} is not signed")
        message = key_version_message(
            self.identity_key.public_bytes_raw(),
            self.signed_prekey.public_bytes_raw(),
            self.version,
        )
        try:
            self.identity_key.verify(bytes(sig), message)
        except InvalidSignature:
            raise BadSignatureError(
                f"the key version ({self.version}) in the DID of {self.email} is not "
                "signed by its identity key for this prekey"
            ) from None

    @classmethod
    def from_did(cls, doc: dict[str, Any], email: str | None = None) -> PublicBundle:
        """Parse a syft-crypto DID document and verify its prekey signature.

        Parameters
        ----------
        doc : dict
            The DID document (see :func:`make_did_document`).
        email : str, optional
            The datasite the document was read from. If given, it must match the
            email in the document's ``id`` (local part exactly, domain
            case-insensitively), so that one user
            cannot pass off a copy of somebody else's document as their own.

        Returns
        -------
        PublicBundle

        Raises
        ------
        BadSignatureError
            The prekey is not signed by the identity key.
        EncryptionError
            The document is malformed or belongs to another email.
        """
        if not isinstance(doc, dict):
            raise EncryptionError("DID document must be a JSON object")
        doc_email = _email_from_did_id(doc.get("id"))
        if email is not None and fold_domain(doc_email) != fold_domain(email):
            raise EncryptionError(
                f"DID document belongs to {doc_email!r}, not to {email!r}"
            )
        id_jwk = _find_jwk(doc, "verificationMethod", IDENTITY_KID)
        spk_jwk = _find_jwk(doc, "keyAgreement", PREKEY_KID)
        _check_okp(id_jwk, "Ed25519", "identity key")
        _check_okp(spk_jwk, "X25519", "signed prekey")
        id_raw = _unb64url(id_jwk.get("x"), "identity key x", 32)
        spk_raw = _unb64url(spk_jwk.get("x"), "signed prekey x", 32)
        sig = _unb64url(spk_jwk.get("signature"), "signed prekey signature", 64)
        try:
            identity = Ed25519PublicKey.from_public_bytes(id_raw)
            prekey = X25519PublicKey.from_public_bytes(spk_raw)
        except ValueError as exc:
            raise EncryptionError(f"DID document of {doc_email}: {exc}") from exc
        version, version_sig = read_version(doc, doc_email)
        return cls(
            email=email if email is not None else doc_email,
            identity_key=identity,
            signed_prekey=prekey,
            signature=sig,
            version=version,
            version_signature=version_sig,
        )

    def _raw(self) -> bytes:
        return (
            self.identity_key.public_bytes_raw() + self.signed_prekey.public_bytes_raw()
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicBundle):
            return NotImplemented
        return self.email == other.email and self._raw() == other._raw()

    def __hash__(self) -> int:
        return hash((self.email, self._raw()))

    def __repr__(self) -> str:
        return f"PublicBundle(email={self.email!r}, fingerprint={fingerprint(self)!r})"


def _find_jwk(doc: dict[str, Any], section: str, kid: str) -> dict[str, Any]:
    entries = doc.get(section)
    if not isinstance(entries, list):
        raise EncryptionError(f"DID document has no {section} list")
    # syft-crypto selects by the "#<kid>" suffix of the method id; accept the JWK
    # kid too so hand-edited documents with reordered fields still load.
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        jwk = entry.get("publicKeyJwk")
        entry_id = entry.get("id")
        if isinstance(jwk, dict) and (
            (isinstance(entry_id, str) and entry_id.endswith(f"#{kid}"))
            or jwk.get("kid") == kid
        ):
            return jwk
    raise EncryptionError(f"DID document has no {kid!r} in {section}")


def _check_okp(jwk: dict[str, Any], crv: str, what: str) -> None:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != crv:
        raise EncryptionError(f"{what}: expected an OKP {crv} JWK")


# --------------------------------------------------------------------------- paths


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


def did_path(datasites_dir: Path, email: str) -> Path:
    """Path of ``email``'s public DID document: ``<datasites>/<email>/public/did.json``.

    Parameters
    ----------
    datasites_dir : Path
        The ``datasites`` directory of the local SyftBox.
    email : str
        Owner of the datasite.

    Returns
    -------
    Path
    """
    return Path(datasites_dir) / email / "public" / "did.json"


# --------------------------------------------------------------------------- keys


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


# --------------------------------------------------------------------------- DIDs


def make_did_document(keys: PrivateKeys, email: str, server_url: str) -> dict[str, Any]:
    """Build the public DID document of ``keys``, in syft-crypto 0.1.2's layout.

    Ed25519 signatures are deterministic, so the same keys always give the same
    document. Keys with a version (see :class:`PrivateKeys`) add the top-level
    ``"syftFlwrKeyVersion": {"version": N, "signature": <b64url>}``, signed over
    :func:`key_version_message`; syft-crypto readers ignore it.

    Parameters
    ----------
    keys : PrivateKeys
        Whose public halves to publish; the identity key signs the prekey.
    email : str
        Owner of the keys.
    server_url : str
        SyftBox server; only its host (without port) appears, in the DID id.

    Returns
    -------
    dict
        ``{"@context", "id", "verificationMethod", "keyAgreement"}``.
    """
    did = _did_id(email, server_url)
    spk_raw = keys.signed_prekey.public_key().public_bytes_raw()
    doc: dict[str, Any] = {
        "@context": list(DID_CONTEXT),
        "id": did,
        "verificationMethod": [
            {
                "id": f"{did}#{IDENTITY_KID}",
                "type": "Ed25519VerificationKey2020",
                "controller": did,
                "publicKeyJwk": {
                    "kty": "OKP",
                    "kid": IDENTITY_KID,
                    "crv": "Ed25519",
                    "x": _b64url(keys.identity.public_key().public_bytes_raw()),
                    "use": "sig",
                },
            }
        ],
        "keyAgreement": [
            {
                "id": f"{did}#{PREKEY_KID}",
                "type": "X25519KeyAgreementKey2020",
                "controller": did,
                "publicKeyJwk": {
                    "kty": "OKP",
                    "kid": PREKEY_KID,
                    "crv": "X25519",
                    "x": _b64url(spk_raw),
                    "use": "enc",
                    "signature": _b64url(keys.identity.sign(spk_raw)),
                },
            }
        ],
    }
    version = _signed_version(keys)
    if version is not None:
        doc[KEY_VERSION_FIELD] = version
    return doc


def _version_signature(keys: PrivateKeys) -> bytes:
    return keys.identity.sign(
        key_version_message(
            keys.identity.public_key().public_bytes_raw(),
            keys.signed_prekey.public_key().public_bytes_raw(),
            keys.prekey_version,
        )
    )


def _signed_version(keys: PrivateKeys) -> dict[str, Any] | None:
    if not keys.prekey_version:
        return None
    return {
        "version": keys.prekey_version,
        "signature": _b64url(_version_signature(keys)),
    }


def _did_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def save_did_document(path: Path, doc: dict[str, Any]) -> None:
    """Write a DID document atomically (temp ``*.tmp`` file + ``os.replace``).

    Parameters
    ----------
    path : Path
        Usually :func:`did_path`; parent directories are created.
    doc : dict
        The document, e.g. from :func:`make_did_document`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, _did_bytes(doc), _DID_FILE_MODE, force_mode=False)


def load_public_bundle(
    path_or_doc: Path | dict[str, Any], email: str | None = None
) -> PublicBundle:
    """Load a DID document (file or parsed dict) and verify its prekey signature.

    Parameters
    ----------
    path_or_doc : Path or dict
        ``did.json`` path (e.g. :func:`did_path`) or an already parsed document.
    email : str, optional
        Expected owner; pass the datasite the file was read from. Defaults to
        the email in the document's id.

    Returns
    -------
    PublicBundle

    Raises
    ------
    KeyNotFound
        The file does not exist.
    BadSignatureError
        The prekey signature does not verify.
    EncryptionError
        The document is malformed (possibly still syncing) or names another email.
    """
    if isinstance(path_or_doc, dict):
        return PublicBundle.from_did(path_or_doc, email)
    doc = _read_json(Path(path_or_doc), "DID document")
    return PublicBundle.from_did(doc, email)


def public_bundle_of(keys: PrivateKeys, email: str) -> PublicBundle:
    """The :class:`PublicBundle` that ``keys`` publish for ``email``.

    Parameters
    ----------
    keys : PrivateKeys
        Own keys.
    email : str
        Own email.

    Returns
    -------
    PublicBundle
    """
    spk = keys.signed_prekey.public_key()
    return PublicBundle(
        email=email,
        identity_key=keys.identity.public_key(),
        signed_prekey=spk,
        signature=keys.identity.sign(spk.public_bytes_raw()),
        version=keys.prekey_version,
        version_signature=_version_signature(keys) if keys.prekey_version else None,
    )


def fingerprint(bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey) -> str:
    """Short human-comparable fingerprint of an identity key.

    The first 16 bytes of SHA-256 over the raw 32-byte Ed25519 identity public key,
    as 8 space-separated groups of 4 lowercase hex digits, e.g.
    ``"3f2a 9c01 77be 04d2 a5e8 1b6c 0f93 d4a7"``. Only the identity key is
    covered because it signs the prekey; two people comparing it out of band
    (phone, in person) authenticates everything else.

    Parameters
    ----------
    bundle_or_keys : PublicBundle or PrivateKeys or Ed25519PublicKey
        Whose identity key.

    Returns
    -------
    str
    """
    pub = _identity_public(bundle_or_keys)
    digest = hashlib.sha256(pub.public_bytes_raw()).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def fingerprint_digits(
    bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey,
) -> str:
    """The identity key's fingerprint as 30 digits in 6 groups, for reading aloud.

    Each group of 5 digits is a 40-bit slice of SHA-256 over the raw identity
    key, reduced modulo 100000 (the way Signal's safety numbers are built), e.g.
    ``"03821 55017 93342 10688 72409 31556"``: about 100 bits, easy to compare on
    a phone call. It covers the same key as :func:`fingerprint` and takes the
    same argument; returns a ``str``.
    """
    digest = hashlib.sha256(_identity_public(bundle_or_keys).public_bytes_raw())
    raw = digest.digest()
    groups = [int.from_bytes(raw[i : i + 5], "big") % 100000 for i in range(0, 30, 5)]
    return " ".join(f"{g:05d}" for g in groups)


def _identity_public(
    bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey,
) -> Ed25519PublicKey:
    if isinstance(bundle_or_keys, PublicBundle):
        return bundle_or_keys.identity_key
    if isinstance(bundle_or_keys, PrivateKeys):
        return bundle_or_keys.identity.public_key()
    if isinstance(bundle_or_keys, Ed25519PublicKey):
        return bundle_or_keys
    raise TypeError(f"cannot fingerprint {type(bundle_or_keys).__name__}")


def fingerprint_matches(
    text: str, bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey
) -> bool:
    """Whether ``text`` is the fingerprint of the key, in either printed form.

    Spaces, dashes and letter case are ignored, so ``"3F2A-9C01..."`` matches.

    Parameters
    ----------
    text : str
        A :func:`fingerprint` or :func:`fingerprint_digits`, as a user typed it.
    bundle_or_keys : PublicBundle or PrivateKeys or Ed25519PublicKey
        Whose identity key.

    Returns
    -------
    bool
    """
    given = "".join(ch for ch in str(text).lower() if ch.isalnum())
    forms = (fingerprint(bundle_or_keys), fingerprint_digits(bundle_or_keys))
    return bool(given) and any(
        hmac.compare_digest(given, f.replace(" ", "")) for f in forms
    )


# --------------------------------------------------------------------------- policy


def _same_keys(bundle: PublicBundle, keys: PrivateKeys) -> bool:
    return bundle.identity_key.public_bytes_raw() == (
        keys.identity.public_key().public_bytes_raw()
    ) and bundle.signed_prekey.public_bytes_raw() == (
        keys.signed_prekey.public_key().public_bytes_raw()
    )


def ensure_keys(
    *, data_dir: Path, datasites_dir: Path, server_url: str, email: str
) -> PrivateKeys:
    """Load the user's keys, creating them on first use; never replace them silently.

    ========================  =====================================================
    on disk                   action
    ========================  =====================================================
    ``did.conflict.json``     :class:`KeyConflictError` (a sync conflict on the DID)
    neither keys nor DID      generate, save keys (0600), publish DID
    keys, no DID              publish the DID of the existing keys
    DID, no keys              :class:`KeyConflictError`
    keys and DID              check they match, else :class:`KeyConflictError`;
                              same identity key but another prekey or a lower
                              version (an interrupted rotation, an old DID put
                              back): republish the DID of the key file; a higher
                              published version (a key file restored from a
                              backup): move the key file's version past it first
    ========================  =====================================================

    Nothing is ever overwritten. Concurrent first calls are safe: files are
    published with create-if-absent semantics and a loser adopts the winner's keys.

    Parameters
    ----------
    data_dir : Path
        SyftBox data directory (the keys live next to it, see
        :func:`private_key_path`).
    datasites_dir : Path
        Its ``datasites`` directory (the DID lives in ``<email>/public/``).
    server_url : str
        SyftBox server URL from the client config.
    email : str
        The user's email, as in the client config.

    Returns
    -------
    PrivateKeys

    Raises
    ------
    KeyConflictError
        See the table; the message says how to resolve it.
    KeyFilePermissionError
        The private key file is accessible by other users.
    """
    key_file = private_key_path(data_dir, server_url, email)
    did_file = did_path(datasites_dir, email)
    conflict = did_file.with_name(_CONFLICT_NAME)
    if conflict.exists():
        raise KeyConflictError(
            f"{conflict} exists: the sync client found two different DID documents "
            f"for {email}. Keep the one matching your private keys ({key_file}) as "
            "did.json, delete the other, then retry. Nothing was changed."
        )

    # Check the DID first: it is only ever written after the keys exist, so seeing
    # it means the keys existed already (no false conflict in a concurrent start).
    have_did = did_file.exists()
    have_keys = key_file.exists()
    if have_did and not have_keys:
        raise KeyConflictError(
            f"{did_file} is published but there are no matching private keys at "
            f"{key_file}. Restore the key file from a backup or from your other "
            f"device, or - if the keys are lost for good - move {did_file} away so "
            "new keys can be generated (peers must then re-check your fingerprint, "
            "and messages encrypted to the old keys become unreadable). Nothing was "
            "overwritten."
        )

    if have_keys:
        keys = load_private_keys(key_file)
    else:
        keys = generate_keys()
        try:
            _write_private_keys(key_file, keys, exclusive=True)
        except FileExistsError:
            keys = load_private_keys(key_file)  # another process won the race

    if not have_did:
        did_file.parent.mkdir(parents=True, exist_ok=True)
        doc = make_did_document(keys, email, server_url)
        try:
            _atomic_write(
                did_file,
                _did_bytes(doc),
                _DID_FILE_MODE,
                exclusive=True,
                force_mode=False,
            )
            return keys
        except FileExistsError:
            pass  # published meanwhile; verify it like any existing DID

    try:
        bundle = load_public_bundle(did_file, email)
    except EncryptionError as exc:
        raise KeyConflictError(
            f"{did_file} cannot be used ({exc}); it may still be syncing. If it "
            f"persists, replace it with the DID of {key_file} (move the file away and "
            "retry). Nothing was overwritten."
        ) from exc
    if (
        bundle.identity_key.public_bytes_raw()
        == keys.identity.public_key().public_bytes_raw()
    ):
        return _republish_if_stale(key_file, did_file, keys, bundle, email, server_url)
    if not _same_keys(bundle, keys):
        raise KeyConflictError(
            f"the published {did_file} (fingerprint {fingerprint(bundle)}) does not "
            f"match the private keys at {key_file} (fingerprint {fingerprint(keys)}). "
            "Restore the matching key file, or move the DID away to publish these "
            "keys instead. Nothing was overwritten."
        )
    return keys


def _republish_if_stale(
    key_file: Path,
    did_file: Path,
    keys: PrivateKeys,
    bundle: PublicBundle,
    email: str,
    server_url: str,
) -> PrivateKeys:
    """Make the published DID the key file's, under our identity; return the keys.

    Another prekey or a lower version is published when a rotation was interrupted
    between saving the keys (written first) and publishing the DID, or when
    someone put an old ``did.json`` back: the key file wins. A *higher* version
    can only have been signed by our identity key (a key file restored from an
    older backup): the key file then moves past it, so peers, who pinned that
    version, accept what is published next.
    """
    caught_up = catch_up_version(keys, bundle)
    if caught_up is not keys:
        keys = caught_up
        save_private_keys(key_file, keys)
    if not _same_keys(bundle, keys) or bundle.version != keys.prekey_version:
        save_did_document(did_file, make_did_document(keys, email, server_url))
    return keys


def catch_up_version(keys: PrivateKeys, published: PublicBundle) -> PrivateKeys:
    """``keys`` at a version peers accept after seeing ``published``.

    ``published`` is our identity's verified DID. A version above the key file's
    can only have been signed by our identity key (a key file restored from an
    older backup); peers pinned it, so the key file's prekey takes that version
    (the same prekey) or the next one (another prekey). Otherwise ``keys`` is
    returned unchanged (the same object).

    Parameters
    ----------
    keys : PrivateKeys
        Our keys, as in the key file.
    published : PublicBundle
        What is published for us now, with the same identity key.

    Returns
    -------
    PrivateKeys
    """
    if published.version <= keys.prekey_version:
        return keys
    same = _same_keys(published, keys)
    version = published.version if same else published.version + 1
    return PrivateKeys(keys.identity, keys.signed_prekey, min(version, MAX_KEY_VERSION))
