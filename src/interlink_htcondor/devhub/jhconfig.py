"""JupyterHub's configuration for the dev hub: ``jupyterhub_config.py`` calls
``configure(c)``, which reads the settings ``hub up`` wrote (``siteconfig.hub_settings``).

Loopback only; a test authenticator (one shared password, the allowed users); a local
spawner that runs each user's JupyterLab as the hub's own Unix user, in a home directory
under the hub's state directory, with the facility's Dask configuration.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

SETTINGS_ENV = "INTERLINK_HTCONDOR_HUB_SETTINGS"

CONFIG_FILE_TEXT = """\
# Written by `interlink-htcondor hub up`; the settings are in $INTERLINK_HTCONDOR_HUB_SETTINGS.
from interlink_htcondor.devhub.jhconfig import configure

configure(get_config())  # noqa: F821
"""


def configure(c: Any) -> None:
    s = json.loads(Path(os.environ[SETTINGS_ENV]).read_text())
    run = Path(s["run_dir"])
    c.JupyterHub.bind_url = s["bind_url"]
    c.JupyterHub.hub_bind_url = s["hub_bind_url"]
    c.JupyterHub.db_url = f"sqlite:///{run / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(run / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(run / "jupyterhub.pid")
    # Stopping the hub stops the proxy it started and the users' servers.
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    c.ConfigurableHTTPProxy.api_url = s["proxy_api_url"]
    c.ConfigurableHTTPProxy.command = s["proxy_command"]
    c.ConfigurableHTTPProxy.pid_file = str(run / "proxy.pid")

    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = s["password"]
    c.Authenticator.allowed_users = set(s["allowed_users"])

    c.JupyterHub.spawner_class = "simple"
    users = Path(s["users_dir"])
    c.SimpleLocalProcessSpawner.home_dir_template = str(users / "{username}")
    c.Spawner.cmd = s["singleuser"]
    c.Spawner.args = ["--ServerApp.allow_root=True"] if s["allow_root"] else []
    c.Spawner.default_url = "/lab"
    c.Spawner.environment = s["environment"]
    # A busy two-core machine starts a JupyterLab slowly.
    c.Spawner.start_timeout = 300
    c.Spawner.http_timeout = 300

    examples = [Path(p) for p in s["examples"]]

    def pre_spawn(spawner: Any) -> None:
        """The user's home, with the facility's example notebooks (never overwritten)."""
        home = users / spawner.user.name
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        for src in examples:
            if src.is_file() and not (home / src.name).exists():
                shutil.copyfile(src, home / src.name)

    c.Spawner.pre_spawn_hook = pre_spawn
