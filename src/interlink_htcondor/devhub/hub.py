"""Bringing the hub up and down: the pool, the plugin the hub's users send workers to, the
site's Dask configuration, and JupyterHub (which starts its proxy and the users' servers)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from interlink_htcondor import devpool
from interlink_htcondor.devpool.state import exclusive

from . import jhconfig, procs, proxy, siteconfig
from .errors import HubError
from .state import (
    DEFAULT_USER,
    HubInfo,
    HubPaths,
    HubPorts,
    default_paths,
    load_info,
    password,
    write_info,
)

Say = Callable[[str], None]
PLUGIN_PREFIX = "hub"  # the plugin's instance is hub-<its port>: its jobs are told apart
HUB, PLUGIN = "jupyterhub", "plugin"


def _quiet(_msg: str) -> None:
    pass


def _locked(paths: HubPaths) -> contextlib.AbstractContextManager[None]:
    return exclusive(paths.lock_file)


def read_info(paths: HubPaths | None = None) -> HubInfo | None:
    """The running hub's facts, or None when its hub or plugin process is not running."""
    paths = paths or default_paths()
    info = load_info(paths)
    if info is None:
        return None
    hub = procs.running(paths.pid_file(HUB), str(paths.hub_config))
    plugin = procs.running(paths.pid_file(PLUGIN), f"--port={info.ports.plugin}")
    return info if hub and plugin else None


def ensure_up(
    *,
    paths: HubPaths | None = None,
    ports: HubPorts | None = None,
    user: str = DEFAULT_USER,
    examples: list[Path] | None = None,
    timeout: float = 300,
    say: Say | None = None,
) -> HubInfo:
    """Start what is not running: the pool, the plugin, JupyterHub. Idempotent: a running
    hub is returned at once (``down`` first to change its ports or user)."""
    paths = paths or default_paths()
    report = say or _quiet
    info = read_info(paths)
    if info is not None:
        return info
    with _locked(paths):
        info = read_info(paths)
        if info is not None:
            return info
        _stop_all(paths)  # what is left of a hub that is only half running
        return _start(paths, ports or HubPorts(), user, examples or [], timeout, report)


def _start(
    paths: HubPaths, ports: HubPorts, user: str, examples: list[Path], timeout: float, say: Say
) -> HubInfo:
    for port in (ports.public, ports.proxy_api, ports.hub, ports.plugin):
        if not procs.port_free(port):
            raise HubError(f"port {port} on 127.0.0.1 is in use; choose others (hub up --port)")
    dirs = (paths.run, paths.logs, paths.dask_config, paths.jupyter_config, paths.lab_settings)
    for d in (*dirs, paths.users):
        d.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o700)  # the password, the cookie secret and the users' homes
    try:
        pool = devpool.ensure_up(say=lambda m: say(f"pool: {m}"))
    except devpool.PoolError as e:
        raise HubError(str(e)) from None
    deadline = time.monotonic() + timeout

    say(f"installing {proxy.PACKAGE} {proxy.VERSION} from npm (once)")
    chp = proxy.ensure(paths.node_prefix, paths.log("npm"))

    plugin_url = f"http://127.0.0.1:{ports.plugin}"
    instance = f"{PLUGIN_PREFIX}-{ports.plugin}"
    say(f"starting the plugin on {plugin_url} (instance {instance!r})")
    plugin_pid = _start_plugin(paths, pool, ports.plugin, instance)
    procs.wait_http(
        plugin_url + "/readyz",
        pid=plugin_pid,
        log=paths.log(PLUGIN),
        what="the plugin",
        timeout=max(deadline - time.monotonic(), 10),
        ok=lambda r: r.status_code == 200,
    )

    data_dir = pool.shared_dir / siteconfig.DATA_SUBDIR
    data_dir.mkdir(parents=True, exist_ok=True)  # the workers' bind needs it to exist
    site = siteconfig.dask_site_config(plugin_url, str(pool.images["python"]), data_dir)
    (paths.dask_config / siteconfig.DASK_CONFIG_FILE).write_text(
        yaml.safe_dump(site, sort_keys=False)
    )
    (paths.jupyter_config / "jupyter_server_config.json").write_text(
        json.dumps(siteconfig.jupyter_server_config(paths.lab_settings), indent=2)
    )
    (paths.lab_settings / "overrides.json").write_text(
        json.dumps(siteconfig.lab_overrides(), indent=2)
    )

    settings = siteconfig.hub_settings(
        public_port=ports.public,
        proxy_api_port=ports.proxy_api,
        hub_port=ports.hub,
        proxy_command=chp,
        run_dir=paths.run,
        users_dir=paths.users,
        singleuser=Path(sys.executable).with_name("jupyterhub-singleuser"),
        password=password(paths),
        user=user,
        environment={
            "DASK_ROOT_CONFIG": str(paths.dask_config),
            "JUPYTER_CONFIG_PATH": str(paths.jupyter_config),
            devpool.state.STATE_DIR_ENV: str(pool.state_dir),
        },
        examples=examples,
        as_root=os.geteuid() == 0,
    )
    paths.hub_settings.touch(mode=0o600)  # it holds the password
    paths.hub_settings.write_text(json.dumps(settings, indent=2))
    paths.hub_config.write_text(jhconfig.CONFIG_FILE_TEXT)

    url = f"http://127.0.0.1:{ports.public}"
    say(f"starting JupyterHub on {url}")
    hub_pid = _start_hub(paths, chp)
    procs.wait_http(
        f"{url}/hub/api/",
        pid=hub_pid,
        log=paths.log(HUB),
        what="JupyterHub",
        timeout=max(deadline - time.monotonic(), 10),
        ok=lambda r: r.status_code == 200,
    )
    info = HubInfo(
        root=paths.root,
        url=url,
        user=user,
        password_file=paths.password_file,
        plugin_url=plugin_url,
        plugin_instance=instance,
        hub_pid=hub_pid,
        plugin_pid=plugin_pid,
        python=sys.executable,
        ports=ports,
        started_at=time.time(),
    )
    write_info(paths, info)
    return info


