"""The Slurm constraint grammar (``appliance.constraint``) as a JSON schema, for the spawn page.

The server validates with the parser (the authority); the page validates as the user types with
this schema (rendered into it as JSON; ``templates/spawn_form_fields_script.html``). Both accept
exactly the same strings, which ``tests/unit/test_constraint_schema.py`` checks against the parser
on generated input. A regular expression cannot count parentheses, so the schema has two parts:

* ``pattern`` (standard JSON schema, an ECMA-262 regular expression that Python's ``re`` reads
  alike): features and operators alternate, ``(`` only before a feature, ``)`` only after one,
  plain spaces between tokens, nothing else;
* ``x-parentheses`` (this schema's own keyword): every ``)`` closes an earlier ``(``, all are
  closed, nesting at most ``maxDepth`` deep.

With equal precedence of ``&`` and ``|`` (evaluated left to right) every string that passes both
is a valid expression and vice versa.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from .constraint import MAX_DEPTH

MAX_LENGTH = 256  # as appliance.options refuses
_FEATURE = r"[A-Za-z0-9_.-]+"
_TERM = rf"(?:\( *)*{_FEATURE}(?: *\))*"
# The end: "(?![\s\S])" (nothing follows), not "$": Python's "$" also matches before a final newline.
PATTERN = rf"^ *{_TERM}(?: *[&|] *{_TERM})* *(?![\s\S])"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Slurm node features (constraint)",
    "description": "features joined by & (and) and | (or), with parentheses, e.g. epyc&avx512",
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_LENGTH,
    "pattern": PATTERN,
    "x-parentheses": {"balanced": True, "maxDepth": MAX_DEPTH},
    "x-messages": {
        "maxLength": f"is longer than {MAX_LENGTH} characters",
        "pattern": "only features (letters, digits, _ . -) joined by & or |, parentheses and "
                   "spaces; an operator between every two features",
        "balanced": "unbalanced parentheses",
        "maxDepth": f"parentheses nested deeper than {MAX_DEPTH}",
    },
}


def parentheses_problem(text: str, rule: dict) -> Optional[str]:
    """The ``x-parentheses`` rule: None, or which part of it ``text`` breaks."""
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return "balanced"
    if depth:
        return "balanced"
    if deepest > rule["maxDepth"]:
        return "maxDepth"
    return None


def schema_problem(text: str, schema: dict = SCHEMA) -> Optional[str]:
    """What the page checks, in Python: None if ``text`` passes, else the schema's message."""
    msgs = schema["x-messages"]
    if len(text) > schema["maxLength"]:
        return msgs["maxLength"]
    if len(text) < schema["minLength"] or not re.fullmatch(schema["pattern"], text):
        return msgs["pattern"]
    broken = parentheses_problem(text, schema["x-parentheses"])
    return msgs[broken] if broken else None
