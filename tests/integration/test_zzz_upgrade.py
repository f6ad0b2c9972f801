"""Issue 15, upgrade: a state volume and hub database written by the previous release's image
(release/previous, built by scripts/build-previous.sh as localhost/jba-appliance:previous) are
taken over by the image under test, with sessions running.

1. The appliance container goes, its state volume is removed and the hub's PostgreSQL database
   dropped and created empty: the previous image starts on nothing, as at a site's first install.
2. Under the previous image: an HTCondor session (bench81) and a Slurm session (bench82), each with
   a kernel holding a variable.
3. The container is recreated from the image under test (the same volumes, as an admin upgrades).
4. Must hold: the hub starts; the database schema is at the new JupyterHub's alembic head (the
   appliance's `database prepare` ran JupyterHub's upgrade); the secrets, the demo CA and the
   users' API tokens are the same; both sessions answer through their routes with their variables,
   on the same jobs; the new hub stops them (the spawner state the previous image wrote is read).
5. The previous release's servers know only the cluster side's plain port 8081: the new hub's start
   kept it open for them; once they are gone, the next hub start closes it.

It replaces the appliance, so it runs last of all (marker ``replaces_appliance``, tests/conftest.py),
after the secret scan; the site is left running the image under test on the upgraded state.
Figures: tests/artifacts/upgrade.json and docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import (ARTIFACTS, PROJECT, ROOT, container, podman, refresh_ca, site_exec,
                            wait_for)
from tests.integration.test_zx_load_restarts import start
from tests.integration.test_zy_faults import (hub_healthy, lane_jobs, now, session, slurm_jobs,
                                              stop_server)

pytestmark = [pytest.mark.minisite, pytest.mark.replaces_appliance, pytest.mark.timeout(900)]

PREVIOUS = "previous"  # the tag scripts/build-previous.sh gives
CURRENT = os.environ.get("JBA_TAG", "latest")
HUB_PY = "/opt/jupyterhub/bin/python"


def appliance_from(tag: str) -> float:
    """(Re)create the appliance container from ``localhost/jba-appliance:<tag>`` with the
    compose file's volumes and networks; seconds until the hub answers over HTTPS."""
    t0 = now()
    env = dict(os.environ, JBA_TAG=tag)
    r = subprocess.run([str(ROOT / ".venv/bin/podman-compose"), "-p", PROJECT, "-f", "compose.yaml",
                        "up", "-d", "--no-deps", "--no-build", "--force-recreate", "appliance"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    image = podman("inspect", "--format", "{{.ImageName}}", container("appliance")).stdout.strip()
    assert image == f"localhost/jba-appliance:{tag}", image

    def up() -> bool:
        try:
            refresh_ca()  # absent until the appliance has made its state
        except Exception:  # noqa: BLE001 - not there yet
            return False
        return hub_healthy()
    wait_for(f"the hub of image {tag}", up, timeout=300, interval=1)
    return now() - t0


def psql(sql: str) -> str:
    return site_exec("db", "runuser", "-u", "postgres", "--", "psql", "-d", "postgres", "-tAc",
                     sql).stdout.strip()


def db_version() -> str:
    return site_exec("db", "runuser", "-u", "postgres", "--", "psql", "-d", "jupyterhub", "-tAc",
                     "SELECT version_num FROM alembic_version").stdout.strip()


def alembic_head() -> str:
    code = ("import os, jupyterhub; from alembic.script import ScriptDirectory; "
            "print(ScriptDirectory(os.path.join(os.path.dirname(jupyterhub.__file__), 'alembic'))"
            ".get_current_head())")
    return site_exec("appliance", HUB_PY, "-c", code).stdout.strip()


def hub_version() -> str:
    return site_exec("appliance", HUB_PY, "-c",
                     "import jupyterhub; print(jupyterhub.__version__)").stdout.strip()


def state_digest() -> str:
    """SHA-256 of every secret and of the demo CA in the state volume (never the values)."""
    return site_exec("appliance", "sh", "-c",
                     "cd /srv/appliance && find secrets tls/ca.crt tls/ca.key -type f | sort | "
                     "xargs sha256sum").stdout


def test_state_written_by_the_previous_release_is_taken_over_with_sessions_running(site):
    have = podman("image", "inspect", "--format", '{{index .Labels "jba.commit"}}',
                  f"localhost/jba-appliance:{PREVIOUS}", check=False)
    assert have.returncode == 0, ("no image of the previous release: make test builds it "
                                  "(bash scripts/build-previous.sh)")
    commit = have.stdout.strip()

    # 1. Nothing: no container, no state volume, an empty hub database. The container's log of
    #    the whole run is kept first (make test saves the containers' logs when a test failed).
    podman("stop", "-t", "30", container("appliance"), timeout=120)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    old = podman("logs", container("appliance"), check=False, timeout=120)
    (ARTIFACTS / "appliance-before-upgrade.log").write_text(old.stdout + old.stderr)
    podman("rm", container("appliance"), timeout=60)
    podman("volume", "rm", f"{PROJECT}_appliance-state", timeout=60)
    psql("DROP DATABASE IF EXISTS jupyterhub WITH (FORCE)")
    psql("CREATE DATABASE jupyterhub OWNER jupyterhub")

    # 2. The previous release, with sessions.
    first_start = appliance_from(PREVIOUS)
    lives = [start("bench81", "htcondor"), start("bench82", "slurm")]
    # after the sessions: the bridge makes its state key when it first saves its state
    before = {"version": hub_version(), "schema": db_version(), "state": state_digest()}
    jobs = {s.client.user: s.job_id for s in lives}

    # 3. The upgrade.
    t0 = now()
    upgrade_start = appliance_from(CURRENT)
    after = {"version": hub_version(), "schema": db_version(), "state": state_digest(),
             "head": alembic_head()}
    logs = podman("logs", container("appliance"), check=False)
    prepared = "database: ready" in logs.stdout + logs.stderr  # the schema check/upgrade ran
    holds = {s.client.user: s.holds(timeout=30) for s in lives}
    back = now() - t0
    known = {s.client.user: (session(s.client)["server"] or {}).get("job_id") for s in lives}

    # 4. The new hub ends what the old one started.
    for s in lives:
        stop_server(s.client)

    def queues() -> dict:
        return {"bench81": lane_jobs("bench81"), "bench82": slurm_jobs("bench82")}
    try:
        wait_for("both jobs out of the queues", lambda: not any(queues().values()), timeout=90,
                 interval=1)
    except AssertionError:
        pass  # the figure and the assertion below say what is left
    left = queues()
    fig = {"previous_commit": commit, "previous_hub": before["version"],
           "previous_schema": before["schema"], "new_hub": after["version"],
           "new_schema": after["schema"], "alembic_head": after["head"],
           "previous_first_start_s": round(first_start, 1),
           "upgrade_start_s": round(upgrade_start, 1), "sessions_back_s": round(back, 1),
           "sessions_kept": sum(holds.values()), "sessions": len(lives),
           "state_unchanged": before["state"] == after["state"], "jobs_left_after_stop": left}
    print(f"\nUPGRADE {json.dumps(fig)}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "upgrade.json").write_text(json.dumps(fig, indent=2) + "\n")

    assert prepared, "the new image did not run its database preparation (upgrade) step"
    assert after["schema"] == after["head"], fig
    assert before["state"] == after["state"], "the upgrade changed a secret or the demo CA"
    assert all(holds.values()), f"sessions lost in the upgrade: {holds}"
    assert known == jobs, f"the upgraded hub lost track of the jobs: {known} != {jobs}"
    assert left == {"bench81": [], "bench82": []}, f"jobs left after stop: {left}"

    # 5. The cluster side's plain port was kept for the previous release's servers (they know only
    #    http://appliance:8081); with them gone, the next hub start closes it (docs/security.md).
    from tests.integration.test_isolation import cluster_get
    logs = podman("logs", container("appliance"), check=False)
    assert "2 server(s) of an earlier release on plain HTTP" in logs.stdout + logs.stderr
    site_exec("appliance", "supervisorctl", "-c", "/etc/supervisor/appliance.conf", "restart",
              "jupyterhub", timeout=120)
    wait_for("the restarted hub", hub_healthy, timeout=120, interval=1)
    wait_for("the plain port closed (nginx reloaded)", lambda: cluster_get(
        "kdc", "http://appliance.mini.test:8081/hub/api/") == "refused", timeout=20, interval=1)
