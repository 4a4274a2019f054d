"""Fixtures of the plugin's integration tests (helpers live in ``plugin_harness`` and
``kube_harness``).

``plugin`` is the real ``interlink-htcondor serve`` against the real personal pool, started
once per session; ``schedd_jobs`` counts a pod's jobs straight from the schedd.
``kube_cluster`` is the development cluster (Kubernetes, interLink's API server and virtual
kubelet, the cluster's own plugin) in front of the same pool, started if needed and left
running; ``kube_namespace`` is a fresh namespace in it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kube_harness import KubeCluster
from plugin_harness import Plugin, started

from interlink_htcondor.devpool import PoolInfo


@pytest.fixture(scope="session")
def plugin(pool: PoolInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    with started(pool, tmp_path_factory.mktemp("plugin")) as p:
        try:
            yield p
        finally:
            print(f"\nplugin log: {p.log_path}")


@pytest.fixture(scope="session")
def schedd_jobs(plugin: Plugin) -> Any:
    """Count this session's jobs of a pod straight from the schedd (and its history).

    The schedd is located again and the call retried once on failure: the shared pool may
    be restarted by another test session, which invalidates cached security sessions."""
    import htcondor2

    plugin.pool.apply_client_env()

    def schedd() -> Any:
        ad = htcondor2.Collector(plugin.pool.collector).locate(htcondor2.DaemonType.Schedd)
        return htcondor2.Schedd(ad)

    def retried(fn: Any) -> Any:
        try:
            return fn(schedd())
        except htcondor2.HTCondorException:
            time.sleep(2)
            return fn(schedd())

    def jobs(uid: str, history: bool = False) -> list[Any]:
        c = f'InterlinkPodUID == "{uid}" && InterlinkPlugin == "{plugin.instance}"'
        found = list(retried(lambda s: s.query(constraint=c, projection=["ClusterId"])))
        if history:
            found += list(
                retried(lambda s: s.history(constraint=c, projection=["ClusterId"], match=10))
            )
        return found

    def act(action: Any, job_spec: Any, reason: Any) -> Any:
        return retried(lambda s: s.act(action, job_spec, reason))

    jobs.act = act  # type: ignore[attr-defined]
    return jobs


@pytest.fixture(scope="session")
def kube_cluster(pool: PoolInfo) -> Iterator[KubeCluster]:
    """The development cluster (started if absent, building what is missing; left running).
    The namespaces the session made are deleted at its end, which removes their jobs."""
    from interlink_htcondor import devcluster

    try:
        info = devcluster.ensure_up()
    except devcluster.ClusterError as e:
        logs = devcluster.default_paths().logs
        tails = []
        for name in ("build-kubernetes", "build-interlink", "fetch-etcd"):
            path = logs / f"{name}.log"
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-30:]
                tails.append(f"--- {path} ---\n" + "\n".join(lines))
        pytest.fail(f"cluster up failed: {e}\n" + "\n".join(tails), pytrace=False)
    cluster = KubeCluster(info)
    try:
        yield cluster
    finally:
        left = cluster.delete_namespaces()
        assert not left, f"namespaces not deleted in time: {left}"


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace of the cluster, deleted (with its pods, so their jobs) when the test
    ends: before the pool restart that `make test` runs last."""
    name = kube_cluster.new_namespace()
    yield name
    left = kube_cluster.delete_namespaces([name])
    assert not left, f"namespace {name} not deleted in time"
