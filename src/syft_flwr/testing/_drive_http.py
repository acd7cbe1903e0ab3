"""Drive v3's HTTP details for the fake Drive server: discovery, ``fields``, multipart.

The discovery document googleapiclient ships (re-rooted at the fake server),
the ``fields`` selector language (parsed, applied, and checked against the
response schema, as Drive refuses unknown fields), and ``multipart/*`` bodies
split binary-safe. No state: :mod:`syft_flwr.testing.drive_server` calls these.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from syft_flwr.testing._drive_errors import DriveApiError

__all__ = [
    "Mask",
    "apply_fields",
    "check_fields",
    "parse_fields",
    "rerooted_discovery",
    "split_headers",
    "split_multipart",
]


# -- discovery document -----------------------------------------------------------

_doc_lock = threading.Lock()
_doc_cache: dict[str, Any] = {}


def _discovery_doc() -> dict[str, Any] | None:
    """Return googleapiclient's shipped ``drive.v3.json`` (read once), or None."""
    with _doc_lock:
        if "doc" not in _doc_cache:
            doc = None
            try:
                import googleapiclient.discovery as discovery

                path = (
                    Path(discovery.__file__).parent
                    / "discovery_cache"
                    / "documents"
                    / "drive.v3.json"
                )
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (ImportError, OSError, ValueError):
                doc = None
            _doc_cache["doc"] = doc
        return _doc_cache["doc"]


def rerooted_discovery(root_url: str) -> dict[str, Any]:
    """Return the Drive v3 discovery document pointed at ``root_url``.

    Parameters
    ----------
    root_url:
        ``http://host:port/`` of a Drive-compatible server (trailing ``/``).

    Raises
    ------
    RuntimeError
        If google-api-python-client (which ships the document) is not installed.
    """
    doc = _discovery_doc()
    if doc is None:
        raise RuntimeError("google-api-python-client is required for the discovery doc")
    if not root_url.endswith("/"):
        root_url += "/"
    out = json.loads(json.dumps(doc))
    out.update(rootUrl=root_url, mtlsRootUrl=root_url, baseUrl=root_url + "drive/v3/")
    return out


# -- field masks ------------------------------------------------------------------

Mask = dict[str, "Mask | None"]
_FIELD_RE = re.compile(r"\s*([A-Za-z_*][\w*]*(?:/[A-Za-z_*][\w*]*)*)\s*")


def parse_fields(text: str) -> Mask | None:
    """Parse a ``fields`` selector such as ``nextPageToken,files(id,name),user/emailAddress``.

    Returns ``None`` for ``*`` (everything).
    """
    pos = 0

    def parse_list(depth: int) -> Mask | None:
        nonlocal pos
        tree: Mask | None = {}
        while True:
            m = _FIELD_RE.match(text, pos)
            if m is None:
                raise DriveApiError(
                    400,
                    "invalidParameter",
                    f"Invalid field selection {text[pos:] or text}",
                    location="fields",
                )
            pos = m.end()
            path = m.group(1).split("/")
            sub: Mask | None = None
            if pos < len(text) and text[pos] == "(":
                pos += 1
                sub = parse_list(depth + 1)
                if pos >= len(text) or text[pos] != ")":
                    raise DriveApiError(
                        400,
                        "invalidParameter",
                        f"Invalid field selection {text}",
                        location="fields",
                    )
                pos += 1
                while pos < len(text) and text[pos].isspace():
                    pos += 1
            for name in reversed(path[1:]):
                sub = {name: sub}
            tree = _merge(tree, {path[0]: sub})
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if depth and pos < len(text) and text[pos] == ")":
                return tree
            if pos >= len(text) and not depth:
                return tree
            raise DriveApiError(
                400,
                "invalidParameter",
                f"Invalid field selection {text}",
                location="fields",
            )

    tree = parse_list(0)
    return None if tree is None or "*" in tree and len(tree) == 1 else tree


def _merge(a: Mask | None, b: Mask | None) -> Mask | None:
    if a is None or b is None:
        return None
    out = dict(a)
    for key, sub in b.items():
        out[key] = _merge(out[key], sub) if key in out else sub
    return out


def apply_fields(obj: Any, mask: Mask | None) -> Any:
    """Keep only the parts of ``obj`` selected by ``mask``."""
    if mask is None or "*" in mask:
        return obj
    if isinstance(obj, list):
        return [apply_fields(o, mask) for o in obj]
    if not isinstance(obj, dict):
        return obj
    return {k: apply_fields(obj[k], sub) for k, sub in mask.items() if k in obj}


def check_fields(mask: Mask | None, schema: str | None, text: str) -> None:
    """Reject selections of fields the Drive schema does not have, as Drive does."""
    doc = _discovery_doc()
    if mask is None or schema is None or doc is None:
        return
    schemas = doc["schemas"]

    def walk(node: Mask, spec: dict[str, Any]) -> None:
        props = spec.get("properties")
        if props is None:
            return  # maps (appProperties, exportLinks): any key is fine
        for key, sub in node.items():
            if key == "*":
                continue
            prop = props.get(key)
            if prop is None:
                raise DriveApiError(
                    400,
                    "invalidParameter",
                    f"Invalid field selection {key}",
                    location="fields",
                )
            if sub is None:
                continue
            if prop.get("type") == "array":
                prop = prop.get("items", {})
            if "$ref" in prop:
                prop = schemas.get(prop["$ref"], {})
            walk(sub, prop)

    walk(mask, schemas.get(schema, {}))


# -- multipart --------------------------------------------------------------------


def _boundary(content_type: str) -> str:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if m is None:
        raise DriveApiError(400, "badContent", "Missing multipart boundary.")
    return m.group(1)


def split_headers(blob: bytes) -> tuple[dict[str, str], bytes]:
    """Split ``headers\\n\\nbody`` (either line ending) into a header dict and body."""
    crlf = blob.find(b"\r\n\r\n")
    lf = blob.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        head, body = blob[:crlf], blob[crlf + 4 :]
    elif lf >= 0:
        head, body = blob[:lf], blob[lf + 2 :]
    else:
        head, body = blob, b""
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return headers, body


def split_multipart(
    body: bytes, content_type: str
) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/*`` body into ``(headers, payload)`` parts, binary-safe.

    The line break before each delimiter belongs to the delimiter (RFC 2046); the
    break style (``\\r\\n`` or ``\\n``) is read from the first delimiter line.
    """
    delim = b"--" + _boundary(content_type).encode()
    pos = body.find(delim)
    if pos < 0:
        raise DriveApiError(400, "badContent", "Malformed multipart body.")
    pos += len(delim)
    nl = b"\r\n" if body[pos : pos + 2] == b"\r\n" else b"\n"
    parts: list[tuple[dict[str, str], bytes]] = []
    while not body.startswith(b"--", pos):
        eol = body.find(b"\n", pos)
        if eol < 0:
            raise DriveApiError(400, "badContent", "Malformed multipart body.")
        start = eol + 1
        end = body.find(nl + delim, start)
        if end < 0:
            raise DriveApiError(400, "badContent", "Unterminated multipart body.")
        parts.append(split_headers(body[start:end]))
        pos = end + len(nl) + len(delim)
    return parts
