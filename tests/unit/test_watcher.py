"""The shared JobWatcher: one query serves every spawner; fresh answers when asked for.

The watcher runs on a clock the tests control; its pauses between queries are recorded instead of
slept, so what is asserted (how often, how fast) does not depend on the machine's load.
"""

import asyncio

from appliance.hub.scheduler.base import JobStatus, Scheduler
from appliance.hub.scheduler.watcher import JobWatcher


class CountingScheduler(Scheduler):
    name = "fake"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0
        self.jobs = {}

    async def query_all(self):
        self.calls += 1
        await asyncio.sleep(0)
        return dict(self.jobs)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class RecordingWatcher(JobWatcher):
    """Records each pause (instead of waiting it out) and runs ``script[i]`` after pause i."""

    def __init__(self, *a, script=(), **kw):
        super().__init__(*a, **kw)
        self.pauses = []
        self.script = list(script)
        self.done = asyncio.Event()

    async def _pause(self, interval):
        self.pauses.append(interval)
        self.clock.t += interval
        if self.script:
            self.script.pop(0)()
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()  # park: the test stops the watcher
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_many_readers_one_query():
    async def main():
        s = CountingScheduler(poll_interval=5, fast_poll_interval=5)
        s.jobs = {str(i): JobStatus(str(i), "running", "n1") for i in range(50)}
        w = JobWatcher(s, clock=Clock())
        await w.wait_update(timeout=2)
        results = await asyncio.gather(*(w.status(str(i)) for i in range(50)))
        w.stop()
        return s.calls, results

    calls, results = run(main())
    assert calls == 1
    assert all(r.state == "running" for r in results)


def test_newer_than_sees_a_job_submitted_after_the_last_query():
    async def main():
        s = CountingScheduler(poll_interval=30, fast_poll_interval=30)
        clock = Clock()
        w = JobWatcher(s, clock=clock)
        await w.wait_update(timeout=2)
        assert await w.status("7") is None  # cached answer predates the job
        clock.t += 1
        s.jobs["7"] = JobStatus("7", "pending")
        mark = clock()
        st = await w.status("7", newer_than=mark, timeout=5)
        w.stop()
        return st, s.calls, w.data_started >= mark

    st, calls, fresh = run(main())
    assert st is not None and st.state == "pending"
    assert calls == 2 and fresh


def test_hurry_polls_fast_only_while_needed():
    async def main():
        s = CountingScheduler(poll_interval=30, fast_poll_interval=0.05)
        hurry = []
        script = [lambda: hurry.append(w.hurry().__enter__())]  # a spawn starts after query 1
        script += [lambda: None] * 4  # ... and is pending for 5 queries
        script += [lambda: hurry.pop().__exit__(None, None, None)]  # then it is done
        script += [lambda: None] * 2
        w = RecordingWatcher(s, clock=Clock(), script=script)
        w.start()
        await asyncio.wait_for(w.done.wait(), 5)
        w.stop()
        return w.pauses, s.calls

    pauses, calls = run(main())
    # slow before the spawn, fast while it is pending, slow again afterwards; one query per pause
    assert pauses == [30, 0.05, 0.05, 0.05, 0.05, 0.05, 30, 30]
    assert calls == len(pauses)


def test_hurry_wakes_a_slow_pause_at_once():
    async def main():
        s = CountingScheduler(poll_interval=3600, fast_poll_interval=0.05)
        w = JobWatcher(s, clock=Clock())
        await w.wait_update(timeout=2)  # first query done; now in a 3600 s pause
        with w.hurry():
            woke = await w.wait_update(timeout=5)  # the next query comes now, not in an hour
            assert w.interval() == 0.05
        assert w.interval() == 3600
        w.stop()
        return woke, s.calls

    woke, calls = run(main())
    assert woke and calls == 2


def test_failed_query_keeps_last_answer():
    async def main():
        s = CountingScheduler(poll_interval=30, fast_poll_interval=30)
        s.jobs = {"1": JobStatus("1", "running", "n1")}
        w = JobWatcher(s, clock=Clock())
        await w.wait_update(timeout=2)

        async def boom():
            raise RuntimeError("schedd down")

        s.query_all = boom
        await w.refresh()
        st = await w.status("1")
        w.stop()
        return st, w.last_error

    st, err = run(main())
    assert st.state == "running" and "schedd down" in err
