"""Fixtures of the plugin's integration tests (helpers live in ``plugin_harness``).

``plugin`` is the real ``interlink-htcondor serve`` against the real personal pool, started
once per session; ``schedd_jobs`` counts a pod's jobs straight from the schedd.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from plugin_harness import Plugin

from interlink_htcondor.devpool import PoolInfo


@pytest.fixture(scope="session")
def plugin(pool: PoolInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    p = Plugin(pool, tmp_path_factory.mktemp("plugin"))
    p.start()
    try:
        yield p
    finally:
        try:
            p.delete_everything()
        finally:
            p.stop()
            print(f"\nplugin log: {p.log_path}")


@pytest.fixture(scope="session")
def schedd_jobs(plugin: Plugin) -> Any:
    """Count this session's jobs of a pod straight from the schedd (and its history)."""
    import htcondor2

    plugin.pool.apply_client_env()
    schedd = htcondor2.Schedd(
        htcondor2.Collector(plugin.pool.collector).locate(htcondor2.DaemonType.Schedd)
    )

    def jobs(uid: str, history: bool = False) -> list[Any]:
        c = f'InterlinkPodUID == "{uid}" && InterlinkPlugin == "{plugin.instance}"'
        found = list(schedd.query(constraint=c, projection=["ClusterId", "JobStatus"]))
        if history:
            found += list(
                schedd.history(constraint=c, projection=["ClusterId", "JobStatus"], match=10)
            )
        return found

    jobs.schedd = schedd  # type: ignore[attr-defined]
    return jobs
