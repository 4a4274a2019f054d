"""Where the hub keeps its files (under the personal pool's state directory), and the facts
of a running hub (``HubInfo``)."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interlink_htcondor.devpool.state import replace_file, state_dir

INFO_VERSION = 1
DEFAULT_USER = "physicist"


def default_root() -> Path:
    """``<pool state dir>/hub``."""
    return state_dir() / "hub"


@dataclass(frozen=True)
class HubPorts:
    """Loopback ports: the proxy's public one (the hub's URL), the proxy's API, the hub
    itself, and the plugin the hub's users send workers to."""

    public: int = 8400
    proxy_api: int = 8401
    hub: int = 8402
    plugin: int = 8403

    def __post_init__(self) -> None:
        ports = [self.public, self.proxy_api, self.hub, self.plugin]
        if any(not 1 <= p <= 65535 for p in ports):
            raise ValueError(f"ports must be within 1..65535: {ports}")
        if len(set(ports)) != len(ports):
            raise ValueError(f"the hub's four ports must differ: {ports}")


@dataclass(frozen=True)
class HubPaths:
    """Layout of a hub's directory. ``node_prefix`` (configurable-http-proxy from npm) is a
    cache shared by every hub of this pool."""

    root: Path
    node_prefix: Path = field(default_factory=lambda: default_root() / "node")

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def dask_config(self) -> Path:
        """The site's Dask configuration directory (``DASK_ROOT_CONFIG`` of the users'
        servers, like ``/etc/dask`` at a facility)."""
        return self.etc / "dask"

    @property
    def jupyter_config(self) -> Path:
        """The site's Jupyter configuration directory (``JUPYTER_CONFIG_PATH``)."""
        return self.etc / "jupyter"

    @property
    def lab_settings(self) -> Path:
        """The site's JupyterLab settings directory (``overrides.json``)."""
        return self.etc / "lab-settings"

    @property
    def hub_config(self) -> Path:
        return self.etc / "jupyterhub_config.py"

    @property
    def hub_settings(self) -> Path:
        return self.etc / "hub-settings.json"

    @property
    def users(self) -> Path:
        return self.root / "users"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def info_file(self) -> Path:
        return self.run / "hub.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def default_paths() -> HubPaths:
    return HubPaths(default_root())


def password(paths: HubPaths) -> str:
    """The test authenticator's shared password: made once, kept 0600."""
    try:
        text = paths.password_file.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    paths.root.mkdir(parents=True, exist_ok=True)
    text = secrets.token_urlsafe(12)
    tmp = paths.password_file.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch(mode=0o600)
    tmp.write_text(text + "\n")
    tmp.replace(paths.password_file)
    return text


@dataclass(frozen=True)
class HubInfo:
    """Facts of a running hub, as ``hub up`` recorded them."""

    root: Path
    url: str
    user: str
    password_file: Path
    plugin_url: str
    plugin_instance: str
    hub_pid: int
    plugin_pid: int
    python: str
    ports: HubPorts
    started_at: float

    def env(self) -> dict[str, str]:
        """What ``hub env`` prints."""
        return {
            "INTERLINK_HTCONDOR_HUB_URL": self.url,
            "INTERLINK_HTCONDOR_HUB_USER": self.user,
            "INTERLINK_HTCONDOR_HUB_PASSWORD_FILE": str(self.password_file),
            "INTERLINK_HTCONDOR_PLUGIN_URL": self.plugin_url,
        }

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["version"] = INFO_VERSION
        return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HubInfo:
        data = json.loads(text)
        if data.pop("version", None) != INFO_VERSION:
            raise ValueError("hub info written by another version")
        for key in ("root", "password_file"):
            data[key] = Path(data[key])
        data["ports"] = HubPorts(**data["ports"])
        return cls(**data)


def write_info(paths: HubPaths, info: HubInfo) -> None:
    replace_file(paths.info_file, info.to_json())


def load_info(paths: HubPaths) -> HubInfo | None:
    try:
        return HubInfo.from_json(paths.info_file.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
