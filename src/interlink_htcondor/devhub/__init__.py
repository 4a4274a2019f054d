"""A personal JupyterHub next to the personal pool, as an analysis facility runs one.

JupyterHub (PyPI) with configurable-http-proxy (npm), a test authenticator and a local
spawner; each user's JupyterLab has dask-labextension, whose sidebar creates
``PluginCluster`` s through a long-lived plugin serving the pool (see ``docs/physicist.md``).

Python API::

    info = ensure_up()        # idempotent: pool, plugin, hub; HubInfo
    info = read_info()        # HubInfo, or None when the hub is down
    down()                    # hub, proxy, users' servers and plugin stopped
"""

from __future__ import annotations

from .errors import HubError
from .hub import down, ensure_up, read_info
from .state import HubInfo, HubPaths, HubPorts, default_paths

__all__ = [
    "HubError",
    "HubInfo",
    "HubPaths",
    "HubPorts",
    "default_paths",
    "down",
    "ensure_up",
    "read_info",
]
