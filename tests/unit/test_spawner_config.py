"""BatchSpawner settings: validated at config load, naming the setting; the shipped
jupyterhub_config.py loads a site file and refuses a wrong one at hub start."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config, PyFileConfigLoader

import appliance.hub
from appliance.hub.spawner import BatchSpawner
from appliance.options import DEFAULT_RESERVED_ENV, Bounds

HUB_CONFIG = Path(appliance.hub.__file__).with_name("jupyterhub_config.py")


def spawner(**settings) -> BatchSpawner:
    c = Config()
    for key, value in settings.items():
        c.BatchSpawner[key] = value
    return BatchSpawner(config=c)


def test_defaults_are_the_validators():
    sp = spawner()
    assert sp.bounds() == Bounds(default_backend=None)
    assert tuple(sp.reserved_env) == DEFAULT_RESERVED_ENV
    assert sp.port_range == (40000, 41000)
    assert (sp.stop_timeout, sp.status_timeout, sp.check_interval) == (15.0, 5.0, 1.0)


def test_every_setting_is_documented_and_configurable():
    own = set(BatchSpawner.class_own_traits()) - {
        "job_id", "backend", "job_host", "ccache", "env_path", "registry"}  # runtime state
    for name in own:
        trait = BatchSpawner.class_traits()[name]
        assert trait.metadata.get("config") is True, name
        assert trait.help, name


@pytest.mark.parametrize("settings,words", [
    ({"port_range": (41000, 40000)}, "port_range: (41000, 40000)"),
    ({"port_range": (80, 1000)}, "port_range"),
    ({"port_range": (40000, 70000)}, "port_range"),
    ({"default_backend": "pbs"}, "default_backend: 'pbs' is not one of scheduler_classes"),
    ({"scheduler_classes": {"slurm": "x"}, "default_backend": "htcondor"}, "default_backend"),
    ({"scheduler_classes": {}}, "scheduler_classes: at least one backend"),
    ({"max_runtime_hours": 4.0}, "default_runtime_hours (8) is above max_runtime_hours (4)"),
    ({"default_runtime_hours": 200.0}, "default_runtime_hours (200) is above"),
    ({"job_dir": "/tmp/jobs"}, "job_dir"),
    ({"job_dir": "a/../../x"}, "job_dir"),
    ({"job_dir": ""}, "job_dir"),
    ({"max_cpus": 0}, "max_cpus"),
    ({"max_memory_gb": 0.1}, "max_memory_gb"),
    ({"stop_timeout": -1.0}, "stop_timeout"),
    ({"status_timeout": 0.0}, "status_timeout"),
    ({"check_interval": 3600.0}, "check_interval"),
    ({"submit_helper_command": []}, "submit_helper_command"),
])
def test_wrong_settings_fail_at_load_naming_the_setting(settings, words):
    with pytest.raises(TraitError) as e:
        spawner(**settings)
    assert words in str(e.value)


def test_consistent_settings_load_in_any_order():
    sp = spawner(default_runtime_hours=2.0, max_runtime_hours=4.0, default_backend="slurm",
                 scheduler_classes={"slurm": "x"}, port_range=[1024, 65535], job_dir="jobs/nb")
    assert (sp.default_runtime_hours, sp.default_backend, sp.port_range) == (2.0, "slurm",
                                                                            (1024, 65535))


def load_hub_config(monkeypatch, tmp_path, site: str) -> Config:
    site_file = tmp_path / "appliance_config.py"
    site_file.write_text("c = get_config()\n" + site)
    monkeypatch.setenv("APPLIANCE_CONFIG", str(site_file))
    monkeypatch.setenv("APPLIANCE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("APPLIANCE_CONFIG_DIR", str(tmp_path / "appliance_config.d"))
    return PyFileConfigLoader(HUB_CONFIG.name, path=str(HUB_CONFIG.parent)).load_config()


def test_hub_config_loads_the_site_file(monkeypatch, tmp_path):
    c = load_hub_config(monkeypatch, tmp_path, "c.BatchSpawner.max_cpus = 3\n")
    assert c.JupyterHub.spawner_class == "appliance.hub.spawner.BatchSpawner"
    assert c.JupyterHub.authenticator_class.endswith("KerberosPAMAuthenticator")
    assert c.BatchSpawner.max_cpus == 3 and c.BatchSpawner.default_backend == "htcondor"
    templates = Path(appliance.hub.__file__).with_name("templates")
    assert c.JupyterHub.template_paths == [str(templates)]
    assert (templates / "spawn_form.html").is_file()
    assert [h[0] for h in c.JupyterHub.extra_handlers] == [
        "/api/batch/port", "/api/batch/options-schema", "/api/batch/credential",
        "/api/batch/session", "/api/batch/session/extend", "/api/batch/cull",
        "/api/batch/availability", "/api/batch/availability/schema", "/batch/other-options"]
    # no idle limit set: no culler service
    assert not any(s.get("name") == "idle-culler" for s in c.JupyterHub.services)


def test_drop_ins_load_after_the_site_file_in_name_order(monkeypatch, tmp_path):
    drop_ins = tmp_path / "appliance_config.d"
    drop_ins.mkdir()
    (drop_ins / "20-later.py").write_text("c = get_config()\nc.BatchSpawner.max_cpus = 5\n")
    (drop_ins / "10-login.py").write_text("c = get_config()\nc.BatchSpawner.max_cpus = 4\n"
                                          "c.BatchSpawner.start_on_login = True\n")
    (drop_ins / "README").write_text("c.BatchSpawner.max_cpus = 99  (not a .py file: ignored)\n")
    c = load_hub_config(monkeypatch, tmp_path, "c.BatchSpawner.max_cpus = 3\n")
    assert c.BatchSpawner.max_cpus == 5 and c.BatchSpawner.start_on_login is True


def test_start_on_login_is_off_by_default(monkeypatch, tmp_path):
    c = load_hub_config(monkeypatch, tmp_path, "")
    assert "start_on_login" not in c.BatchSpawner and spawner().start_on_login is False


def test_site_idle_limits_start_the_culler_service(monkeypatch, tmp_path):
    c = load_hub_config(monkeypatch, tmp_path, "c.IdleCulling.timeouts = {'htcondor': 900, "
                        "'slurm/jhub': 0, 'slurm': 1800}\nc.IdleCulling.cull_every = 30\n")
    [svc] = [s for s in c.JupyterHub.services if s["name"] == "idle-culler"]
    assert svc["command"][1:3] == ["-m", "jupyterhub_idle_culler"]
    assert "--timeout=900" in svc["command"] and "--cull-every=30" in svc["command"]
    assert svc["user"] == "cullsvc"
    [role] = [r for r in c.JupyterHub.load_roles if r["name"] == "idle-culler"]
    assert set(role["scopes"]) == {"list:users", "read:users:activity", "read:servers",
                                   "delete:servers", "custom:batch:cull"}
    assert "custom:batch:cull" in c.JupyterHub.custom_scopes


def test_hub_config_refuses_a_wrong_site_setting_at_start(monkeypatch, tmp_path):
    with pytest.raises(TraitError, match="port_range"):
        load_hub_config(monkeypatch, tmp_path, "c.BatchSpawner.port_range = (41000, 40000)\n")