def _start_plugin(paths: HubPaths, pool: devpool.PoolInfo, port: int, instance: str) -> int:
    env = {
        **os.environ,
        devpool.state.STATE_DIR_ENV: str(pool.state_dir),
        "INTERLINK_HTCONDOR_POLICY__INSTANCE": instance,
        # The site's data mount reaches the workers as an apptainer option.
        "INTERLINK_HTCONDOR_POLICY__ALLOW_APPTAINER_OPTIONS": "true",
    }
    argv = [sys.executable, "-m", "interlink_htcondor", "serve"]
    argv += ["--host", "127.0.0.1", f"--port={port}"]
    return procs.start(
        argv, env=env, cwd=paths.root, log=paths.log(PLUGIN), pid_file=paths.pid_file(PLUGIN)
    )


def _start_hub(paths: HubPaths, chp: Path) -> int:
    env = {
        **os.environ,
        jhconfig.SETTINGS_ENV: str(paths.hub_settings),
        # configurable-http-proxy is a node script: node must be on its PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    argv = [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(paths.hub_config)]
    return procs.start(
        argv, env=env, cwd=paths.run, log=paths.log(HUB), pid_file=paths.pid_file(HUB)
    )


def _stop_all(paths: HubPaths) -> bool:
    """Stop the hub (which stops its proxy and the users' servers), then the plugin, and
    remove the jobs its plugin left (a server stopped with its clusters deletes no pod)."""
    stopped = procs.stop(paths.pid_file(HUB), str(paths.hub_config), grace=30)
    info = load_info(paths)
    if info is not None:
        stopped |= procs.stop(paths.pid_file(PLUGIN), f"--port={info.ports.plugin}")
        _remove_jobs(info.plugin_instance)
    # A proxy whose hub was killed keeps running: it would hold the public port.
    stopped |= procs.stop(paths.run / "proxy.pid", str(proxy.command(paths.node_prefix)))
    paths.info_file.unlink(missing_ok=True)
    return stopped


def _remove_jobs(instance: str) -> None:
    """Remove the jobs of this hub's plugin instance (and only those) from the pool."""
    pool = devpool.read_info()
    if pool is None:
        return
    from interlink_htcondor.local_plugin import force_remove, pool_schedd

    constraint = f'InterlinkPlugin == "{instance}"'
    force_remove(pool_schedd(pool), constraint, "the hub was stopped", grace=2)


def down(paths: HubPaths | None = None) -> bool:
    """Stop the hub, its proxy, the users' servers and the plugin (their workers' jobs go
    with the clusters). False when nothing was running. The pool keeps running."""
    paths = paths or default_paths()
    with _locked(paths):
        return _stop_all(paths)
