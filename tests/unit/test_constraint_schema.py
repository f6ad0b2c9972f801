"""The constraint JSON schema the spawn page validates with accepts exactly what the server's
parser accepts (appliance.constraint_schema vs appliance.constraint / appliance.options)."""

import re

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import constraint
from appliance.constraint_schema import SCHEMA, parentheses_problem, schema_problem
from appliance.options import Bounds, OptionsError, validate_options


def server_accepts(text: str) -> bool:
    try:
        validate_options({"backend": "slurm", "constraint": text}, Bounds(backends=("slurm",)))
    except OptionsError as e:
        assert e.field == "constraint"
        return False
    return True


def page_accepts(text: str) -> bool:
    """The page's rules: the standard JSON schema part (the jsonschema library) plus the
    schema's x-parentheses rule."""
    try:
        jsonschema.validate(text, SCHEMA)
    except jsonschema.ValidationError:
        return False
    return parentheses_problem(text, SCHEMA["x-parentheses"]) is None


def test_the_schema_is_a_valid_json_schema_and_its_pattern_is_portable():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    # nothing Python-only in the pattern (the page compiles it with JavaScript's RegExp)
    assert not re.search(r"\(\?[P<]|\\[AZz]", SCHEMA["pattern"])


@pytest.mark.parametrize("text,ok", [
    ("epyc", True), ("epyc&avx512", True), (" (epyc | gpu) & avx512 ", True), ("a|b&c", True),
    ("((a))", True), ("(" * 32 + "a" + ")" * 32, True), ("(" * 33 + "a" + ")" * 33, False),
    ("", False), ("a&", False), ("&a", False), ("a b", False), ("a&&b", False), ("(a", False),
    ("a)", False), ("()", False), ("(a)b", False), ("a(b)", False), ("a\tb", False),
    ("a;b", False), ("épyc", False), ("a" * 257, False), ("a\n", False), (")a(", False),
])
def test_examples_agree(text, ok):
    assert server_accepts(text) is ok
    assert page_accepts(text) is ok
    assert (schema_problem(text) is None) is ok


tokens = st.sampled_from(["a", "gpu", "x.y-z_1", "&", "|", "(", ")", " ", "", "\t", ";", "é"])


@settings(max_examples=500, deadline=None)
@given(st.lists(tokens, max_size=14).map("".join) | st.text(alphabet="ab&|() ", max_size=20))
def test_page_and_server_accept_the_same_strings(text):
    assert page_accepts(text) == server_accepts(text) == (schema_problem(text) is None), text


def test_the_parser_and_the_schema_agree_on_depth():
    assert constraint.MAX_DEPTH == SCHEMA["x-parentheses"]["maxDepth"]
