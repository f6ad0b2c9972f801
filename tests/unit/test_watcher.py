"""The shared JobWatcher: one query serves every spawner; fresh answers when asked for."""

import asyncio
import time

from appliance.hub.scheduler.base import JobStatus, JobWatcher, Scheduler


class CountingScheduler(Scheduler):
    name = "fake"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0
        self.jobs = {}

    async def query_all(self):
        self.calls += 1
        await asyncio.sleep(0.01)
        return dict(self.jobs)


def run(coro):
    return asyncio.run(coro)


def test_many_readers_one_query():
    async def main():
        s = CountingScheduler(poll_interval=5, fast_poll_interval=5)
        s.jobs = {str(i): JobStatus(str(i), "running", "n1") for i in range(50)}
        w = JobWatcher(s)
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
        w = JobWatcher(s)
        await w.wait_update(timeout=2)
        assert await w.status("7") is None  # cached answer predates the job
        s.jobs["7"] = JobStatus("7", "pending")
        mark = time.monotonic()
        st = await w.status("7", newer_than=mark, timeout=5)
        w.stop()
        return st, s.calls

    st, calls = run(main())
    assert st is not None and st.state == "pending"
    assert calls == 2


def test_hurry_polls_fast_only_while_needed():
    async def main():
        s = CountingScheduler(poll_interval=30, fast_poll_interval=0.05)
        w = JobWatcher(s)
        await w.wait_update(timeout=2)
        with w.hurry():
            await asyncio.sleep(0.5)
        during = s.calls
        await asyncio.sleep(0.5)
        after = s.calls - during
        w.stop()
        return during, after

    during, after = run(main())
    assert during >= 5
    assert after <= 1


def test_failed_query_keeps_last_answer():
    async def main():
        s = CountingScheduler(poll_interval=30, fast_poll_interval=30)
        s.jobs = {"1": JobStatus("1", "running", "n1")}
        w = JobWatcher(s)
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
