"""The user-side HTCondor submission explains a schedd that is down (the fault suite's lane
outage): a fake ``htcondor2`` module stands in for the bindings."""

from __future__ import annotations

import pytest

from appliance.userside.htcondor import locate_or_explain


class FakeHTCondor:
    class DaemonType:
        Schedd = "Schedd"

    def __init__(self, error: Exception | None):
        self.error = error
        outer = self

        class Collector:
            def __init__(self, host=None):
                self.host = host

            def locate(self, kind, name=None):
                if outer.error:
                    raise outer.error
                return {"Name": name, "kind": kind}

        class Schedd:
            def __init__(self, ad):
                self.ad = ad

        self.Collector, self.Schedd = Collector, Schedd


def test_a_listed_schedd_is_returned():
    schedd = locate_or_explain(FakeHTCondor(None), "lane.mini.test", "lane.mini.test")
    assert schedd.ad == {"Name": "lane.mini.test", "kind": "Schedd"}


@pytest.mark.parametrize("error", [RuntimeError("Unable to locate local daemon."), OSError()])
def test_a_schedd_that_is_down_is_named_with_what_to_do(error):
    with pytest.raises(RuntimeError) as e:
        locate_or_explain(FakeHTCondor(error), "lane.mini.test", "lane.mini.test")
    msg = str(e.value)
    assert msg.startswith("the HTCondor schedd lane.mini.test is not available")
    assert "collector lane.mini.test says: " in msg and "try again in a few minutes" in msg
    assert ("Unable to locate local daemon." in msg) or ("OSError" in msg)
