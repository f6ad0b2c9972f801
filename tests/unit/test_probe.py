"""appliance-probe: phase bookkeeping and the textfile output (the real run is an integration
test, tests/integration/test_operations.py)."""

from appliance import probe as P


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def make(monkeypatch, fail_in=None):
    clock = Clock()
    p = P.Probe("https://hub.example:8443", "probe", "pw", {"backend": "htcondor"}, clock=clock,
                out=open("/dev/null", "w"))
    calls = []
    for i, phase in enumerate(P.PHASES):
        def run(phase=phase, i=i):
            calls.append(phase)
            clock.t += i + 1
            if phase == fail_in:
                raise P.PhaseFailed(phase, "lane schedd unreachable")
        monkeypatch.setattr(p, phase, run)
    monkeypatch.setattr(p, "cleanup", lambda failure: calls.append("cleanup"))
    return p, calls


def test_all_phases_pass(monkeypatch):
    p, calls = make(monkeypatch)
    assert p.run() is None
    assert calls == [*P.PHASES, "cleanup"]
    assert p.times == {"login": 1, "spawn": 2, "ticket": 3, "cell": 4, "stop": 5}


def test_failure_names_phase_and_stops(monkeypatch, tmp_path):
    p, calls = make(monkeypatch, fail_in="spawn")
    f = p.run()
    assert f.phase == "spawn" and calls == ["login", "spawn", "cleanup"]
    out = tmp_path / "probe.prom"
    P.textfile(str(out), p, f, 1234.0, {"user": "probe"})
    text = out.read_text()
    assert 'appliance_probe_success{user="probe"} 0' in text
    assert 'appliance_probe_failed_phase{phase="spawn",user="probe"} 1' in text
    assert 'appliance_probe_phase_duration_seconds{phase="login",user="probe"} 1.000' in text
    assert "appliance_probe_last_run_timestamp_seconds" in text


def test_password_never_from_argv(tmp_path, capsys):
    assert P.main(["--user", "probe", "--password-file", str(tmp_path / "missing")]) == 2
    args = P.parse_args(["--user", "u", "--password-file", "/f"])
    assert not hasattr(args, "password")
