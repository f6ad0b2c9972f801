"""The one Slurm constraint grammar (appliance.constraint): parse, refuse, evaluate."""

import pytest

from appliance import constraint
from appliance.constraint import ConstraintError


def test_features_in_order():
    assert constraint.features("(epyc|avx512)&gpu") == ["epyc", "avx512", "gpu"]
    assert constraint.features(" epyc  &  avx512 ") == ["epyc", "avx512"]
    assert constraint.features("a.b_c-d") == ["a.b_c-d"]


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("epyc;rm", "character ';' is not allowed"),
    ("$(id)", "character '$' is not allowed"),
    ("gpu*2", "character '*' is not allowed"),
    ("[a|b]", "character '[' is not allowed"),
    ("a,b", "character ',' is not allowed"),
    ("epyc\n&avx512", "only features, '&', '|', parentheses and spaces are allowed"),
    ("epyc\n", "only features, '&', '|', parentheses and spaces are allowed"),
    ("\tepyc", "only features, '&', '|', parentheses and spaces are allowed"),
    ("epyc||gpu", "unexpected '|'"),
    ("epyc && gpu", "unexpected '&'"),
    ("&epyc", "unexpected '&'"),
    ("epyc&", "expression ends too early"),
    ("(epyc", "unbalanced parentheses"),
    ("epyc)", "unexpected ')'"),
    ("()", "unexpected ')'"),
    ("epyc gpu", "unexpected 'gpu'"),
])
def test_refusals(text, message):
    with pytest.raises(ConstraintError) as e:
        constraint.parse(text)
    assert e.value.message == message
    assert isinstance(e.value, ValueError)


def test_matches():
    assert constraint.matches("epyc&avx512", ["epyc", "avx512"])
    assert not constraint.matches("epyc&avx512", ["epyc"])
    assert constraint.matches("gpu|avx512", ["epyc", "avx512"])
    assert constraint.matches("(gpu|epyc)&avx512", ["epyc", "avx512"])
    assert not constraint.matches("(gpu|epyc)&avx512", ["gpu"])
    assert constraint.matches("", []) and constraint.matches(None, ["x"])


def test_left_to_right_like_slurm():
    # no precedence: a|b&c is (a|b)&c, not a|(b&c)
    assert not constraint.matches("a|b&c", ["a"])
    assert constraint.matches("a|(b&c)", ["a"])
    assert constraint.matches("a&b|c", ["c"])  # (a&b)|c


def test_matches_refuses_what_parse_refuses():
    with pytest.raises(ConstraintError):
        constraint.matches("epyc;id", ["epyc"])
