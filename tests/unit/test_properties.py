"""Property-based tests (hypothesis) of the three parsers of user-controlled input (issue 10):
whatever comes in, each answers with its result or its documented error, nothing else.

- ``appliance.options.validate_options``: JSON-like data -> UserOptions or OptionsError (naming a
  field); an accepted env value never holds a Cc, Cf, Zl, Zp or Cs character, and the names and
  values stay within their sizes.
- ``appliance.constraint.parse``: any text -> Constraint or ConstraintError; what it accepts
  round-trips through its features and evaluates without error.
- ``appliance.ccache.parse``: any bytes (random, or a real-format cache mutated, truncated or
  extended) -> CCache or CCacheError; ``minimal()`` and ``check_tgt`` answer CCacheError or
  CredentialRefused only.
"""

from __future__ import annotations

import json
import unicodedata

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appliance import ccache, constraint, options
from appliance.ccache import CCacheError, CredentialRefused
from appliance.constraint import ConstraintError
from appliance.options import Bounds, OptionsError, UserOptions, validate_options

from .test_ccache import REALM, synth

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BOUNDS = Bounds(max_gpus=2)
FIELDS = ("backend", "interface", "cpus", "memory_gb", "gpus", "runtime_hours", "env",
          "partition", "reservation", "constraint", "bogus")

json_scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=10), inner, max_size=4), max_leaves=12)

# Characters a value must never carry, and names near the valid form.
REFUSED = [chr(c) for c in (0, 9, 10, 13, 27, 0x7F, 0x85, 0xAD, 0x200B, 0x200E, 0x202E, 0x2028,
                            0x2029, 0x2066, 0xFEFF, 0xE0001)]
env_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z") | st.text(max_size=12)
env_values = st.text(max_size=60) | st.builds(
    lambda a, c, b: a + c + b, st.text(max_size=10), st.sampled_from(REFUSED), st.text(max_size=10))
envs = st.dictionaries(env_names, env_values, max_size=6) | json_values

option_dicts = st.fixed_dictionaries({}, optional={
    "backend": st.sampled_from(["htcondor", "slurm", "pbs"]) | json_scalars,
    "interface": st.sampled_from(["lab", "notebook"]) | json_scalars,
    "cpus": st.integers(-2, 12) | json_scalars,
    "memory_gb": st.floats(-1, 40) | json_scalars,
    "gpus": st.integers(-1, 3) | json_scalars,
    "runtime_hours": st.floats(-1, 200) | json_scalars,
    "env": envs,
    "partition": st.sampled_from(["jhub", "max-cpu", "a b"]) | json_scalars,
    "reservation": st.text(max_size=70) | json_scalars,
    "constraint": st.text(alphabet="ab&|() \n;", max_size=30) | json_scalars,
    "bogus": json_scalars,
})


def _no_refused_character(value: str) -> bool:
    return not any(unicodedata.category(c) in options.REFUSED_CATEGORIES for c in value)


@SETTINGS
@given(option_dicts | json_values)
@example({"backend": "slurm", "env": {"A": "x\u2028y"}})
@example({"backend": "slurm", "constraint": "(" * 200 + "a" + ")" * 200})
@example({"backend": "slurm", "env": {"A": "\ud800"}})
def test_options_validator_answers_options_or_its_error(data):
    try:
        opts = validate_options(data, BOUNDS)
    except OptionsError as e:
        assert e.field in FIELDS + ("options",), e.field
        assert str(e).startswith(e.field + ": ") and e.message
        json.dumps(str(e))  # the message goes into a JSON answer
        return
    assert isinstance(opts, UserOptions)
    assert len(opts.env) <= options.MAX_ENV_VARS
    assert sum(len(k) + len(v) for k, v in opts.env.items()) <= options.MAX_ENV_TOTAL
    for name, value in opts.env.items():
        assert options.ENV_NAME_RE.match(name) and len(name) <= options.MAX_ENV_NAME_LEN
        assert _no_refused_character(value) and len(value) <= options.MAX_ENV_VALUE_LEN
    if opts.constraint is not None:
        constraint.parse(opts.constraint)


