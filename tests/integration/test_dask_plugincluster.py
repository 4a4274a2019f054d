"""PluginCluster against the real plugin and the real personal pool: workers are HTCondor
jobs running in Apptainer, and what goes wrong with them reaches the user."""

from __future__ import annotations

import html
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
from distributed import Client
from worker_probe import ancestors, host_ancestors

from interlink_htcondor.dask import PluginCluster, WorkerStartError
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.local_plugin import LocalPlugin

# Workers do not have this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

IMPOSSIBLE = 'TARGET.Machine == "no-such-machine.invalid"'
RUNNING, HELD = 2, 5


@pytest.fixture(scope="module")
def plugin_url(pool: PoolInfo) -> Iterator[str]:
    instance = f"dask-test-{uuid.uuid4().hex[:6]}"
    with LocalPlugin(env={"INTERLINK_HTCONDOR_POLICY__INSTANCE": instance}) as plugin:
        yield plugin.url


@pytest.fixture
def cluster(plugin_url: str) -> Iterator[PluginCluster]:
    c = PluginCluster(plugin_url, memory="512Mi", status_interval=1.0, death_timeout=60)
    try:
        yield c
    finally:
        c.close()


def until(cond: Callable[[], bool], timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.5)


def jobs_of(schedd: Any, names: list[str]) -> dict[str, Any]:
    """Job ads of the given worker pods, by pod name."""
    quoted = ", ".join(f'"{n}"' for n in names)
    ads = schedd.query(
        constraint=f"member(InterlinkPodName, {{{quoted}}})",
        projection=["InterlinkPodName", "JobStatus", "ClusterId", "ProcId", "HoldReason"],
    )
    return {str(ad["InterlinkPodName"]): ad for ad in ads}


def test_workers_are_htcondor_jobs_in_apptainer(cluster: PluginCluster, schedd: Any) -> None:
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=180)
    names = sorted(cluster.jobs())
    ads = jobs_of(schedd, names)
    assert sorted(ads) == names
    assert all(ad["JobStatus"] == RUNNING for ad in ads.values())
    assert {f"{ad['ClusterId']}.{ad['ProcId']}" for ad in ads.values()} == set(
        cluster.jobs().values()
    )
    with Client(cluster) as client:  # type: ignore[no-untyped-call]
        info = client.run(
            lambda: {
                "container": __import__("os").environ.get("APPTAINER_CONTAINER", ""),
                "python": __import__("platform").python_version_tuple()[:2],
                "chain": ancestors(),
            }
        )
    assert len(info) == 2
    for worker in info.values():
        assert worker["container"]  # Apptainer says it runs the worker
        assert tuple(worker["python"]) == ("3", "11")
        assert worker["chain"][-1] == "appinit"  # contained: its own PID namespace
    for name in names:  # ... and, seen from the host, under an HTCondor starter
        chains = host_ancestors(name)
        assert chains and all("condor_starter" in chain for chain in chains), chains
    assert "2/2 running" in repr(cluster)


def test_held_job_fails_the_wait_at_once_with_its_hold_reason(
    cluster: PluginCluster, pool: PoolInfo, schedd: Any
) -> None:
    cluster.set_template(requirements=IMPOSSIBLE)  # stays idle, so the hold is ours
    cluster.scale(1)
    until(lambda: len(cluster.jobs()) == 1, 60, "job submitted")
    ((name, job),) = cluster.jobs().items()
    # condor_hold as the job owner (Schedd.act's reason does not reach HoldReason)
    hold = ["condor_hold", "-reason", "held by the test: disk quota", job]
    assert pool.run_in_pool(hold, timeout=30).returncode == 0
    t0 = time.monotonic()
    with pytest.raises(WorkerStartError, match="held by the test: disk quota") as e:
        cluster.wait_for_workers(1, timeout=600)
    assert time.monotonic() - t0 < 60  # at once, not after the timeout
    (failure,) = e.value.failures
    assert failure.reason.startswith("JobHeld: ") and failure.job_id == job
    assert cluster.failures == [failure] and "1 failed" in repr(cluster)
    until(lambda: not jobs_of(schedd, [name]), 60, "held job removed")


def _running_worker(cluster: PluginCluster, schedd: Any) -> tuple[str, str]:
    cluster.scale(1)
    cluster.wait_for_workers(1, timeout=180)
    ((name, job),) = cluster.jobs().items()
    assert jobs_of(schedd, [name])[name]["JobStatus"] == RUNNING
    return name, job


def test_held_running_worker_is_a_failure_with_the_hold_reason(
    cluster: PluginCluster, pool: PoolInfo, schedd: Any
) -> None:
    name, job = _running_worker(cluster, schedd)
    hold = ["condor_hold", "-reason", "held by the test: over quota", job]
    assert pool.run_in_pool(hold, timeout=30).returncode == 0
    until(lambda: len(cluster.failures) == 1, 90, "failure recorded")
    (failure,) = cluster.failures
    # The worker exits 0 on the hold's SIGTERM: /status says held, never Completed.
    assert failure.name == name and failure.job_id == job
    assert failure.reason.startswith("JobHeld: ") and "over quota" in failure.reason
    assert "1 failed" in repr(cluster) and "over quota" in repr(cluster)
    until(lambda: not jobs_of(schedd, [name]), 60, "held job removed")


