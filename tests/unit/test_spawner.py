"""BatchSpawner against a fake scheduler (the Scheduler interface) and a fake submit helper.

Each test simulates one hub: an in-memory JupyterHub database, one Registry (the hub's schedulers
and watchers), a FakeCluster whose jobs the test moves from state to state; ``restart()`` gives a
new hub process on the same database and cluster. Nothing reads the wall clock for an assertion.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import pytest_asyncio
from tornado import web

from appliance.hub.registry import Registry
from appliance.hub.scheduler.base import DONE, HELD, PENDING, RUNNING
from appliance.hub.spawner import SpawnError
from appliance.options import OptionsError
from tests.unit.hub_fakes import (
    ACCOUNT, FakeCluster, helper_command, hub_config, new_db, new_spawner, scheduler_class,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]
JOB = "41.0"


class SimHub:
    """One simulated hub process (see module doc)."""

    def __init__(self, tmp_path, **settings):
        self.cluster = FakeCluster()
        self.record = tmp_path / "helper.jsonl"
        self.db = new_db()
        self.settings = dict(
            scheduler_classes={"fake": scheduler_class(self.cluster)}, default_backend="fake",
            require_credential=[], check_interval=0.02, status_timeout=0.5, stop_timeout=2.0,
            submit_helper_command=helper_command(self.record, {"job_id": JOB}),
        )
        self.settings.update(settings)
        self.registries: list[Registry] = []
        self.restart()

    def restart(self) -> None:
        """A new hub process: new config objects, a fresh registry (schedulers, watchers)."""
        self.config = hub_config(**self.settings)
        self.registry = Registry(self.settings["scheduler_classes"], config=self.config)
        self.registries.append(self.registry)

    def spawner(self, **traits):
        return new_spawner(self.db, self.registry, config=self.config, **traits)

    def helper_calls(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def close(self) -> None:
        for registry in self.registries:
            registry.close()


@pytest_asyncio.fixture
async def sim(tmp_path):
    hub = SimHub(tmp_path)
    yield hub
    hub.close()
    await asyncio.sleep(0)  # let the cancelled watcher tasks finish


@pytest_asyncio.fixture
async def listener():
    """A TCP server on loopback standing in for the notebook server; yields its port."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


class Progress:
    """Collects ``spawner.progress()`` while a spawn is pending, as JupyterHub's page does."""

    def __init__(self, spawner):
        spawner._spawn_pending = True
        self.spawner = spawner
        self.events: list[dict] = []
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        async for event in self.spawner.progress():
            self.events.append(event)
            self._changed.set()

    async def wait_for(self, text: str) -> None:
        async with asyncio.timeout(10):
            while not any(text in e["message"] for e in self.events):
                self._changed.clear()
                await self._changed.wait()

    async def done(self) -> list[tuple[int, str]]:
        self.spawner._spawn_pending = False
        await asyncio.wait_for(self._task, 10)
        return [(e.get("progress"), e["message"]) for e in self.events]


async def started(sim, spawner, port, options=None) -> str:
    """Apply options and start, with the job running at once on 127.0.0.1."""
    await spawner.apply_user_options(spawner, options or {})
    sim.cluster.set(JOB, RUNNING, "127.0.0.1")
    sim.cluster.on_running = lambda job_id: spawner.port_reported(port)
    return await spawner.start()


async def test_start_follows_the_job_to_a_listening_server(sim, listener):
    sp = sim.spawner()
    await sp.apply_user_options(sp, {"cpus": 2})
    sim.cluster.set(JOB, PENDING, reason="Priority")
    sim.cluster.on_running = lambda job_id: sp.port_reported(listener)
    progress = Progress(sp)

    async def the_cluster():
        await progress.wait_for("queue: Priority")
        await sim.cluster.queried(3)  # the same reason again: no new message
        sim.cluster.set(JOB, PENDING, reason="Resources")
        await progress.wait_for("queue: Resources")
        sim.cluster.set(JOB, RUNNING, "127.0.0.1")

    script = asyncio.ensure_future(the_cluster())
    url = await sp.start()
    await script
    assert url == f"http://127.0.0.1:{listener}"
    assert await progress.done() == [
        (10, "Submitting to fake"),
        (20, f"Job {JOB} submitted"),
        (40, f"Job {JOB} waiting in the fake queue: Priority"),
        (40, f"Job {JOB} waiting in the fake queue: Resources"),
        (60, f"Job {JOB} running on 127.0.0.1; starting Jupyter"),
        (70, f"Jupyter starting on 127.0.0.1:{listener}"),
        (90, f"Jupyter listening on 127.0.0.1:{listener}"),
    ]
    assert (sp.job_id, sp.backend, sp.job_host) == (JOB, "fake", "127.0.0.1")
    # the state was saved to the hub's database as soon as it was known
    assert sp.orm_spawner.state["job_id"] == JOB and sp.orm_spawner.state["job_host"] == "127.0.0.1"
    assert sim.cluster.cancelled == []


