"""THE Slurm constraint grammar (``--constraint``), written once: tokenize, parse, evaluate.

Used by ``appliance.options`` (validation of user input) and the Slurm backend (which features a
request names, which nodes satisfy it, the sbatch argument). Standard library only.

Grammar (a subset of Slurm's, enough for feature choice and safe to pass on)::

    expr    := term (('&' | '|') term)*
    term    := FEATURE | '(' expr ')'
    FEATURE := [A-Za-z0-9_.-]+

Plain spaces may separate tokens; any other character (newline, tab, ';', '*', '[', ...) is
refused, and so are parentheses nested deeper than MAX_DEPTH. Like Slurm, ``&`` and ``|`` have equal precedence and are evaluated left to right
(``a|b&c`` means ``(a|b)&c``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Union

FEATURE_RE = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN_RE = re.compile(r"\(|\)|&|\||[A-Za-z0-9_.-]+")
_OPERATORS = ("&", "|")
#: Deepest parenthesis nesting accepted (the parser recurses; Python's stack would end first).
MAX_DEPTH = 32

# A parsed expression: a feature name, or (operator, left, right).
Tree = Union[str, tuple]


class ConstraintError(ValueError):
    """A malformed constraint; ``message`` is for the user (the caller names the field)."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``; ConstraintError on any character outside the grammar."""
    if re.search(r"[^\S ]", text):
        raise ConstraintError("only features, '&', '|', parentheses and spaces are allowed")
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos] == " ":
            pos += 1
            continue
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise ConstraintError(f"character {text[pos]!r} is not allowed")
        tokens.append(m.group())
        pos = m.end()
    return tokens


@dataclass(frozen=True)
class Constraint:
    """A parsed constraint: the features it names (in order) and its expression tree."""

    text: str
    features: tuple[str, ...]
    tree: Tree

    def matches(self, node_features: Iterable[str]) -> bool:
        """Whether a node with ``node_features`` satisfies the constraint."""
        have = set(node_features)

        def value(t: Tree) -> bool:
            if isinstance(t, str):
                return t in have
            op, left, right = t
            return (value(left) and value(right)) if op == "&" else (value(left) or value(right))

        return value(self.tree)


@lru_cache(maxsize=512)
def parse(text: str) -> Constraint:
    """Parse ``text`` or raise ConstraintError (cached: the backend evaluates per node)."""
    tokens = tokenize(text)
    if not tokens:
        raise ConstraintError("is empty")
    features: list[str] = []
    pos = 0
    depth = 0

    def term() -> Tree:
        nonlocal pos, depth
        if pos >= len(tokens):
            raise ConstraintError("expression ends too early")
        tok = tokens[pos]
        if tok == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise ConstraintError(f"parentheses nested deeper than {MAX_DEPTH}")
            pos += 1
            inner = expr()
            depth -= 1
            if pos >= len(tokens) or tokens[pos] != ")":
                raise ConstraintError("unbalanced parentheses")
            pos += 1
            return inner
        if tok == ")" or tok in _OPERATORS:
            raise ConstraintError(f"unexpected {tok!r}")
        features.append(tok)
        pos += 1
        return tok

    def expr() -> Tree:
        nonlocal pos
        tree = term()
        while pos < len(tokens) and tokens[pos] in _OPERATORS:
            op = tokens[pos]
            pos += 1
            tree = (op, tree, term())
        return tree

    tree = expr()
    if pos != len(tokens):
        raise ConstraintError(f"unexpected {tokens[pos]!r}")
    return Constraint(text, tuple(features), tree)


def features(text: str) -> list[str]:
    """The feature names ``text`` uses (ConstraintError if malformed)."""
    return list(parse(text).features)


def matches(text: str, node_features: Iterable[str]) -> bool:
    """Whether a node with ``node_features`` satisfies ``text`` ('' / None: any node does)."""
    if not text:
        return True
    return parse(text).matches(node_features)