@SETTINGS
@given(st.text(max_size=30), st.sampled_from(REFUSED), st.text(max_size=30))
def test_every_refused_character_is_refused_and_named(before, bad, after):
    value = before + bad + after
    try:
        validate_options({"backend": "htcondor", "env": {"A": value}}, BOUNDS)
    except OptionsError as e:
        assert e.field == "env" and "control, format or line separator" in e.message
        assert "U+" in e.message and "position" in e.message
    else:
        raise AssertionError(f"{value!r} accepted")


@SETTINGS
@given(st.dictionaries(st.from_regex(r"\A[A-Z][A-Z0-9_]{0,127}\Z"), st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Zl", "Zp", "Cs")),
    min_size=0, max_size=4096), max_size=64))
def test_the_total_size_is_bounded_and_named(env):
    env = {k: v for k, v in env.items() if not options._env_is_reserved(k, BOUNDS.reserved_env)}
    total = sum(len(k) + len(v) for k, v in env.items())
    try:
        opts = validate_options({"backend": "htcondor", "env": env}, BOUNDS)
    except OptionsError as e:
        assert e.field == "env"
        assert total > options.MAX_ENV_TOTAL or "longer than" in e.message, e.message
    else:
        assert total <= options.MAX_ENV_TOTAL and opts.env == env


def test_total_size_refusal_example():
    env = {f"V{i}": "x" * 4000 for i in range(5)}
    try:
        validate_options({"backend": "htcondor", "env": env}, BOUNDS)
    except OptionsError as e:
        assert e.field == "env" and f"together are longer than {options.MAX_ENV_TOTAL}" in e.message
    else:
        raise AssertionError("20 kB of env accepted")


constraint_text = st.text(alphabet="ab_.-&|() \t\n;*[é0", max_size=60) | st.text(max_size=40) | \
    st.builds(lambda n: "(" * n + "a" + ")" * n, st.integers(0, 2000))


@SETTINGS
@given(constraint_text)
def test_constraint_grammar_answers_a_tree_or_its_error(text):
    try:
        c = constraint.parse(text)
    except ConstraintError as e:
        assert e.message
        return
    assert c.features and all(constraint.FEATURE_RE.fullmatch(f) for f in c.features)
    assert all(f in text for f in c.features)
    assert isinstance(c.matches(set(c.features)), bool) and c.matches(set(c.features)) in (True,
                                                                                           False)
    assert c.matches(set()) is False  # every expression needs at least one feature


def test_deep_nesting_is_a_constraint_error_not_a_recursion_error():
    ok = "(" * constraint.MAX_DEPTH + "a" + ")" * constraint.MAX_DEPTH
    assert constraint.features(ok) == ["a"]
    deep = "(" * (constraint.MAX_DEPTH + 1) + "a" + ")" * (constraint.MAX_DEPTH + 1)
    try:
        constraint.parse(deep)
    except ConstraintError as e:
        assert f"nested deeper than {constraint.MAX_DEPTH}" in e.message
    else:
        raise AssertionError("accepted")
    try:
        constraint.parse("(" * 5000 + "a" + ")" * 5000)
    except ConstraintError:
        pass


GOOD = synth(f"alice@{REALM}", now=1_700_000_000)


def _check_parsed(data: bytes) -> None:
    try:
        cc = ccache.parse(data)
    except CCacheError:
        return
    str(cc.principal)
    try:
        mini = cc.minimal()
    except CCacheError:
        mini = None
    if mini is not None:
        assert ccache.parse(mini).tgt is not None
    try:
        ccache.check_tgt(cc, f"alice@{REALM}", now=1_700_000_100)
    except CredentialRefused:
        pass


@SETTINGS
@given(st.binary(max_size=600))
def test_ccache_parser_on_random_bytes(data):
    _check_parsed(data)
    _check_parsed(GOOD[:2] + data)  # past the version check


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(GOOD)), st.binary(max_size=40))
def test_ccache_parser_on_mutated_real_caches(flips, cut, tail):
    data = bytearray(GOOD)
    for pos, value in flips:
        data[pos] = value
    _check_parsed(bytes(data))
    _check_parsed(bytes(data[:cut]))
    _check_parsed(bytes(data) + tail)
