"""The reason carried by an error reply, as text a person may read.

A non-200 reply's body is the reason its data owner wrote: UTF-8 text. Whatever
else sits there (message bytes, after a status was changed where nothing is
signed; a binary blob from a broken writer) is never shown, and never passes
for a reason: only its size is named. Text is shown with anything a terminal
would act on (control, bidi and other format characters) escaped, and cut to a
readable length, on one line.
"""

from __future__ import annotations

from syft_flwr._printable import printable

__all__ = ["MAX_REASON_CHARS", "reason_text"]

#: Characters of a reason shown; the rest is cut (its length is said).
MAX_REASON_CHARS = 1000
#: Control characters a written reason may hold; any other is not text.
_TEXT_CONTROLS = frozenset("\n\r\t")


def reason_text(body: bytes | memoryview, *, limit: int = MAX_REASON_CHARS) -> str:
    """Return the reason an error reply carries, safe to log or show.

    Parameters
    ----------
    body : bytes or memoryview
        The reply's body.
    limit : int
        Characters shown at most.

    Returns
    -------
    str
        The reason, with non-printable characters escaped as ``\\xNN`` or
        ``\\uNNNN``; or a sentence naming the body's size when it is not text
        (not UTF-8, or holding control characters, as serialized messages do).
    """
    data = bytes(body)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"(a {len(data)}-byte reason that is not text; not shown)"
    if any(ord(c) < 0x20 and c not in _TEXT_CONTROLS for c in text):
        return f"(a {len(data)}-byte reason that is not text; not shown)"
    # One line: a newline or carriage return could fake another log entry or
    # overwrite this one on a terminal (shown as \n and \r by printable).
    shown = printable(text[:limit])
    if len(text) > limit:
        shown += f" ... ({len(text) - limit} more characters)"
    return shown
