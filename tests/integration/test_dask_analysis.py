"""The Z -> mu mu analysis on Dask workers that arrived through the plugin as HTCondor jobs:
the fitted peak is right, and the work demonstrably ran on those workers."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
from distributed import Client, get_task_stream
from worker_probe import ancestors, host_ancestors

from dimuon import analyze, dataset, generate
from interlink_htcondor.dask import PluginCluster
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.local_plugin import LocalPlugin

cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_WORKERS = 3


@pytest.fixture(scope="module")
def data(pool: PoolInfo) -> dataset.Dataset:
    cfg = generate.Config(n_files=4, events_per_file=30_000, seed=7)
    return dataset.prepare(pool.shared_dir / "zpeak-test-data", cfg)


@pytest.fixture(scope="module")
def cluster(pool: PoolInfo, data: dataset.Dataset) -> Iterator[PluginCluster]:
    env = {"INTERLINK_HTCONDOR_POLICY__INSTANCE": f"zpeak-test-{uuid.uuid4().hex[:6]}"}
    with LocalPlugin(env=env) as plugin:
        c = PluginCluster(plugin.url, memory="1Gi", apptainer_options=data.apptainer_bind)
        try:
            c.scale(N_WORKERS)
            c.wait_for_workers(N_WORKERS, timeout=240)
            yield c
        finally:
            c.close()


def test_z_peak_is_fitted_from_work_done_on_the_htcondor_workers(
    cluster: PluginCluster, data: dataset.Dataset, schedd: Any
) -> None:
    jobs = cluster.jobs()
    with Client(cluster) as client:  # type: ignore[no-untyped-call]
        workers = client.scheduler_info()["workers"]
        by_address = {addr: str(w["name"]) for addr, w in workers.items()}
        assert set(by_address.values()) == set(jobs)  # every worker is one of our pods
        with get_task_stream(client) as stream:
            result = analyze.run(client, data.files, worker_path=data.worker_path)
        chains = client.run(ancestors)
        versions = client.run(lambda: __import__("platform").python_version_tuple()[:2])

    # The physics.
    assert result.fit.valid
    assert abs(result.fit.mass - 91.2) < 0.5, result.fit.summary()
    assert result.events == 4 * 30_000
    assert result.pairs > 0.3 * result.events

    # Where it ran: every partition was histogrammed inside a worker (the client cannot
    # call get_worker), and only on our HTCondor workers.
    assert all(p.worker["name"] for p in result.partials)
    assert result.workers <= set(jobs)
    assert len(result.partials) == 8  # 4 files x 2 steps of 20,000 events
    assert all(p.worker["container"] for p in result.partials)  # inside Apptainer

    # The scheduler's record of every task agrees: all ran on those workers.
    ran_on = {t["worker"] for t in stream.data}
    assert stream.data and ran_on <= set(by_address)

    # And those workers are contained processes (their own PID namespace) under an
    # HTCondor starter (seen from the host), in running jobs.
    for chain in chains.values():
        assert chain[-1] == "appinit"
    for name in jobs:
        host_chains = host_ancestors(name)
        assert host_chains and all("condor_starter" in c for c in host_chains), host_chains
    assert all(tuple(v) == ("3", "11") for v in versions.values())
    ads = schedd.query(
        constraint=" || ".join(
            f"(ClusterId == {c} && ProcId == {p})" for c, p in (j.split(".") for j in jobs.values())
        ),
        projection=["ClusterId", "ProcId", "JobStatus"],
    )
    assert {f"{ad['ClusterId']}.{ad['ProcId']}" for ad in ads} == set(jobs.values())
    assert all(ad["JobStatus"] == 2 for ad in ads)
