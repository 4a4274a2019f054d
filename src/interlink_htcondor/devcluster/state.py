"""Where the cluster keeps its files, and the facts of a running cluster (``ClusterInfo``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..devpool.state import exclusive, replace_file
from ..devpool.state import state_dir as _pool_state_dir

INFO_VERSION = 2


@dataclass(frozen=True)
class ClusterPaths:
    """Layout of ``<pool state>/cluster``. ``bin_root`` puts the binary cache elsewhere (a
    second cluster, e.g. in a test, shares the first one's builds)."""

    root: Path
    bin_root: Path | None = None

    @property
    def bin(self) -> Path:
        return self.bin_root if self.bin_root is not None else self.root / "bin"

    def bin_dir(self, component: str, version: str) -> Path:
        """Built or fetched binaries of one component at one version."""
        return self.bin / f"{component}-{version}"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfigs(self) -> Path:
        return self.root / "kubeconfig"

    def kubeconfig(self, who: str) -> Path:
        return self.kubeconfigs / f"{who}.kubeconfig"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd-data"

    @property
    def interlink_data(self) -> Path:
        return self.root / "interlink-data"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def socket_dir(self) -> Path:
        return self.run / "plugin"

    @property
    def plugin_socket(self) -> Path:
        return self.socket_dir / "plugin.sock"

    @property
    def interlink_socket(self) -> Path:
        """interLink's API server (the virtual kubelet's side)."""
        return self.run / "interlink.sock"

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    @property
    def info_file(self) -> Path:
        return self.run / "cluster.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"


def builtin_paths() -> ClusterPaths:
    """The default cluster's layout: ``<pool state dir>/cluster``
    (``$INTERLINK_HTCONDOR_POOL_DIR/cluster``). ``selection.default_paths`` may choose
    another."""
    return ClusterPaths(_pool_state_dir() / "cluster")


def locked(paths: ClusterPaths) -> contextlib.AbstractContextManager[None]:
    """Serialise ``up``, ``down`` and restarts between processes."""
    return exclusive(paths.lock_file)


@dataclass(frozen=True)
class ClusterInfo:
    """Facts of a running cluster, as ``cluster up`` recorded them."""

    state_dir: Path
    kubeconfig: Path  # the admin's (system:masters)
    server: str  # https://127.0.0.1:PORT
    node_name: str
    vk_namespace: str
    vk_service_account: str
    plugin_socket: Path
    plugin_instance: str
    interlink_socket: Path
    kubelet_port: int
    ports: dict[str, int]
    versions: dict[str, str]
    binaries: dict[str, Path]  # component -> executable
    pids: dict[str, int]
    logs_dir: Path
    pool_state_dir: Path
    started_at: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubectl_path(self) -> Path:
        return self.binaries["kubectl"]

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def env(self) -> dict[str, str]:
        """What ``cluster env`` prints: ``KUBECONFIG`` and a ``PATH`` with this kubectl first."""
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.kubectl_path.parent}:{path}",
        }

    def kubectl(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float | None = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run this cluster's kubectl as the admin; output captured."""
        return subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=check,
        )

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin (a new one per call)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), client_configuration=cfg
        )
        return client.ApiClient(cfg)

    # -- persistence -------------------------------------------------------------------------

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["version"] = INFO_VERSION
        return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterInfo:
        data = json.loads(text)
        if data.pop("version", None) != INFO_VERSION:
            raise ValueError("cluster info written by another version")
        for key in (
            "state_dir",
            "kubeconfig",
            "plugin_socket",
            "interlink_socket",
            "logs_dir",
            "pool_state_dir",
        ):
            data[key] = Path(data[key])
        data["binaries"] = {k: Path(v) for k, v in data["binaries"].items()}
        return cls(**data)


def write_info(paths: ClusterPaths, info: ClusterInfo) -> None:
    replace_file(paths.info_file, info.to_json(), 0o644)


def load_info(paths: ClusterPaths) -> ClusterInfo | None:
    try:
        return ClusterInfo.from_json(paths.info_file.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_info(paths: ClusterPaths, components: Sequence[str] = ()) -> None:
    paths.info_file.unlink(missing_ok=True)
    for c in components:
        paths.pid_file(c).unlink(missing_ok=True)
