"""The schedd gateway against the real personal pool, in this process: batched submits,
queries of the queue and the history, removal, capacity, timeouts (a submit in doubt that
still happens) and spooled output retrieval."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlink_htcondor import settings as settings_module
from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.core.pod_status import COMPLETED, FROM_HISTORY, IDLE, REMOVED
from interlink_htcondor.devpool import PoolInfo, embedded_settings
from interlink_htcondor.local_plugin import force_remove, pool_schedd
from interlink_htcondor.service.gateway import ScheddError, ScheddGateway, SubmitInDoubt
from interlink_htcondor.settings import Settings

NEVER_MATCHES = 'TARGET.Machine == "no-such-machine.invalid"'


@pytest.fixture
def instance(pool: PoolInfo) -> Iterator[str]:
    name = f"test-gw-{uuid.uuid4().hex[:8]}"
    yield name
    force_remove(pool_schedd(pool), f'InterlinkPlugin == "{name}"', "test over", grace=2)


def make_settings(pool: PoolInfo, instance: str, **schedd: Any) -> Settings:
    base = embedded_settings(pool)
    base["policy"] = {"instance": instance}
    # This process's own token (the plugin uses the job user's, once it has become it).
    base["schedd"]["token_dir"] = str(pool.token_dir_for(os.geteuid()))
    base["schedd"].update(schedd)
    return settings_module.load(None, base)


def idle_plan(uid: str, workdir: Path, **submit: str) -> JobPlan:
    """A job that stays queued (it matches no slot)."""
    commands = {
        "executable": "/bin/true",
        "transfer_executable": "false",
        "initialdir": str(workdir),
        "should_transfer_files": "NO",
        "requirements": NEVER_MATCHES,
        "request_memory": "16",
        **submit,
    }
    return JobPlan(pod_uid=uid, name=f"p-{uid[:8]}", namespace="ns", submit=commands,
                   containers=("main",))  # fmt: skip


def test_batched_submit_queries_and_removal(pool: PoolInfo, instance: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        gw = ScheddGateway(make_settings(pool, instance))
        try:
            await gw.ping()
            cap = await gw.capacity()
            assert cap.slots >= 1 and cap.cpus >= 1 and cap.largest["Cpus"] >= 1
            uids = [str(uuid.uuid4()) for _ in range(3)]
            # Submits that arrive together are one schedd transaction: one cluster.
            done = await asyncio.gather(
                *(gw.submit(idle_plan(u, tmp_path), tmp_path) for u in uids)
            )
            assert len({s.ad["ClusterId"] for s in done}) == 1
            assert sorted(s.ad["ProcId"] for s in done) == [0, 1, 2]
            assert all(
                s.created and s.job_id == f"{s.ad['ClusterId']}.{s.ad['ProcId']}" for s in done
            )

            mine = {a[classad_attrs.POD_UID]: a for a in await gw.query_jobs()}
            assert set(mine) == set(uids)
            ad = mine[uids[0]]
            assert ad["JobStatus"] == IDLE and ad[classad_attrs.PLUGIN] == instance
            assert ad[classad_attrs.SANDBOX] == str(tmp_path)
            assert ad[classad_attrs.CONTAINERS] == "main"
            assert [a["ClusterId"] for a in await gw.jobs_of(uids[1])] == [done[1].ad["ClusterId"]]

            assert await gw.remove_pod(uids[0], "test removal") == 1
            await gw.remove_job(done[1].job_id, "one job")
            deadline = time.monotonic() + 60
            while await gw.jobs_of(uids[0]) or await gw.jobs_of(uids[1]):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            found = await gw.find_jobs([*uids, str(uuid.uuid4())])
            assert set(found) == set(uids)  # the unknown pod is absent
            for uid in uids[:2]:
                assert found[uid][FROM_HISTORY] is True and found[uid]["JobStatus"] == REMOVED
            assert FROM_HISTORY not in found[uids[2]]  # still queued
            assert "test removal" in found[uids[0]]["RemoveReason"]
        finally:
            await gw.close()

    asyncio.run(scenario())


def test_job_changes_come_from_the_snapshot_process(
    pool: PoolInfo, instance: str, tmp_path: Path
) -> None:
    ops: list[str] = []

    async def changes_until(gw: ScheddGateway, done: Any, what: str) -> Any:
        deadline = time.monotonic() + 60
        while True:
            ch = await gw.job_changes()
            if done(ch):
                return ch
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.5)

    async def scenario() -> None:
        cfg = make_settings(pool, instance, timeout_seconds=5, retries=0)
        gw = ScheddGateway(cfg, observer=lambda op, _s, ok: ops.append(op if ok else "failed"))
        try:
            uids = [str(uuid.uuid4()) for _ in range(3)]
            await asyncio.gather(*(gw.submit(idle_plan(u, tmp_path), tmp_path) for u in uids[:2]))
            first = await gw.job_changes()
            assert first.reset and first.full and set(first.changed) == set(uids[:2])
            assert first.changed[uids[0]][classad_attrs.PLUGIN] == instance
            assert gw._feed.pid is not None and gw._feed.pid != os.getpid()
            quiet = await gw.job_changes()  # a change query: idle jobs did not change
            assert not quiet.full and not quiet.changed and not quiet.removed
            await gw.submit(idle_plan(uids[2], tmp_path), tmp_path)
            new = await gw.job_changes()
            assert set(new.changed) == {uids[2]} and not new.full
            assert await gw.remove_pod(uids[0], "test removal") == 1
            await changes_until(gw, lambda ch: uids[0] in ch.removed, "the removed pod left")
            queries = [op for op in ops if op.startswith("query")]
            assert queries[:3] == ["query", "query_changes", "query_changes"]

            # A snapshot process that does not answer is killed; the next one lists all.
            pid = gw._feed.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            with pytest.raises(ScheddError, match="no answer within 5 s"):
                await gw.job_changes()
            again = await gw.job_changes()
            assert gw._feed.pid != pid
            assert again.reset and set(again.changed) == set(uids[1:])
            # One that dies: the same.
            assert gw._feed.pid is not None
            os.kill(gw._feed.pid, signal.SIGKILL)
            with pytest.raises(ScheddError, match="exited"):
                await gw.job_changes()
            assert (await gw.job_changes()).reset
        finally:
            await gw.close()

    asyncio.run(scenario())
    assert "failed" in ops


class HeldBackGateway(ScheddGateway):
    """The real gateway, whose blocking submit waits for ``release``: a schedd that takes
    longer than the timeout to accept a submit, then accepts it."""

    release = threading.Event()

    def _submit_batch(self, batch: Any) -> None:
        assert self.release.wait(120)
        super()._submit_batch(batch)


def test_a_submit_that_times_out_is_in_doubt_and_still_happens(
    pool: PoolInfo, instance: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        gw = HeldBackGateway(make_settings(pool, instance, timeout_seconds=0.5))
        try:
            uid = str(uuid.uuid4())
            with pytest.raises(SubmitInDoubt, match="may still happen") as doubt:
                await gw.submit(idle_plan(uid, tmp_path), tmp_path)
            assert await gw.jobs_of(uid) == []  # not yet
            HeldBackGateway.release.set()
            submitted = await asyncio.wait_for(doubt.value.outcome, 120)
            assert submitted.created and submitted.ad[classad_attrs.POD_UID] == uid
            (ad,) = await gw.jobs_of(uid)
            assert f"{ad['ClusterId']}.{ad['ProcId']}" == submitted.job_id
        finally:
            await gw.close()

    asyncio.run(scenario())


class StuckGateway(ScheddGateway):
    """The real gateway, whose schedd does not answer until ``unstuck`` is set."""

    unstuck = threading.Event()

    def _schedd(self) -> Any:
        assert self.unstuck.wait(120)
        return super()._schedd()


def test_a_schedd_that_does_not_answer_times_out(pool: PoolInfo, instance: str) -> None:
    calls: list[tuple[str, bool]] = []

    async def scenario() -> None:
        cfg = make_settings(pool, instance, timeout_seconds=0.3, retries=1)
        gw = StuckGateway(cfg, observer=lambda op, _s, ok: calls.append((op, ok)))
        try:
            with pytest.raises(ScheddError, match=r"^schedd ping failed: timed out$"):
                await gw.ping()
            with pytest.raises(ScheddError, match=r"^schedd query failed: timed out$"):
                await gw.query_jobs()  # retried once, then given up
            StuckGateway.unstuck.set()
            assert isinstance(await gw.query_jobs(), list)  # it answers again
        finally:
            await gw.close()

    asyncio.run(scenario())
    assert calls == [("ping", False), ("query", False), ("query", False), ("query", True)]


def test_an_unreachable_collector_is_a_schedd_error(pool: PoolInfo, instance: str) -> None:
    with socket.socket() as nothing:  # a port where no collector listens
        nothing.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{nothing.getsockname()[1]}"

        async def scenario() -> None:
            gw = ScheddGateway(make_settings(pool, instance, collector=address, retries=0))
            try:
                with pytest.raises(ScheddError, match=r"^schedd ping failed: "):
                    await gw.ping()
                with pytest.raises(ScheddError, match=r"^schedd collector failed: "):
                    await gw.capacity()
            finally:
                await gw.close()

        asyncio.run(scenario())


def test_spooled_job_output_is_retrieved(pool: PoolInfo, instance: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = make_settings(pool, instance)
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"mode": "spool"})})
        gw = ScheddGateway(cfg)
        try:
            uid = str(uuid.uuid4())
            plan = idle_plan(
                uid,
                tmp_path,
                executable="/bin/sh",
                arguments="\"-c 'echo spooled > result.txt'\"",
                should_transfer_files="YES",
                when_to_transfer_output="ON_EXIT",
                transfer_output_files="result.txt",
                requirements="true",
            )
            submitted = await gw.submit(plan, tmp_path)
            deadline = time.monotonic() + 180
            while True:
                (ad,) = await gw.jobs_of(uid)
                if ad["JobStatus"] == COMPLETED:
                    break
                assert time.monotonic() < deadline, ad.get("HoldReason", ad)
                await asyncio.sleep(0.5)
            assert not (tmp_path / "result.txt").exists()  # still in the schedd's spool
            await gw.retrieve(submitted.job_id)
            assert (tmp_path / "result.txt").read_text() == "spooled\n"
        finally:
            await gw.close()

    asyncio.run(scenario())
