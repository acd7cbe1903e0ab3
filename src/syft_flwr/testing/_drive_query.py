"""The Drive v3 ``q=`` search language: tokenizer, recursive-descent parser, evaluator.

Part of the fake Drive server (:mod:`syft_flwr.testing.drive_server`). The grammar
follows Drive's "Search query terms and operators" reference::

    query   := or
    or      := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" query ")" | term
    term    := STRING "in" COLLECTION            'x' in parents|owners|writers|readers
             | FIELD OP VALUE                    name contains 'a', trashed = false, ...
             | "sharedWithMe"                    a bare boolean field

Strings are single-quoted; ``\\'`` and ``\\\\`` are the escapes. ``contains`` on
``name``/``fullText`` uses Drive's *token-prefix* rule (see :func:`name_tokens`),
which is not a substring test: ``'HelloWorld'`` matches ``contains 'Hello'`` but not
``contains 'World'``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "Node",
    "QuerySyntaxError",
    "QuerySubject",
    "name_tokens",
    "parse_query",
    "token_prefix_match",
]


class QuerySyntaxError(ValueError):
    """The ``q`` string is not a valid Drive query (Drive answers 400 ``invalid``)."""


class QuerySubject(Protocol):
    """What the evaluator needs to know about one file, from one caller's view."""

    def field(self, name: str) -> object:
        """Return a scalar field: ``name``, ``mimeType``, ``trashed``, times, ..."""
        ...

    def in_collection(self, value: str, collection: str) -> bool:
        """Return whether ``value`` is in ``parents``/``owners``/``writers``/``readers``."""
        ...


# -- token-prefix matching ------------------------------------------------------


def name_tokens(text: str) -> list[str]:
    """Split ``text`` the way Drive's name index does.

    Every non-alphanumeric character becomes a separator and case is folded, so
    ``'syft#v1#Bob.Smith@x.org'`` gives ``['syft', 'v1', 'bob', 'smith', 'x', 'org']``.
    """
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def token_prefix_match(query: str, text: str) -> bool:
    """Return whether every token of ``query`` is a prefix of some token of ``text``."""
    have = name_tokens(text)
    return all(any(t.startswith(q) for t in have) for q in name_tokens(query))