async def test_submission_request_env_and_helper_command(sim, listener, monkeypatch):
    monkeypatch.setenv("HUB_SECRET_NOT_FOR_JOBS", "x")
    sp = sim.spawner()
    await started(sim, sp, listener, {"cpus": 3, "interface": "notebook", "env": {"MYVAR": "v"},
                                      "runtime_hours": 2})
    [call] = sim.helper_calls()
    [request] = sim.cluster.requests
    home = os.path.expanduser(f"~{ACCOUNT}")
    assert call["argv"] == [ACCOUNT]  # '{username}' replaced
    assert set(call["environ"]) <= {"PATH", "LANG", "LC_CTYPE"}  # nothing of the hub's own
    helper_request = call["request"]
    assert helper_request["backend"] == "fake" and helper_request["ccache"] is None
    assert helper_request["submit"] == {"job_name": request.job_name, "cpus": 3}
    assert helper_request["env_path"] == request.env_file == sp.env_path
    assert request.env_file == f"{home}/.jupyterhub-batch/{request.job_name}.json"
    assert request.job_name.startswith(f"jupyterhub-{ACCOUNT}-default-")
    assert (request.user, request.home, request.port_range) == (ACCOUNT, home, (40000, 41000))
    assert request.runtime_seconds == 2 * 3600
    env = helper_request["env"]
    assert env["JUPYTERHUB_API_TOKEN"] == "hub-api-token-of-this-server"
    assert env["MYVAR"] == "v" and env["JUPYTERHUB_DEFAULT_URL"] == "/tree"
    assert "HUB_SECRET_NOT_FOR_JOBS" not in env and "PATH" not in env


async def test_default_runtime_and_lab_interface(sim, listener):
    sp = sim.spawner(default_runtime_hours=3)
    await started(sim, sp, listener)
    [request] = sim.cluster.requests
    assert request.runtime_seconds == 3 * 3600
    assert sim.helper_calls()[0]["request"]["env"]["JUPYTERHUB_DEFAULT_URL"] == "/lab"


async def test_bad_options_are_http_400_naming_the_field(sim):
    sp = sim.spawner()
    with pytest.raises(web.HTTPError) as e:
        await sp.apply_user_options(sp, {"cpus": 999})
    assert e.value.status_code == 400 and e.value.log_message.startswith("cpus:")
    sim.cluster.refuse = OptionsError("partition", "you may not use it")
    with pytest.raises(web.HTTPError) as e:
        await sp.apply_user_options(sp, {"cpus": 1})
    assert e.value.log_message == "partition: you may not use it"
    assert [user for user, _ in sim.cluster.checked] == [ACCOUNT]
    assert sp.options is None and sim.cluster.requests == []


async def test_unknown_backend_is_refused(sim):
    sp = sim.spawner()
    with pytest.raises(web.HTTPError) as e:
        await sp.apply_user_options(sp, {"backend": "slurm"})
    assert e.value.status_code == 400 and e.value.log_message.startswith("backend:")


async def test_submit_error_in_the_helpers_words(sim, tmp_path):
    sim.settings["submit_helper_command"] = helper_command(
        sim.record, {"error": "schedd says no"}, exit_code=1)
    sim.restart()
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    with pytest.raises(SpawnError) as e:
        await sp.start()
    assert str(e.value) == "Submission to fake failed: schedd says no"
    assert e.value.jupyterhub_message == str(e.value)
    assert sp.job_id == ""


async def test_submit_helper_without_answer_reports_its_stderr(sim):
    sim.settings["submit_helper_command"] = helper_command(
        sim.record, "not json", exit_code=2, stderr="sudo: a password is required\n")
    sim.restart()
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    with pytest.raises(SpawnError, match="failed: sudo: a password is required$"):
        await sp.start()


