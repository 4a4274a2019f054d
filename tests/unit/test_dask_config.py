"""Site-wide defaults of the Dask helpers through ``dask.config`` (``interlink-htcondor``)."""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import pytest
import yaml

from interlink_htcondor.dask import PluginCluster, VirtualNodeCluster, WorkerTemplate
from interlink_htcondor.dask import config as site_config
from interlink_htcondor.dask.plugincluster import PLUGIN_CLUSTER_PARAMETERS
from interlink_htcondor.dask.template import TEMPLATE_PARAMETERS
from interlink_htcondor.dask.virtualnode import VIRTUAL_NODE_CLUSTER_PARAMETERS


@pytest.fixture
def site_file(tmp_path: Path) -> Iterator[Path]:
    """A facility's config directory; dask.config is restored afterwards."""
    # dask.config.refresh rebuilds the global dict in place: restore its contents.
    saved = copy.deepcopy(dask.config.config)
    saved_defaults = list(dask.config.defaults)
    try:
        yield tmp_path
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)
        dask.config.defaults[:] = saved_defaults


def load(directory: Path, env: dict[str, str] | None = None) -> None:
    dask.config.refresh(paths=[str(directory)], env=env or {})


def test_packaged_defaults_match_the_plain_template() -> None:
    t = WorkerTemplate()
    worker = site_config.DEFAULTS["interlink-htcondor"]["worker"]
    assert t.memory == worker["memory"] == "2Gi"
    assert t.nthreads == worker["nthreads"] == 1
    assert t.accounting_group is None
    assert t.image.startswith("ghcr.io/dask/dask:")


def test_a_site_file_sets_worker_defaults_for_everyone(site_file: Path) -> None:
    (site_file / "facility.yaml").write_text(
        yaml.safe_dump(
            {
                "interlink-htcondor": {
                    "plugin-url": "unix:///run/interlink-htcondor/plugin.sock",
                    "worker": {
                        "image": "/cvmfs/unpacked.cern.ch/dask:2026",
                        "memory": "3Gi",
                        "accounting-group": "group_cms.analysis",
                        "env": {"OMP_NUM_THREADS": "1"},
                    },
                }
            }
        )
    )
    load(site_file)
    t = WorkerTemplate()
    assert t.image == "/cvmfs/unpacked.cern.ch/dask:2026"
    assert t.memory == "3Gi"
    assert t.accounting_group == "group_cms.analysis"
    assert t.pod("w-0")["metadata"]["annotations"] == {
        "htcondor.interlink.eu/accounting-group": "group_cms.analysis"
    }
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in t.container()["env"]
    # An argument wins over the site's default.
    assert WorkerTemplate(memory="8Gi").memory == "8Gi"
    assert WorkerTemplate(memory="8Gi").accounting_group == "group_cms.analysis"


def test_environment_variables_override_the_file(site_file: Path) -> None:
    load(site_file, env={"DASK_INTERLINK_HTCONDOR__WORKER__REQUIREMENTS": 'Arch == "X86_64"'})
    assert WorkerTemplate().requirements == 'Arch == "X86_64"'


def test_templates_do_not_share_mutable_defaults(site_file: Path) -> None:
    (site_file / "f.yaml").write_text("interlink-htcondor: {worker: {labels: {team: zpeak}}}\n")
    load(site_file)
    a = WorkerTemplate()
    assert dict(a.labels) == {"team": "zpeak"}
    assert isinstance(a.labels, dict)
    a.labels["team"] = "changed"
    assert WorkerTemplate().labels == {"team": "zpeak"}


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("interlink-htcondor: {worker: {nthreads: two}}", "nthreads"),
        ("interlink-htcondor: {worker: {memory: 4}}", "memory"),
        ("interlink-htcondor: {worker: {nanny: 'no'}}", "nanny"),
        ("interlink-htcondor: {worker: {env: {A: 1}}}", "env"),
        ("interlink-htcondor: {worker: {extra-args: [--x, 3]}}", "extra_args"),
    ],
)
def test_a_wrong_type_in_the_site_file_names_the_field(
    site_file: Path, yaml_text: str, field: str
) -> None:
    (site_file / "f.yaml").write_text(yaml_text + "\n")
    load(site_file)
    with pytest.raises(TypeError, match=rf"WorkerTemplate\.{field}"):
        WorkerTemplate()


def test_a_boolean_is_not_a_thread_count() -> None:
    with pytest.raises(TypeError, match="nthreads"):
        WorkerTemplate(nthreads=True)


def test_plugin_cluster_takes_url_token_and_namespace_from_the_site(
    site_file: Path, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    (site_file / "f.yaml").write_text(
        yaml.safe_dump(
            {
                "interlink-htcondor": {
                    "plugin-url": "http://127.0.0.1:9",
                    "token-file": str(token),
                    "namespace": "cms",
                    "plugin-cluster": {"status-interval": 7.5},
                }
            }
        )
    )
    load(site_file)

    async def make() -> dict[str, Any]:
        cluster = await PluginCluster(asynchronous=True)
        try:
            backend = cluster._backend
            return {
                "url": cluster.plugin_url,
                "namespace": backend.namespace,
                "token": backend._client_args["token"],
                "interval": cluster._status_interval,
            }
        finally:
            await cluster.close()  # type: ignore[misc]  # annotated as maybe not awaitable

    got = asyncio.run(make())
    assert got == {
        "url": "http://127.0.0.1:9",
        "namespace": "cms",
        "token": "s3cret",
        "interval": 7.5,
    }


def test_an_unreadable_token_file_is_a_clear_error(site_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the plugin's bearer token"):
        PluginCluster("http://127.0.0.1:9", token_file=tmp_path / "missing", asynchronous=True)


def test_virtual_node_cluster_takes_the_scheduler_address_from_the_site(site_file: Path) -> None:
    with pytest.raises(ValueError, match="reach"):
        VirtualNodeCluster(name="zpeak")
    (site_file / "f.yaml").write_text(
        "interlink-htcondor: {virtual-node-cluster: {scheduler-address: 'tcp://nodes:30786'}}\n"
    )
    load(site_file)
    # Past the address check, KubeCluster needs an API server: that it gets there (and
    # not the reachability error) shows the site's address was taken.
    with pytest.raises(Exception) as info:
        VirtualNodeCluster(name="zpeak", shutdown_on_close=True, resource_timeout=1)
    assert "reach" not in str(info.value)


def test_every_argument_is_documented() -> None:
    for cls, text in (
        (WorkerTemplate, TEMPLATE_PARAMETERS),
        (PluginCluster, PLUGIN_CLUSTER_PARAMETERS),
        (VirtualNodeCluster, VIRTUAL_NODE_CLUSTER_PARAMETERS),
    ):
        documented = {
            name.strip()
            for line in text.splitlines()
            if line.startswith("    ") and not line.startswith("        ")
            for name in line.split(" : ")[0].replace("**", "").split(",")
        }
        params = set(inspect.signature(cls).parameters) - {"self", "kwargs"}
        missing = params - documented
        assert not missing, f"{cls.__name__}: undocumented {sorted(missing)}"
        assert "Parameters\n    ----------" in (cls.__doc__ or "")
        assert "{" not in (cls.__doc__ or "").split("Examples")[0]