# -- tokenizer ------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<op><=|>=|!=|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>-?\d+(?:\.\d+)?)
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "string", "op", "lparen", "rparen", "word", "number", "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise QuerySyntaxError(f"unexpected character {text[pos]!r} at {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            value = m.group()
            if kind == "string":
                value = _ESCAPE_RE.sub(r"\1", value[1:-1])
            out.append(_Tok(kind, value, pos))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


# -- AST ------------------------------------------------------------------------

_STRING_FIELDS = {"name", "mimeType", "fullText", "description"}
_BOOL_FIELDS = {"trashed", "starred", "sharedWithMe", "hidden"}
_TIME_FIELDS = {"modifiedTime", "createdTime", "viewedByMeTime", "sharedWithMeTime"}
_COLLECTIONS = {"parents", "owners", "writers", "readers"}


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise QuerySyntaxError(f"invalid date-time {text!r}") from exc
    if value.tzinfo is None:  # Drive reads zone-less times as UTC
        value = value.replace(tzinfo=UTC)
    return value


class Node:
    """A node of a parsed query."""

    def evaluate(self, subject: QuerySubject) -> bool:  # pragma: no cover - abstract
        """Return whether the file described by ``subject`` matches."""
        raise NotImplementedError

    def fields(self) -> set[str]:  # pragma: no cover - abstract
        """Return the field and collection names the query refers to."""
        raise NotImplementedError


@dataclass(frozen=True)
class _And(Node):
    left: Node
    right: Node

    def evaluate(self, subject: QuerySubject) -> bool:
        return self.left.evaluate(subject) and self.right.evaluate(subject)

    def fields(self) -> set[str]:
        return self.left.fields() | self.right.fields()


@dataclass(frozen=True)
class _Or(Node):
    left: Node
    right: Node

    def evaluate(self, subject: QuerySubject) -> bool:
        return self.left.evaluate(subject) or self.right.evaluate(subject)

    def fields(self) -> set[str]:
        return self.left.fields() | self.right.fields()


@dataclass(frozen=True)
class _Not(Node):
    inner: Node

    def evaluate(self, subject: QuerySubject) -> bool:
        return not self.inner.evaluate(subject)

    def fields(self) -> set[str]:
        return self.inner.fields()


@dataclass(frozen=True)
class _In(Node):
    value: str
    collection: str

    def evaluate(self, subject: QuerySubject) -> bool:
        return subject.in_collection(self.value, self.collection)

    def fields(self) -> set[str]:
        return {self.collection}


@dataclass(frozen=True)
class _Compare(Node):
    field: str
    op: str
    value: object

    def evaluate(self, subject: QuerySubject) -> bool:
        have = subject.field(self.field)
        if self.op == "contains":
            text = "" if have is None else str(have)
            if self.field in ("name", "fullText", "description"):
                return token_prefix_match(str(self.value), text)
            return str(self.value).lower() in text.lower()
        if have is None:
            return self.op == "!="
        if self.field in _TIME_FIELDS:
            have = _parse_time(str(have))
        return _COMPARE[self.op](have, self.value)

    def fields(self) -> set[str]:
        return {self.field}


_COMPARE = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


# -- parser ---------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def _is_word(self, word: str) -> bool:
        return self.tok.kind == "word" and self.tok.text.lower() == word

    def _fail(self, what: str) -> QuerySyntaxError:
        tok = self.tok
        found = "end of query" if tok.kind == "end" else repr(tok.text)
        return QuerySyntaxError(f"expected {what} at {tok.pos}, found {found}")

    def parse(self) -> Node:
        node = self._or()
        if self.tok.kind != "end":
            raise self._fail("'and', 'or' or end of query")
        return node

    def _or(self) -> Node:
        node = self._and()
        while self._is_word("or"):
            self._next()
            node = _Or(node, self._and())
        return node

    def _and(self) -> Node:
        node = self._unary()
        while self._is_word("and"):
            self._next()
            node = _And(node, self._unary())
        return node

    def _unary(self) -> Node:
        if self._is_word("not"):
            self._next()
            return _Not(self._unary())
        if self.tok.kind == "lparen":
            self._next()
            node = self._or()
            if self.tok.kind != "rparen":
                raise self._fail("')'")
            self._next()
            return node
        return self._term()

    def _term(self) -> Node:
        tok = self.tok
        if tok.kind == "string":
            self._next()
            if not self._is_word("in"):
                raise self._fail("'in'")
            self._next()
            coll = self._next()
            if coll.kind != "word" or coll.text not in _COLLECTIONS:
                self.i -= 1
                raise self._fail("parents, owners, writers or readers")
            return _In(tok.text, coll.text)
        if tok.kind != "word":
            raise self._fail("a search term")
        field = self._next().text
        if field == "sharedWithMe" and not (
            self.tok.kind == "op" and self.tok.text in ("=", "!=")
        ):
            return _Compare("sharedWithMe", "=", True)
        known = _STRING_FIELDS | _BOOL_FIELDS | _TIME_FIELDS
        if field not in known:
            self.i -= 1
            raise self._fail("a known field")
        if self._is_word("contains"):
            self._next()
            if field not in _STRING_FIELDS:
                raise QuerySyntaxError(f"'contains' is not supported for {field}")
            value = self._next()
            if value.kind != "string":
                self.i -= 1
                raise self._fail("a quoted string")
            return _Compare(field, "contains", value.text)
        if self.tok.kind != "op":
            raise self._fail("an operator")
        op = self._next().text
        return _Compare(field, op, self._value(field, op))

    def _value(self, field: str, op: str) -> object:
        tok = self._next()
        if field in _BOOL_FIELDS:
            if op not in ("=", "!=") or tok.kind != "word":
                self.i -= 1
                raise self._fail("true or false")
            if tok.text.lower() not in ("true", "false"):
                self.i -= 1
                raise self._fail("true or false")
            return tok.text.lower() == "true"
        if tok.kind != "string":
            self.i -= 1
            raise self._fail("a quoted string")
        if field in _TIME_FIELDS:
            return _parse_time(tok.text)
        if field == "fullText" or op not in ("=", "!="):
            raise QuerySyntaxError(f"operator {op} is not supported for {field}")
        return tok.text


def parse_query(text: str) -> Node:
    """Parse a Drive ``q`` string.

    Parameters
    ----------
    text:
        The query, e.g. ``"'abc' in parents and trashed = false"``.

    Returns
    -------
    Node
        The root of the syntax tree; call ``evaluate(subject)`` per file.

    Raises
    ------
    QuerySyntaxError
        If the query is malformed or uses an unknown field or operator.
    """
    if not text.strip():
        raise QuerySyntaxError("empty query")
    return _Parser(text).parse()