async def test_user_without_account(sim):
    sp = new_spawner(sim.db, sim.registry, name="no-such-user-x7", config=sim.config)
    await sp.apply_user_options(sp, {})
    with pytest.raises(SpawnError, match="no-such-user-x7 has no account"):
        await sp.start()
    assert sim.record.exists() is False


async def test_credential_is_forwarded_and_its_copy_removed(sim, listener, tmp_path):
    sim.settings["require_credential"] = ["fake"]
    sim.restart()
    sp = sim.spawner()
    copy = tmp_path / "krb5cc_submit"

    async def forward():
        copy.write_text("ticket")
        return str(copy)

    sp._forward_credential = forward
    progress = Progress(sp)
    await started(sim, sp, listener)
    assert (5, "Forwarding your Kerberos ticket") in await progress.done()
    assert sim.helper_calls()[0]["request"]["ccache"] == str(copy)
    assert sim.cluster.requests[0].ccache == str(copy)
    assert not copy.exists()  # one-time copy, deleted after the submission


async def test_credential_copy_removed_when_the_submission_fails(sim, tmp_path):
    sim.settings.update(require_credential=["fake"], submit_helper_command=helper_command(
        sim.record, {"error": "no"}, exit_code=1))
    sim.restart()
    sp = sim.spawner()
    copy = tmp_path / "krb5cc_submit"

    async def forward():
        copy.write_text("ticket")
        return str(copy)

    sp._forward_credential = forward
    await sp.apply_user_options(sp, {})
    with pytest.raises(SpawnError):
        await sp.start()
    assert not copy.exists()


async def test_no_credential_fails_before_anything_is_submitted(sim):
    sim.settings["require_credential"] = ["fake"]
    sim.restart()
    sp = sim.spawner()

    async def forward():
        raise SpawnError("No Kerberos ticket is stored for you. Please log out and log in again.")

    sp._forward_credential = forward
    await sp.apply_user_options(sp, {})
    with pytest.raises(SpawnError, match="log in again"):
        await sp.start()
    assert not sim.record.exists() and sim.cluster.requests == []


@pytest.mark.parametrize("state,reason,message,cancelled", [
    (HELD, "SYSTEM_PERIODIC_HOLD", f"Job {JOB} was held by fake: SYSTEM_PERIODIC_HOLD", True),
    (DONE, "", f"Job {JOB} ended before Jupyter started (job output: ~/.jupyterhub-batch/)", False),
    (DONE, "NonZeroExitCode 1:0",
     f"Job {JOB} ended before Jupyter started: NonZeroExitCode 1:0 (job output: ~/.jupyterhub-batch/)",
     False),
])
async def test_job_held_or_gone_while_queued(sim, state, reason, message, cancelled):
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, state, reason=reason)
    with pytest.raises(SpawnError) as e:
        await sp.start()
    assert str(e.value) == message
    assert sim.cluster.cancelled == ([JOB] if cancelled else [])


async def test_pending_job_that_can_never_start_is_removed(sim):
    sim.cluster.fatal["PartitionConfig"] = "no node of partition jhub can run it: all drained"
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, PENDING, reason="PartitionConfig")
    with pytest.raises(SpawnError, match="^no node of partition jhub can run it: all drained$"):
        await sp.start()
    assert sim.cluster.cancelled == [JOB]


async def test_job_ending_before_the_port_report(sim):
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, RUNNING, "127.0.0.1")
    progress = Progress(sp)

    async def the_job_dies():
        await progress.wait_for("starting Jupyter")
        sim.cluster.set(JOB, DONE)

    script = asyncio.ensure_future(the_job_dies())
    with pytest.raises(SpawnError, match=f"^Job {JOB} ended before Jupyter started"):
        await sp.start()
    await script


async def test_job_held_before_the_port_report(sim):
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, RUNNING, "127.0.0.1")
    progress = Progress(sp)

    async def the_job_is_held():
        await progress.wait_for("starting Jupyter")
        sim.cluster.set(JOB, HELD, reason="memory usage exceeded request")

    script = asyncio.ensure_future(the_job_is_held())
    with pytest.raises(SpawnError, match=f"^Job {JOB} was held by fake: memory usage exceeded"):
        await sp.start()
    await script


