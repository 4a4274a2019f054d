"""Pure parts of the development pool: configuration text, client environment, mirror choice,
version pins, embedded settings. No pool is started here."""

from __future__ import annotations

import dataclasses
import fnmatch
import subprocess
from pathlib import Path

import pytest
from _translate_support import pod, request, spec_of

from interlink_htcondor import settings
from interlink_htcondor.core.translate import TranslationError, translate
from interlink_htcondor.devpool import config, embedded_settings, host, images, pool, state
from interlink_htcondor.devpool.errors import PoolError
from interlink_htcondor.devpool.state import PoolInfo, PoolPaths


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def make_info(tmp_path: Path) -> PoolInfo:
    return PoolInfo(
        state_dir=tmp_path,
        collector="127.0.0.1:9618",
        token_dir=tmp_path / "tokens",
        root_token_dir=tmp_path / "root-tokens",
        shared_dir=tmp_path / "shared dir",
        pods_dir=tmp_path / "shared dir" / "pods",
        job_user="ilhtc",
        job_uid=7411,
        job_gid=7411,
        images={"busybox": tmp_path / "images/busybox", "python": tmp_path / "images/python"},
        init_pid=123,
        master_pid=124,
        pid_ns="pid:[1]",
        slots=8,
        slot_memory_mib=2048,
        started_at=1.0,
        rootfs=tmp_path / "rootfs",
        timings={"total": 4.2},
    )


def test_config_has_what_the_pool_needs() -> None:
    conf = parse_config(config.condor_config_text(config.PoolConfig()))
    assert conf["NETWORK_INTERFACE"] == "127.0.0.1"
    assert conf["BIND_ALL_INTERFACES"] == "False"
    assert conf["COLLECTOR_HOST"] == "127.0.0.1:9618"
    assert conf["MOUNT_UNDER_SCRATCH"] == ""
    assert conf["USE_PID_NAMESPACES"] == "False"
    assert int(conf["NUM_CPUS"]) >= 8
    assert conf["SLOT_TYPE_1_PARTITIONABLE"] == "True"
    assert conf["ENABLE_CHIRP_UPDATES"] == "True"
    assert conf["SINGULARITY_RUN_TEST_BEFORE_JOB"] == "False"
    assert int(conf["NEGOTIATOR_INTERVAL"]) <= 2


def test_config_follows_slots_memory_and_port() -> None:
    conf = parse_config(
        config.condor_config_text(config.PoolConfig(slots=12, slot_memory_mib=1000, port=9700))
    )
    assert (conf["NUM_CPUS"], conf["MEMORY"]) == ("12", "12000")
    assert conf["COLLECTOR_HOST"] == "127.0.0.1:9700"
    assert conf["SHARED_PORT_PORT"] == "9700"


@pytest.mark.parametrize(
    "kwargs", [{"slots": 0}, {"slots": 1000}, {"slot_memory_mib": 10}, {"port": 80}]
)
def test_config_rejects_bad_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        config.PoolConfig(**kwargs)
    with pytest.raises(PoolError):
        pool._config(kwargs.get("slots"), kwargs.get("slot_memory_mib"), kwargs.get("port"))


