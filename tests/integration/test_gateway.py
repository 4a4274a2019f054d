"""The schedd gateway against the real personal pool, in this process (its binding calls
in worker processes): batched submits, queries of the queue and the history, removal,
capacity, an unreachable collector and spooled output retrieval. Deadlines against a
schedd that does not answer: ``tests/unit/test_gateway_deadlines.py`` (a listener that
never answers) and ``test_faults_schedd.py`` (the real schedd stopped)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
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
from interlink_htcondor.service.gateway import ScheddError, ScheddGateway
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

            # A removal must name the pod's namespace and name as well as its UID.
            assert await gw.remove_pod(uids[0], "test", namespace="ns", name="other") == 0
            assert (
                await gw.remove_pod(
                    uids[0], "test", namespace="other", name=done[0].ad[classad_attrs.POD_NAME]
                )
                == 0
            )
            assert (
                await gw.remove_pod(
                    uids[0], "test removal", namespace="ns", name=f"p-{uids[0][:8]}"
                )
                == 1
            )
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
            gw.close()

    asyncio.run(scenario())


def snapshot_worker(gw: ScheddGateway) -> int:
    """The pid of the snapshot lane's one live worker."""
    (worker,) = [w for w in gw._lanes["snapshot"]._all if not w.dead]
    pid = worker.proc.pid
    assert pid is not None
    return pid


async def changes_once_let_through(gw: ScheddGateway, timeout: float = 60) -> Any:
    """``job_changes`` once the circuit breaker, open after a failure, lets a call through."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await gw.job_changes()
        except ScheddError as e:
            assert "not tried" in str(e) and time.monotonic() < deadline, str(e)
            await asyncio.sleep(0.2)


def test_job_changes_come_from_the_snapshot_worker(
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
            assert snapshot_worker(gw) != os.getpid()
            quiet = await gw.job_changes()  # a change query: idle jobs did not change
            assert not quiet.full and not quiet.changed and not quiet.removed
            await gw.submit(idle_plan(uids[2], tmp_path), tmp_path)
            new = await gw.job_changes()
            assert set(new.changed) == {uids[2]} and not new.full
            removed = await gw.remove_pod(
                uids[0], "test removal", namespace="ns", name=f"p-{uids[0][:8]}"
            )
            assert removed == 1
            await changes_until(gw, lambda ch: uids[0] in ch.removed, "the removed pod left")

            # A snapshot worker that does not answer is killed; the next one lists all.
            pid = snapshot_worker(gw)
            os.kill(pid, signal.SIGSTOP)
            with pytest.raises(ScheddError, match="timed out"):
                await gw.job_changes()
            again = await changes_once_let_through(gw)
            assert snapshot_worker(gw) != pid
            assert again.reset and set(again.changed) == set(uids[1:])
            # One that dies: the same.
            os.kill(snapshot_worker(gw), signal.SIGKILL)
            with pytest.raises(ScheddError, match="exited"):
                await gw.job_changes()
            assert (await changes_once_let_through(gw)).reset
        finally:
            gw.close()

    asyncio.run(scenario())
    assert "failed" in ops


def test_a_recycled_snapshot_worker_hands_its_view_to_the_next(
    pool: PoolInfo, instance: str, tmp_path: Path
) -> None:
    """The snapshot worker is recycled as it grows (the bindings leak with every query);
    its successor goes on with change queries, and no answer is a reset."""

    async def scenario() -> None:
        # Recycled after every call: each answer below comes from a new worker.
        gw = ScheddGateway(make_settings(pool, instance, worker_recycle_mib=0.001))
        try:
            uids = [str(uuid.uuid4()) for _ in range(3)]
            await asyncio.gather(*(gw.submit(idle_plan(u, tmp_path), tmp_path) for u in uids[:2]))
            first = await gw.job_changes()
            assert first.reset and set(first.changed) == set(uids[:2])
            lane = gw._lanes["snapshot"]
            for _ in range(3):
                # A change query (the negotiator may have touched an idle job's ad).
                later = await gw.job_changes()
                assert not later.reset and not later.full
                assert set(later.changed) <= set(uids[:2])
                assert not [w for w in lane._all if not w.dead]  # it retired
            await gw.submit(idle_plan(uids[2], tmp_path), tmp_path)
            new = await gw.job_changes()
            assert not new.reset and not new.full and uids[2] in new.changed
        finally:
            gw.close()

        # With the default bound, a worker is kept from call to call.
        gw = ScheddGateway(make_settings(pool, instance))
        try:
            assert (await gw.job_changes()).reset
            kept = snapshot_worker(gw)
            for _ in range(5):
                assert not (await gw.job_changes()).reset
                assert snapshot_worker(gw) == kept
        finally:
            gw.close()

    asyncio.run(scenario())


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
                gw.close()

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
            gw.close()

    asyncio.run(scenario())