async def test_job_ending_before_the_server_listens(sim, unused_tcp_port):
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, RUNNING, "127.0.0.1")
    sim.cluster.on_running = lambda job_id: sp.port_reported(unused_tcp_port)  # nobody listens
    progress = Progress(sp)

    async def the_job_dies():
        await progress.wait_for("Jupyter starting on")
        sim.cluster.set(JOB, DONE)

    script = asyncio.ensure_future(the_job_dies())
    with pytest.raises(SpawnError, match=f"^Job {JOB} ended before Jupyter started"):
        await sp.start()
    await script


async def test_state_round_trip_across_a_hub_restart(sim, listener):
    sp = sim.spawner()
    await started(sim, sp, listener)
    state = sp.get_state()
    assert {k: state[k] for k in ("job_id", "backend", "job_host")} == {
        "job_id": JOB, "backend": "fake", "job_host": "127.0.0.1"}

    sim.restart()  # new process: new registry, scheduler and watcher; same cluster and database
    queries_before = sim.cluster.queries
    again = sim.spawner()
    again.load_state(state)
    assert (again.job_id, again.backend, again.job_host) == (JOB, "fake", "127.0.0.1")
    assert await again.poll() is None  # still running
    assert sim.cluster.queries > queries_before  # answered by a query of the new hub
    sim.cluster.set(JOB, HELD, reason="held by admin")
    await sim.registry.watcher("fake").refresh()
    assert await again.poll() == 1
    sim.cluster.set(JOB, DONE)
    await sim.registry.watcher("fake").refresh()
    assert await again.poll() == 1
    again.clear_state()
    assert again.get_state().get("job_id") is None and await again.poll() == 0


async def test_one_watcher_serves_every_spawner_of_a_hub(sim):
    spawners = [sim.spawner() for _ in range(3)]
    for i, sp in enumerate(spawners):
        sp.load_state({"job_id": f"{i}.0", "backend": "fake", "job_host": "n1"})
        sim.cluster.set(f"{i}.0", RUNNING, "n1")
    assert [await sp.poll() for sp in spawners] == [None, None, None]
    assert sim.cluster.queries == 1
    assert len({id(sp.registry.watcher("fake")) for sp in spawners}) == 1


async def test_stop_removes_the_job_and_waits_until_it_is_gone(sim, listener, tmp_path):
    sp = sim.spawner()
    await started(sim, sp, listener)
    env_file = tmp_path / "env.json"
    env_file.write_text("{}")
    sp.env_path = str(env_file)
    await sp.stop()
    assert sim.cluster.cancelled == [JOB]
    assert JOB not in sim.cluster.jobs
    assert sp.job_id == "" and sp.job_host == "" and not env_file.exists()
    assert await sp.poll() == 0


async def test_stop_gives_up_after_stop_timeout(sim, listener):
    sim.settings.update(stop_timeout=0.2, status_timeout=0.1)
    sim.restart()
    sp = sim.spawner()
    await started(sim, sp, listener)
    sim.cluster.ignore_cancel = True  # the scheduler keeps listing the job as running
    await asyncio.wait_for(sp.stop(), 10)
    assert sim.cluster.cancelled == [JOB] and sp.job_id == ""


async def test_stop_now_does_not_wait(sim, listener):
    sp = sim.spawner()
    await started(sim, sp, listener)
    sim.cluster.ignore_cancel = True
    queries = sim.cluster.queries
    await sp.stop(now=True)
    assert sim.cluster.cancelled == [JOB] and sim.cluster.queries == queries


async def test_stop_survives_a_failing_removal(sim, listener, caplog):
    sp = sim.spawner()
    await started(sim, sp, listener)

    def refuse(job_id):
        raise RuntimeError("schedd unreachable")

    sim.cluster.cancel = refuse
    await sp.stop(now=True)
    assert sp.job_id == "" and "schedd unreachable" in caplog.text