def test_client_env_configures_bindings_without_files(tmp_path: Path) -> None:
    env = make_info(tmp_path).client_env(uid=7411)
    assert env["CONDOR_CONFIG"] == "ONLY_ENV"
    assert env["_CONDOR_COLLECTOR_HOST"] == "127.0.0.1:9618"
    assert env["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] == "IDTOKENS"
    assert env["_CONDOR_SEC_TOKEN_DIRECTORY"] == str(tmp_path / "tokens")
    assert env["_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY"] == str(tmp_path / "tokens")
    assert env["INTERLINK_HTCONDOR_POOL_DIR"] == str(tmp_path)
    assert env["INTERLINK_HTCONDOR_POOL_PODS_DIR"] == str(tmp_path / "shared dir" / "pods")
    assert env["INTERLINK_HTCONDOR_POOL_JOB_USER"] == "ilhtc"
    assert env["INTERLINK_HTCONDOR_POOL_PYTHON_IMAGE"] == str(tmp_path / "images/python")
    assert env["INTERLINK_HTCONDOR_POOL_BUSYBOX_IMAGE"] == str(tmp_path / "images/busybox")


def test_root_reads_its_own_token_copy(tmp_path: Path) -> None:
    # HTCondor reads only token files owned by the reading user.
    env = make_info(tmp_path).client_env(uid=0)
    assert env["_CONDOR_SEC_TOKEN_DIRECTORY"] == str(tmp_path / "root-tokens")
    assert env["_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY"] == str(tmp_path / "root-tokens")


def test_export_lines_survive_a_shell_round_trip() -> None:
    env = {"A": "plain", "B": "with space", "C": 'it\'s "quoted" $HOME `x`', "D": ""}
    text = config.export_lines(env)
    assert all(line.startswith("export ") for line in text.splitlines())
    script = 'eval "$1"; printf "%s|%s|%s|%s" "$A" "$B" "$C" "$D"'
    out = subprocess.run(["sh", "-c", script, "sh", text], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out == "|".join(env.values())


def test_info_json_round_trip(tmp_path: Path) -> None:
    info = make_info(tmp_path)
    assert PoolInfo.from_json(info.to_json()) == info
    with pytest.raises(ValueError):
        PoolInfo.from_json('{"version": 999}')


def test_state_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(state.STATE_DIR_ENV, str(tmp_path / "pool"))
    assert state.state_dir() == tmp_path / "pool"
    monkeypatch.delenv(state.STATE_DIR_ENV)
    assert state.state_dir() == Path.home() / ".cache" / "interlink-htcondor"
    paths = PoolPaths(tmp_path)
    assert paths.pods == tmp_path / "shared" / "pods"
    assert paths.bind_dirs() == [tmp_path / "shared", tmp_path / "images"]


def test_make_job_dir_takes_plain_names_only(tmp_path: Path) -> None:
    info = make_info(tmp_path)
    for bad in ("", ".", "..", "a/b", "../escape"):
        with pytest.raises(ValueError):
            info.make_job_dir(bad)


def test_pool_info_is_none_without_a_pool(tmp_path: Path) -> None:
    assert pool.read_info(PoolPaths(tmp_path)) is None
    state.write_info(PoolPaths(tmp_path), make_info(tmp_path))  # pid 123 is no pool init
    assert pool.read_info(PoolPaths(tmp_path)) is None


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
"""
SECURITY = """\
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
"""


def test_mirror_comes_from_apt_sources() -> None:
    assert host.pick_mirror([SECURITY, DEB822]) == "http://deb.debian.org/debian"
    one_line = "# comment\ndeb [signed-by=/k.gpg] https://ftp.example.org/debian/ bookworm main\n"
    assert host.pick_mirror([one_line]) == "https://ftp.example.org/debian"
    other = "deb https://packages.example.com/apt cloud-sdk main\n"
    assert host.pick_mirror([other, SECURITY]) == host.DEFAULT_MIRROR


def test_mirror_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(host.MIRROR_ENV, "http://mirror.example/debian/")
    assert host.debian_mirror() == "http://mirror.example/debian"


def test_requirement_closure_follows_requirements_not_extras() -> None:
    graph = {
        "dask": ["cloudpickle>=3", "toolz", 'bokeh; extra == "diagnostics"'],
        "distributed": ["dask==1.0", "Tornado>=6", 'pywin32; sys_platform == "win32"'],
        "cloudpickle": [],
        "toolz": [],
        "tornado": [],
        "bokeh": [],
        "pywin32": [],
    }
    versions = {"dask": "1.0", "distributed": "1.0", "cloudpickle": "3.1", "toolz": "1.2",
                "tornado": "6.5", "bokeh": "3.0", "pywin32": "300"}  # fmt: skip
    pins = images.requirement_closure(["Distributed", "not-installed"], graph.get, versions.get)
    assert pins == {"cloudpickle": "3.1", "dask": "1.0", "distributed": "1.0", "toolz": "1.2",
                    "tornado": "6.5"}  # fmt: skip


def test_host_pins_include_dask_and_distributed() -> None:
    import importlib.metadata as md

    pins = images.host_pins()
    for name in ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz"):
        assert pins[name] == md.version(name)


def test_embedded_settings_let_pods_bind_data_but_never_sandboxes(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    info = dataclasses.replace(make_info(tmp_path), shared_dir=shared, pods_dir=shared / "pods")
    s = settings.load(base=embedded_settings(info))

    def bind(source: Path) -> list[str]:
        annotation = {"htcondor.interlink.eu/apptainer-options": f"--bind {source}:/data:ro"}
        plan = translate(request(pod(annotations=annotation)), s)
        return spec_of(plan).apptainer.args

    assert bind(shared / "zpeak-data") == [f"--bind={shared}/zpeak-data:/data:ro"]
    for source in (shared, shared / "pods", shared / "pods" / "team-b_other_1", Path("/etc")):
        with pytest.raises(TranslationError):
            bind(source)


def test_embedded_settings_load_and_map_images(tmp_path: Path) -> None:
    info = make_info(tmp_path)
    s = settings.load(base=embedded_settings(info))
    assert s.schedd.collector == "127.0.0.1:9618"
    assert s.schedd.auth_methods == "IDTOKENS"
    assert s.schedd.token_dir == tmp_path / "tokens"
    assert (s.storage.mode, s.storage.shared_dir) == ("shared", info.pods_dir)
    assert s.server.run_as == "ilhtc"

    def target(ref: str) -> str | None:
        return next((r.target for r in s.containers.image_rules if fnmatch.fnmatch(ref, r.match)),
                    None)  # fmt: skip

    assert target("busybox:1.36") == str(info.images["busybox"])
    assert target("busybox") == str(info.images["busybox"])
    assert target("python:3.11-slim") == str(info.images["python"])
    assert target("ghcr.io/dask/dask:2024.8.0") == str(info.images["python"])
    assert target("python:3.12") is None


def test_pool_env_variables_do_not_disturb_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for k, v in make_info(tmp_path).client_env(uid=7411).items():
        monkeypatch.setenv(k, v)
    assert settings.load().schedd.collector == ""


def test_namespace_argv_passes_the_command_verbatim_after_a_fixed_script() -> None:
    from interlink_htcondor.devpool import daemons

    argv = ["condor_q", "-constraint", 'Owner == "x"; rm -rf /', "$(id)"]
    full = daemons.namespace_argv(123, argv, user="ilhtc")
    assert full[: full.index("sh")] == [
        "nsenter", "--target=123", "--mount", "--pid", "--root", "--wd",
        "setpriv", "--reuid=ilhtc", "--regid=ilhtc", "--init-groups", "--",
    ]  # fmt: skip
    script = full[full.index("sh") : full.index("sh") + 5]
    assert script == ["sh", "-c", 'cd "$1" && shift && exec "$@"', "run-in-pool", "/home/ilhtc"]
    assert full[-len(argv) :] == argv
    assert "setpriv" not in daemons.namespace_argv(123, argv, user="root")
    with pytest.raises(ValueError):
        daemons.namespace_argv(123, [])
