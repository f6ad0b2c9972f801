"""The shared allow-lists match whole strings only (a trailing newline is not a name)."""

import pytest

from appliance import names


@pytest.mark.parametrize("pattern,good,bad", [
    (names.USER_NAME_RE, ["alice", "a.b-c_1", "_svc"], ["", "-x", "alice\n", "al ice", "a" * 65]),
    (names.ENV_NAME_RE, ["A", "_x1", "MY_VAR"], ["", "1A", "A-B", "A\n", "A B"]),
    (names.SLURM_NAME_RE, ["jhub", "belle2-res", "a.b_c"], ["", "-p", "jhub\n", "a,b", "a b"]),
    (names.HTCONDOR_JOB_ID_RE, ["7.0", "123.45"], ["7", "7.0\n", "7.0.1", "a.0"]),
    (names.SLURM_JOB_ID_RE, ["42", "42_3"], ["", "42\n", "42_", "4-2", "42;1"]),
])
def test_whole_string_only(pattern, good, bad):
    assert all(pattern.match(s) for s in good)
    assert not any(pattern.match(s) for s in bad)