async def test_form_is_rendered_from_the_spawners_bounds_and_slurm(sim, tmp_path):
    sim.settings["scheduler_classes"] = {
        "htcondor": scheduler_class(sim.cluster, "htcondor"),
        "slurm": scheduler_class(sim.cluster, "slurm")}
    sim.settings["default_backend"] = "htcondor"
    sim.restart()
    sim.cluster.resources = {"partitions": [{"name": "jhub"}, {"name": "upex"}],
                             "reservations": [], "features": ["epyc"]}
    sp = sim.spawner(max_cpus=6)
    html = await sp.options_form(sp)
    assert 'max="6"' in html and 'value="upex"' in html and 'id="slurm-options"' in html
    sim.cluster.resources = RuntimeError("sinfo: cannot reach slurmctld")
    sp = sim.spawner()
    html = await sp.options_form(sp)
    assert "SLURM information unavailable: sinfo: cannot reach slurmctld" in html


async def test_form_data_becomes_user_options(sim):
    sp = sim.spawner()
    assert sp.run_options_from_form({"backend": ["fake"], "cpus": ["2"], "env": ["A=1"]}) == {
        "backend": "fake", "cpus": 2, "env": {"A": "1"}}


# -- the submit helper runs as the user: its job id is checked against the scheduler's record ---
async def test_helper_answering_another_users_job_is_refused(sim, listener, caplog):
    """mallory's helper prints alice's job id: no route to it, and it is not removed."""
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, RUNNING, "127.0.0.1", owner="alice")
    sim.cluster.on_running = lambda job_id: sp.port_reported(listener)
    with pytest.raises(SpawnError, match=f"Job {JOB} is not a job of {ACCOUNT}"):
        await sp.start()
    assert sim.cluster.cancelled == [] and JOB in sim.cluster.jobs
    assert f"job {JOB} belongs to 'alice'" in caplog.text
    await sp.stop()  # JupyterHub stops a failed spawn: still not removed with the hub's identity
    assert sim.cluster.cancelled == []


@pytest.mark.parametrize("answer", ["41.0 -constraint true", 41, "", "41.0\n"])
async def test_helper_answering_a_malformed_job_id_is_refused(tmp_path, listener, answer):
    sim = SimHub(tmp_path, submit_helper_command=helper_command(tmp_path / "h.jsonl",
                                                                {"job_id": answer}))
    try:  # the fake backend's pattern is one word (the real ones: HTCondor's and Slurm's ids)
        sp = sim.spawner()
        await sp.apply_user_options(sp, {})
        with pytest.raises(SpawnError, match="malformed job_id"):
            await sp.start()
        assert sp.job_id == "" and sim.cluster.cancelled == []
    finally:
        sim.close()


async def test_poll_and_stop_leave_a_job_of_another_owner_alone(sim, listener, caplog):
    sp = sim.spawner()
    await started(sim, sp, listener)
    sim.cluster.set(JOB, RUNNING, "127.0.0.1", owner="alice")  # e.g. a restored, edited state
    await sim.cluster.queried(1)
    assert await sp.poll() == 1
    assert sim.cluster.cancelled == [] and "treated as gone, not removed" in caplog.text
    queries = sim.cluster.queries
    await sp.stop()  # nothing removed, so nothing to wait for (stop_timeout is 2 s here)
    assert sim.cluster.cancelled == [] and sim.cluster.queries == queries


async def test_refused_host_record_fails_the_spawn_and_removes_the_job(sim, listener, caplog):
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, RUNNING, None, host_error="node 'db' is not one of the nodes Slurm lists")
    with pytest.raises(SpawnError, match="record of where it runs was refused .node 'db'"):
        await sp.start()
    assert sim.cluster.cancelled == [JOB] and "no route" in caplog.text


class StepClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _serving_at(sim, sp, port: int) -> None:
    """The server record JupyterHub keeps for a running server (its URL's host and port)."""
    from jupyterhub import orm

    server = orm.Server(ip="127.0.0.1", port=port)
    sim.db.add(server)
    sp.orm_spawner.server = server
    sim.db.commit()


async def test_a_server_whose_node_is_gone_is_reported_lost_and_its_job_removed(
        sim, listener, unused_tcp_port):
    from appliance.hub.reachability import Reachability

    sim.settings.update(unreachable_timeout=5.0)
    sim.restart()
    sp = sim.spawner()
    await started(sim, sp, listener)
    clock = StepClock()
    sp._reach = Reachability(clock)
    _serving_at(sim, sp, listener)
    assert await sp.poll() is None  # answers
    _serving_at(sim, sp, unused_tcp_port)  # nobody there any more; the scheduler still says running
    assert await sp.poll() is None
    clock.now += 4
    assert await sp.poll() is None and sim.cluster.cancelled == []
    _serving_at(sim, sp, listener)  # one answer starts the count again
    assert await sp.poll() is None
    _serving_at(sim, sp, unused_tcp_port)
    clock.now += 10
    assert await sp.poll() is None
    clock.now += 6
    assert await sp.poll() == 1
    assert sim.cluster.cancelled == [JOB]
    o = sp.last_outcome
    assert o.kind == "lost_node" and o.job_id == JOB
    assert "its server on 127.0.0.1 has not answered for 6 s" in o.message and o.hint
    assert sp.get_state()["last_outcome"]["kind"] == "lost_node"


