"""What the hub's users get, as an analysis facility would set it (pure functions).

- The site's Dask configuration (a ``dask.config`` YAML in the servers' root config
  directory, ``DASK_ROOT_CONFIG``, the dev hub's ``/etc/dask``): dask-labextension's
  sidebar creates ``PluginCluster`` s through the hub's plugin, with the facility's worker
  image, memory and data mount.
- The settings of ``jupyterhub_config.py`` (``jhconfig.configure`` reads them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# interlink_htcondor.dask.config.SECTION, not imported: JupyterHub's configuration reads
# this package and must not import Dask (whose logging setup doubles the hub's log lines).
SECTION = "interlink-htcondor"
DASK_CONFIG_FILE = "interlink-htcondor-hub.yaml"
WORKER_MEMORY = "1Gi"
# The facility's dimuon dataset, mounted read-only in every worker (as sites mount their
# storage); the notebook generates it there on first use.
DATA_SUBDIR = "zpeak-data/8x40000"
WORKER_DATA_DIR = "/data/dimuon"


def dask_site_config(plugin_url: str, image: str, data_dir: Path) -> dict[str, Any]:
    """The facility's ``dask.config``: the sidebar's "New" makes a ``PluginCluster`` of the
    hub's plugin with these worker defaults.

    A facility with Kubernetes and interLink sets ``labextension.factory.class`` to
    ``VirtualNodeCluster`` instead (and ``interlink-htcondor.virtual-node-cluster.*``)."""
    return {
        "labextension": {
            "factory": {
                "module": "interlink_htcondor.dask",
                "class": "PluginCluster",
                "args": [],
                "kwargs": {},
            },
            "default": {"workers": None, "adapt": None},
            "initial": [],
        },
        SECTION: {
            "plugin-url": plugin_url,
            "worker": {
                "image": image,
                "memory": WORKER_MEMORY,
                "apptainer-options": f"--bind {data_dir}:{WORKER_DATA_DIR}:ro",
            },
        },
        # The sidebar's clusters live in the user's server: their INFO lines would fill
        # its log (distributed's default level), warnings and errors still show.
        "logging": {"distributed": "warning"},
    }


def hub_settings(
    *,
    public_port: int,
    proxy_api_port: int,
    hub_port: int,
    proxy_command: Path,
    run_dir: Path,
    users_dir: Path,
    singleuser: Path,
    password: str,
    user: str,
    environment: Mapping[str, str],
    examples: list[Path],
    as_root: bool,
) -> dict[str, Any]:
    """The JSON that ``jhconfig.configure`` turns into JupyterHub's configuration."""
    return {
        "bind_url": f"http://127.0.0.1:{public_port}",
        "hub_bind_url": f"http://127.0.0.1:{hub_port}",
        "proxy_api_url": f"http://127.0.0.1:{proxy_api_port}",
        "proxy_command": [str(proxy_command)],
        "run_dir": str(run_dir),
        "users_dir": str(users_dir),
        "singleuser": [str(singleuser)],
        "password": password,
        "allowed_users": [user],
        "environment": dict(environment),
        "examples": [str(p) for p in examples],
        "allow_root": as_root,
    }


def jupyter_server_config(lab_settings: Path) -> dict[str, Any]:
    """The site's Jupyter server configuration (a directory on ``JUPYTER_CONFIG_PATH``):
    JupyterLab reads the site's setting overrides from ``lab_settings``."""
    return {"LabApp": {"app_settings_dir": str(lab_settings)}}


def lab_overrides() -> dict[str, Any]:
    """The site's JupyterLab setting defaults (``overrides.json``): no news or update
    checks, which a closed network cannot answer and a facility's users need not see."""
    return {
        "@jupyterlab/apputils-extension:notification": {
            "checkForUpdates": False,
            "fetchNews": "false",
        },
    }
