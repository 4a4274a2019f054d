"""The dev hub's pure parts: the site's Dask and Jupyter configuration, JupyterHub's
configuration, and the state it keeps (no hub is started here)."""

from __future__ import annotations

import importlib
import json
import stat
from pathlib import Path
from types import SimpleNamespace

import dask.config
import pytest
import yaml
from traitlets.config import Config

from interlink_htcondor import cli
from interlink_htcondor.dask import PluginCluster, WorkerTemplate
from interlink_htcondor.devhub import jhconfig, siteconfig
from interlink_htcondor.devhub.state import HubInfo, HubPaths, HubPorts, password
from interlink_htcondor.devpool import state as devpool_state


def test_the_sidebars_new_button_makes_a_plugin_cluster_with_the_sites_defaults(
    tmp_path: Path,
) -> None:
    site = siteconfig.dask_site_config("http://127.0.0.1:8403", "/img/python", tmp_path)
    # As Dask reads it from the site's config directory: merged into the defaults.
    (tmp_path / siteconfig.DASK_CONFIG_FILE).write_text(yaml.safe_dump(site))
    merged = dask.config.merge(dask.config.config, *dask.config.collect_yaml([str(tmp_path)]))
    with dask.config.set(merged):
        # What dask-labextension's make_cluster reads.
        module = importlib.import_module(dask.config.get("labextension.factory.module"))
        assert getattr(module, dask.config.get("labextension.factory.class")) is PluginCluster
        assert dask.config.get("labextension.factory.kwargs") == {}
        assert dask.config.get("interlink-htcondor.plugin-url") == "http://127.0.0.1:8403"
        t = WorkerTemplate()
        assert t.image == "/img/python" and t.memory == "1Gi"
        assert t.apptainer_options == f"--bind {tmp_path}:/data/dimuon:ro"
        assert dask.config.get("logging.distributed") == "warning"


def test_lab_overrides_turn_off_news_and_update_checks(tmp_path: Path) -> None:
    over = siteconfig.lab_overrides()["@jupyterlab/apputils-extension:notification"]
    assert over == {"checkForUpdates": False, "fetchNews": "false"}
    cfg = siteconfig.jupyter_server_config(tmp_path)
    assert cfg == {"LabApp": {"app_settings_dir": str(tmp_path)}}


def settings(tmp_path: Path, examples: list[Path]) -> dict[str, object]:
    return siteconfig.hub_settings(
        public_port=8400,
        proxy_api_port=8401,
        hub_port=8402,
        proxy_command=tmp_path / "chp",
        run_dir=tmp_path / "run",
        users_dir=tmp_path / "users",
        singleuser=tmp_path / "jupyterhub-singleuser",
        password="s3cret",
        user="physicist",
        environment={"DASK_ROOT_CONFIG": "/site/dask"},
        examples=examples,
        as_root=True,
    )


def test_jupyterhub_configuration_is_loopback_with_a_test_authenticator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = tmp_path / "zpeak.ipynb"
    example.write_text("{}")
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings(tmp_path, [example])))
    monkeypatch.setenv(jhconfig.SETTINGS_ENV, str(path))
    c = Config()
    jhconfig.configure(c)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8400"
    assert c.JupyterHub.hub_bind_url == "http://127.0.0.1:8402"
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:8401"
    assert c.JupyterHub.authenticator_class == "dummy"
    assert c.DummyAuthenticator.password == "s3cret"
    assert c.Authenticator.allowed_users == {"physicist"}
    assert c.JupyterHub.spawner_class == "simple"
    assert c.Spawner.environment == {"DASK_ROOT_CONFIG": "/site/dask"}
    assert c.Spawner.default_url == "/lab"
    assert c.Spawner.args == ["--ServerApp.allow_root=True"]
    # The home is made with the example notebooks, and a user's own copy is kept.
    spawner = SimpleNamespace(user=SimpleNamespace(name="physicist"))
    c.Spawner.pre_spawn_hook(spawner)
    home = tmp_path / "users" / "physicist"
    assert (home / "zpeak.ipynb").read_text() == "{}"
    (home / "zpeak.ipynb").write_text("edited")
    c.Spawner.pre_spawn_hook(spawner)
    assert (home / "zpeak.ipynb").read_text() == "edited"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_the_config_file_applies_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings(tmp_path, [])))
    monkeypatch.setenv(jhconfig.SETTINGS_ENV, str(path))
    c = Config()
    exec(
        compile(jhconfig.CONFIG_FILE_TEXT, "jupyterhub_config.py", "exec"),
        {"get_config": lambda: c},
    )
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8400"


def test_ports_must_be_distinct_and_valid() -> None:
    with pytest.raises(ValueError, match="differ"):
        HubPorts(public=8400, proxy_api=8400)
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        HubPorts(public=0)


def test_info_round_trip_and_env(tmp_path: Path) -> None:
    info = HubInfo(
        root=tmp_path,
        url="http://127.0.0.1:8400",
        user="physicist",
        password_file=tmp_path / "password",
        plugin_url="http://127.0.0.1:8403",
        plugin_instance="hub-8403",
        hub_pid=10,
        plugin_pid=11,
        python="/venv/bin/python",
        ports=HubPorts(),
        started_at=1.0,
    )
    assert HubInfo.from_json(info.to_json()) == info
    assert info.env()["INTERLINK_HTCONDOR_HUB_URL"] == "http://127.0.0.1:8400"
    assert "s3cret" not in info.to_json()  # the password stays in its own file


def test_password_is_made_once_and_private(tmp_path: Path) -> None:
    paths = HubPaths(tmp_path / "hub")
    first = password(paths)
    assert len(first) >= 16 and password(paths) == first
    assert stat.S_IMODE(paths.password_file.stat().st_mode) == 0o600


def test_a_hub_error_is_one_clear_line_of_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(devpool_state.STATE_DIR_ENV, str(tmp_path))  # no hub was started here
    assert cli.main(["hub", "status"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "interlink-htcondor hub: error: the hub is not running; start it with: "
        "interlink-htcondor hub up\n"
    )