async def test_no_probe_when_unreachable_timeout_is_0(sim, listener, unused_tcp_port):
    sim.settings.update(unreachable_timeout=0.0)
    sim.restart()
    sp = sim.spawner()
    await started(sim, sp, listener)
    _serving_at(sim, sp, unused_tcp_port)
    for _ in range(3):
        assert await sp.poll() is None
    assert sim.cluster.cancelled == []


async def start_queued(sim):
    """A spawner whose start() is running, its job waiting in the queue: (spawner, start task)."""
    sp = sim.spawner()
    await sp.apply_user_options(sp, {})
    sim.cluster.set(JOB, PENDING, reason="Priority")
    progress = Progress(sp)
    task = asyncio.ensure_future(sp.start())
    await progress.wait_for("waiting in the")
    return sp, task


async def cancelled_while_queued(sim):
    """A spawner whose start() was cancelled while its job waited in the queue."""
    sp, task = await start_queued(sim)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return sp


async def test_a_spawn_cut_short_by_a_hub_restart_ends_with_a_message(sim):
    sp = await cancelled_while_queued(sim)  # the hub shut down: stop() is never called
    assert sp.last_outcome is None or sp.last_outcome.kind == "started"  # nothing claimed
    assert sim.cluster.cancelled == []
    state = sp.get_state()

    sim.restart()
    again = sim.spawner()
    again.load_state(state)
    assert await again.poll() == 1  # JupyterHub then stops it (stop() keeps the outcome)
    assert sim.cluster.cancelled == [JOB]
    o = again.last_outcome
    assert o.kind == "failed" and o.job_id == JOB
    assert o.message.startswith("The hub restarted while your server was starting")
    await again.stop()
    assert again.last_outcome is o


async def test_a_stop_of_a_pending_spawn_still_says_who_stopped_it(sim):
    sp = await cancelled_while_queued(sim)  # the user's Stop: JupyterHub cancels, calls stop()
    await sp.stop()
    assert sp.last_outcome.kind == "stopped" and "You cancelled the start" in sp.last_outcome.message
    assert sim.cluster.cancelled == [JOB]


async def test_a_failed_start_keeps_its_own_outcome_when_polled(sim):
    """Held while queued: start() fails with the hold; JupyterHub may poll before it stops the
    spawner, and that poll must not call it a spawn interrupted by a hub restart."""
    sp, task = await start_queued(sim)
    sim.cluster.set(JOB, HELD, reason="held by the admin")
    with pytest.raises(SpawnError):
        await task
    assert sp.last_outcome.kind == "held"
    assert await sp.poll() == 1
    assert sp.last_outcome.kind == "held" and "held by the admin" in sp.last_outcome.message


# -- the spawn form: presets, the last options (the spawner's state in the hub's database), a
#    refused attempt reopening the form with its values and the message next to the field --------

from tests.unit.test_form_presets import Page  # noqa: E402

FORM_PRESETS = [{"name": "Small", "description": "one core",
                 "options": {"backend": "htcondor", "cpus": 1, "memory_gb": 2}},
                {"name": "Jhub", "description": "",
                 "options": {"backend": "slurm", "partition": "jhub", "cpus": 2}}]


def two_backends(sim, **settings):
    sim.settings["scheduler_classes"] = {
        "htcondor": scheduler_class(sim.cluster, "htcondor"),
        "slurm": scheduler_class(sim.cluster, "slurm")}
    sim.settings.update({"default_backend": "htcondor", "max_cpus": 4, "presets": FORM_PRESETS,
                         **settings})
    sim.restart()
    sim.cluster.resources = {"partitions": ["jhub", "maxwell"], "reservations": [],
                             "features": []}