def test_removed_running_worker_is_a_failure_with_the_remove_reason(
    cluster: PluginCluster, pool: PoolInfo, schedd: Any
) -> None:
    name, job = _running_worker(cluster, schedd)
    rm = ["condor_rm", "-reason", "removed by the test: maintenance", job]
    assert pool.run_in_pool(rm, timeout=30).returncode == 0
    until(lambda: len(cluster.failures) == 1, 90, "failure recorded")
    (failure,) = cluster.failures
    assert failure.name == name and failure.job_id == job
    assert failure.reason.startswith("JobRemoved: exit code 143: ")
    assert "removed by the test: maintenance" in failure.reason


def test_worker_no_slot_can_hold_fails_the_wait_at_once(cluster: PluginCluster) -> None:
    cluster.set_template(memory="200Gi")
    cluster.scale(1)
    t0 = time.monotonic()
    with pytest.raises(WorkerStartError, match="more than any slot of the pool offers") as e:
        cluster.wait_for_workers(1, timeout=600)
    assert time.monotonic() - t0 < 60
    assert e.value.failures[0].reason.startswith("Unschedulable: ")


def test_missing_image_says_why_once(cluster: PluginCluster) -> None:
    cluster.set_template(image="/nonexistent/worker.sif")
    cluster.scale(1)
    with pytest.raises(WorkerStartError) as e:
        cluster.wait_for_workers(1, timeout=600)
    (failure,) = e.value.failures
    assert failure.reason.startswith("ContainerCannotRun: ")
    assert "/nonexistent/worker.sif" in failure.reason
    # Apptainer's error is in the status and the log: each place shows it once.
    error = failure.reason.rsplit(": ", 3)[-1]  # "... lstat /nonexistent: no such file ..."
    assert str(e.value).count(error) == 1
    assert repr(cluster).count(error) == 1
    assert cluster._repr_html_().count(html.escape(error)) == 1


def test_never_starting_job_is_reported_as_pending_with_why(cluster: PluginCluster) -> None:
    cluster.set_template(requirements=IMPOSSIBLE)
    cluster._pending_warning = 3
    cluster.scale(1)
    until(
        lambda: any("still pending" in m for _, m in cluster._cluster_manager_logs), 90, "warning"
    )
    assert cluster.counts().pending == 1
    (note,) = [n for n in cluster.notes() if "pending" in n]
    assert "HTCondor job" in note  # the plugin's idle/unschedulable explanation


def test_crashing_worker_is_a_failure_with_its_log(cluster: PluginCluster, schedd: Any) -> None:
    cluster.set_template(extra_args=["--no-such-option"])
    cluster.scale(1)
    with pytest.raises(WorkerStartError) as e:
        cluster.wait_for_workers(1, timeout=180)
    (failure,) = e.value.failures
    assert failure.reason.startswith("Error: exit code ")  # non-zero: a failure, not a finish
    assert "no-such-option" in failure.log_tail  # the worker's own error, from /getLogs
    until(lambda: not jobs_of(schedd, [failure.name]), 60, "job removed")  # cleaned up
    assert "1 failed" in repr(cluster)


def test_scale_down_removes_idle_jobs_before_running_workers(
    cluster: PluginCluster, schedd: Any
) -> None:
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=180)
    running = sorted(cluster.jobs())
    cluster.set_template(requirements=IMPOSSIBLE)  # the next two never start
    cluster.scale(4)
    until(lambda: len(cluster.jobs()) == 4, 60, "four jobs")
    idle = sorted(set(cluster.jobs()) - set(running))
    cluster.scale(2)
    until(lambda: not jobs_of(schedd, idle), 60, "idle jobs removed")
    ads = jobs_of(schedd, running)
    assert sorted(ads) == running and all(ad["JobStatus"] == RUNNING for ad in ads.values())
    assert cluster.counts().running == 2


def test_graceful_scale_down_keeps_results(cluster: PluginCluster, schedd: Any) -> None:
    cluster.scale(2)
    cluster.wait_for_workers(2, timeout=180)
    with Client(cluster) as client:  # type: ignore[no-untyped-call]
        addrs = list(client.scheduler_info()["workers"])
        futures = [
            client.submit(lambda i: i * i, i, workers=[a], pure=False) for i, a in enumerate(addrs)
        ]
        assert client.gather(futures) == [0, 1]
        before = set(cluster.jobs())
        cluster.scale(1)
        until(lambda: len(jobs_of(schedd, sorted(before))) == 1, 120, "one job left")
        assert client.gather(futures) == [0, 1]  # the retired worker's data moved first


def test_adapt_grows_and_shrinks_through_the_plugin(cluster: PluginCluster, schedd: Any) -> None:
    cluster.adapt(minimum=0, maximum=2, interval="500ms", wait_count=4, target_duration="1s")
    with Client(cluster) as client:  # type: ignore[no-untyped-call]
        futures = client.map(lambda x: __import__("time").sleep(3) or x, range(8), pure=False)
        assert sum(client.gather(futures)) == sum(range(8))
        assert len(cluster.jobs()) >= 1
    until(lambda: not cluster.jobs(), 120, "adaptive scale-down to zero")
