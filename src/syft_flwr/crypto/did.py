"""DID documents: the public keys a datasite publishes, in syft-crypto 0.1.2's layout.

The public halves live in the synced, world-readable
``<datasites>/<email>/public/did.json``; reading one verifies the prekey (and
key version) signatures before anything else sees it (:class:`PublicBundle`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from syft_flwr._email import fold_domain
from syft_flwr.crypto._key_io import (
    _DID_FILE_MODE,
    DID_CONTEXT,
    IDENTITY_KID,
    PREKEY_KID,
    _atomic_write,
    _b64url,
    _check_okp,
    _did_id,
    _email_from_did_id,
    _read_json,
    _unb64url,
    hex_fingerprint,
)
from syft_flwr.crypto.key_files import PrivateKeys
from syft_flwr.crypto.key_version import (
    KEY_VERSION_FIELD,
    check_version,
    key_version_message,
    read_version,
)
from syft_flwr.errors import BadSignatureError, EncryptionError

__all__ = [
    "PublicBundle",
    "did_path",
    "load_public_bundle",
    "make_did_document",
    "public_bundle_of",
    "save_did_document",
]


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
        fp = hex_fingerprint(self.identity_key)
        return f"PublicBundle(email={self.email!r}, fingerprint={fp!r})"


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
    id_raw = keys.identity.public_key().public_bytes_raw()
    doc: dict[str, Any] = {
        "@context": list(DID_CONTEXT),
        "id": did,
        "verificationMethod": [
            _method(did, IDENTITY_KID, "Ed25519VerificationKey2020", "Ed25519", id_raw)
        ],
        "keyAgreement": [
            _method(
                did,
                PREKEY_KID,
                "X25519KeyAgreementKey2020",
                "X25519",
                spk_raw,
                signature=_b64url(keys.identity.sign(spk_raw)),
            )
        ],
    }
    version = _signed_version(keys)
    if version is not None:
        doc[KEY_VERSION_FIELD] = version
    return doc


def _method(
    did: str, kid: str, kind: str, crv: str, raw: bytes, signature: str | None = None
) -> dict[str, Any]:
    """One key entry of a DID document; members in syft-crypto's order."""
    jwk: dict[str, Any] = {
        "kty": "OKP",
        "kid": kid,
        "crv": crv,
        "x": _b64url(raw),
        "use": "sig" if crv == "Ed25519" else "enc",
    }
    if signature is not None:
        jwk["signature"] = signature
    return {"id": f"{did}#{kid}", "type": kind, "controller": did, "publicKeyJwk": jwk}


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
