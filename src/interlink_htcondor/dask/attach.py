"""A notebook attaching to a Dask cluster it did not create: the one a user made in
JupyterLab's Dask sidebar (dask-labextension), whose scheduler runs in the user's Jupyter
server, not in the kernel.

The kernel asks its server's Dask extension (``GET <server>/dask/clusters``), as the
sidebar itself does, with the server's own credentials: under JupyterHub the
``JUPYTERHUB_SERVICE_URL`` and ``JUPYTERHUB_API_TOKEN`` the spawner gives the server (and
so its kernels); under a plain Jupyter server, the server that started this kernel.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from interlink_htcondor.dask.plugincluster import JOBS_METADATA

Json = dict[str, Any]


class SidebarError(RuntimeError):
    """The sidebar's clusters cannot be listed, or do not say which one to use."""


def _server() -> tuple[str, dict[str, str]] | None:
    """Base URL and auth header of the Jupyter server this kernel runs under (None when it
    runs under none: a script, nbclient)."""
    url, token = os.environ.get("JUPYTERHUB_SERVICE_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if url and token:
        return url.rstrip("/") + "/", {"Authorization": f"token {token}"}
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    for info in list_running_servers():
        if info.get("pid") == os.getppid():
            return str(info["url"]), {"Authorization": f"token {info.get('token', '')}"}
    return None


def sidebar_clusters(timeout: float = 30) -> list[Json]:
    """The Dask sidebar's clusters (dask-labextension's models: ``id``, ``name``,
    ``scheduler_address``, ``workers``...); empty when this kernel has no Jupyter server
    or the server has no Dask extension."""
    server = _server()
    if server is None:
        return []
    base, headers = server
    try:
        r = httpx.get(base + "dask/clusters", headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise SidebarError(f"cannot ask the Jupyter server at {base} for its clusters: {e}") from e
    if r.status_code == 404:
        return []  # no dask-labextension in this server
    if r.status_code != 200:
        raise SidebarError(
            f"the Jupyter server at {base} answered {r.status_code} for its Dask clusters: "
            f"{r.text[:200]}"
        )
    return list(r.json())


def sidebar_cluster_address(name: str | None = None) -> str | None:
    """The scheduler address of the sidebar's cluster called ``name``, or of its only
    cluster; None when it has none. Several clusters and no ``name`` is an error that
    lists them."""
    clusters = sidebar_clusters()
    if name is not None:
        found = [c for c in clusters if c.get("name") == name]
        if not found:
            have = ", ".join(repr(c.get("name")) for c in clusters) or "none"
            raise SidebarError(f"the Dask sidebar has no cluster {name!r} (it has {have})")
        return str(found[0]["scheduler_address"])
    if len(clusters) > 1:
        have = ", ".join(repr(c.get("name")) for c in clusters)
        raise SidebarError(f"the Dask sidebar has several clusters ({have}): name one")
    return str(clusters[0]["scheduler_address"]) if clusters else None


def jobs_of(client: Any) -> dict[str, str]:
    """HTCondor job id of each worker of the ``PluginCluster`` behind ``client``'s
    scheduler, by worker name (published by the cluster; empty for other clusters)."""
    return dict(client.get_metadata(list(JOBS_METADATA), default={}))
