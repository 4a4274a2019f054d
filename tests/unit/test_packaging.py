"""The systemd unit, its example files and the Dockerfile agree with the code and each other.

Neither can run here (no systemd as PID 1, no Docker engine), so what can be checked
statically is: configs load with the real settings model, paths line up, hardening is on.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from interlink_htcondor import settings
from interlink_htcondor.cli import config_reference

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "packaging" / "systemd"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(settings.ENV_PREFIX):
            monkeypatch.delenv(key)


def unit() -> dict[str, dict[str, list[str]]]:
    """The unit file as section -> key -> values (keys may repeat in units)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in (SYSTEMD / "interlink-htcondor.service").read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out[section] = {}
        elif line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[section].setdefault(key, []).append(value)
    return out


def test_unit_is_hardened_and_non_root() -> None:
    service = unit()["Service"]
    assert service["User"][0] not in ("", "root", "0")
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]


def test_unit_paths_match_its_config() -> None:
    service = unit()["Service"]
    argv = shlex.split(service["ExecStart"][0])
    assert argv[1:3] == ["serve", "--config"]
    assert argv[3] == "/etc/interlink-htcondor/config.yaml"
    cfg = settings.load(SYSTEMD / "config.yaml")
    # The socket lives in the unit's RuntimeDirectory, the sandboxes in a writable path.
    assert cfg.server.socket is not None
    assert cfg.server.socket.parent == Path("/run") / service["RuntimeDirectory"][0]
    writable = [Path("/var/lib") / service["StateDirectory"][0]]
    writable += [Path(p) for v in service["ReadWritePaths"] for p in v.split()]
    assert any(cfg.storage.shared_dir.is_relative_to(w) for w in writable)
    assert service["EnvironmentFile"] == ["-/etc/interlink-htcondor/interlink-htcondor.env"]


def test_env_example_names_real_settings() -> None:
    known = {k.env for s in config_reference.sections() for k in s.keys if k.env}
    names = re.findall(
        r"^#?(INTERLINK_HTCONDOR_\w+)=", (SYSTEMD / "interlink-htcondor.env").read_text(), re.M
    )
    assert names
    assert set(names) <= known


def test_dockerfile_runs_non_root_with_a_working_default_config(tmp_path: Path) -> None:
    text = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\S+)$", text, re.M)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    # The built-in config file loads, and its socket directory is created for the user.
    (printed,) = re.findall(r"printf '([^']*)'", text)
    config = tmp_path / "config.yaml"
    config.write_text(printed.encode().decode("unicode_escape"))
    cfg = settings.load(config)
    assert cfg.server.socket is not None
    assert f"-o {uid} " in text and str(cfg.server.socket.parent) in text
    assert 'CMD ["interlink-htcondor", "healthcheck"' in text.split("HEALTHCHECK", 1)[1]
    assert 'ENTRYPOINT ["interlink-htcondor"]' in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"*", "!pyproject.toml", "!README.md", "!constraints.txt", "!src/"} <= set(ignore)
    # The base install only (no extras), at the locked versions.
    (install,) = re.findall(r"pip install (.*?) \\$", text, re.M)
    assert install == "-c /build/constraints.txt /build"