async def test_first_visit_offers_the_presets_and_a_preset_spawns_without_javascript(sim):
    two_backends(sim)
    sp = sim.spawner()
    p = Page(await sp.options_form(sp))
    assert p.checked("preset") == "Small" and p.controls["cpus"]["value"] == "1"
    data = p.submit()
    data["preset"] = ["Jhub"]  # the fields still show the defaults
    opts = sp.run_options_from_form(data)
    assert opts["backend"] == "slurm" and opts["partition"] == "jhub" and opts["cpus"] == 2
    await sp.apply_user_options(sp, opts)
    assert sp.options.partition == "jhub" and sp.last_options == opts


async def test_the_last_options_survive_the_hub_and_prefill_form_and_home_page(sim):
    two_backends(sim)
    sp = sim.spawner()
    mine = {"backend": "slurm", "partition": "maxwell", "cpus": 3, "env": {"TOKEN": "s3cret"}}
    await sp.apply_user_options(sp, mine)
    with pytest.raises(web.HTTPError):  # a refused request does not replace them
        await sp.apply_user_options(sp, {"backend": "htcondor", "cpus": 99})
    sp.clear_state()  # the server stopped; JupyterHub saves the state to its database
    sp.orm_spawner.state = sp.get_state()
    sim.db.commit()

    sim.restart()
    again = sim.spawner()  # made from the database, as after a hub restart
    assert again.last_options == mine
    p = Page(await again.options_form(again))
    assert p.checked("preset") == "" and p.checked("backend") == "slurm"
    assert p.controls["partition"]["value"] == "maxwell" and p.controls["cpus"]["value"] == "3"
    assert p.texts["env"] == "TOKEN=s3cret"  # the user's own page, never a URL
    choice = again.last_choice()
    assert choice["summary"] == "SLURM, 3 CPUs, 2 GiB, partition maxwell, JupyterLab, env TOKEN"
    assert dict(choice["fields"]) == {"preset": "", "backend": "slurm", "interface": "lab",
                                      "cpus": "3", "memory_gb": "2", "gpus": "0",
                                      "partition": "maxwell", "env": "TOKEN=s3cret"}
    # "Start again" posts those fields: the same options
    assert again.run_options_from_form({k: [v] for k, v in choice["fields"]}) == dict(
        mine, interface="lab", memory_gb=2.0, gpus=0)
    # options the bounds no longer allow are not offered again
    two_backends(sim, max_cpus=2)
    later = sim.spawner()
    assert later.last_options == mine and later.last_choice() is None
    assert Page(await later.options_form(later)).checked("preset") == "Small"


async def test_a_refused_query_string_spawn_reopens_the_form_with_its_values(sim):
    two_backends(sim)
    sp = sim.spawner()
    opts = sp.options_from_query({"backend": ["htcondor"], "cpus": ["9"], "memory_gb": ["3"]})
    with pytest.raises(web.HTTPError):
        await sp.apply_user_options(sp, opts)
    p = Page(await sp.options_form(sp))  # what JupyterHub shows after the failed spawn
    assert p.controls["cpus"]["value"] == "9" and p.controls["memory_gb"]["value"] == "3"
    assert p.checked("preset") == "" and p.controls["cpus"]["aria-invalid"] == "true"
    assert p.texts["cpus-error"].startswith("Input should be less than or equal to 4")
    # shown once: the next visit opens with the defaults again
    assert "cpus-error" not in Page(await sp.options_form(sp)).texts
    # a preset by name works in a URL too
    assert sp.options_from_query({"preset": ["Jhub"]})["partition"] == "jhub"


async def test_env_is_refused_in_a_url_and_conversion_errors_sit_next_to_the_field(sim):
    two_backends(sim)
    sp = sim.spawner()
    with pytest.raises(OptionsError) as e:
        sp.options_from_query({"backend": ["htcondor"], "env": ["TOKEN=s3cret"]})
    assert e.value.field == "env" and "URL" in e.value.message
    p = Page(await sp.options_form(sp))
    assert "URL" in p.texts["env-error"] and "s3cret" not in p.texts["env"]
    with pytest.raises(OptionsError):
        sp.run_options_from_form({"backend": ["htcondor"], "memory_gb": ["lots"]})
    p = Page(await sp.options_form(sp))
    assert p.controls["memory_gb"]["value"] == "lots"
    assert p.texts["memory_gb-error"] == "'lots' is not a number"
