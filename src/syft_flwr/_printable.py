"""One way to show untrusted text to a person: escaped, visibly, never interpreted.

A researcher's app name, message type, group id, file names, reasons and emails
reach the data owner's terminal through ``audit``, ``projects``, ``show``,
``status`` and the log. A terminal acts on what it is given: an escape sequence
can move the cursor and overwrite a "refused" row with a fake "ok" one, a bidi
override (U+202E) reverses what follows, a C1 control (U+009B) starts a sequence
on its own. :func:`printable` is the single place that turns all of these into
visible escapes (``\\x1b``, ``\\u202e``), so what is shown is what is there.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

#: Bidi embeddings/overrides (U+202A-202E) and isolates (U+2066-2069); they are
#: also category Cf, listed here because they are the ones that reorder text.
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


#: The three controls people know by their own escapes.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _shown(c: str, multiline: bool) -> bool:
    if multiline and c in "\n\t":
        return True
    if c in _BIDI:
        return False
    # isprintable() is False for C0/C1 controls (Cc), format characters (Cf),
    # separators other than the space (Zl, Zp, Zs), surrogates and unassigned.
    return c.isprintable() and unicodedata.category(c) != "Cf"


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with every control, format and bidi character shown as an escape.

    Parameters
    ----------
    text : object
        What to show (``str()`` is applied first).
    multiline : bool
        Keep newlines and tabs (code shown by ``show``); by default they are
        escaped too, so one field stays on one line and cannot fake another row.

    Returns
    -------
    str
        Only printable characters; ESC is ``\\x1b``, U+009B ``\\x9b``, U+202E
        ``\\u202e``, a newline ``\\n``. A backslash is left as it is.

    Examples
    --------
    >>> printable("ok\\x1b[2K\\u202e")
    'ok\\\\x1b[2K\\\\u202e'
    """
    s = str(text)
    if s.isascii() and s.isprintable():  # the common case, fast
        return s
    return "".join(c if _shown(c, multiline) else _escape(c) for c in s)
