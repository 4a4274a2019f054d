"""The dask-kubernetes operator of the development cluster: its CRDs, from the installed
``dask_kubernetes`` package's own chart, and the operator itself, a kopf process on this
machine talking to the API server with the admin kubeconfig (like the cluster's other
controllers: with no kubelet, the operator's own Deployment could not run here).

It is an add-on of the cluster rather than one of its ``COMPONENTS``: it needs the ``dask``
extra, and a cluster started without it keeps working. ``ensure_operator()`` installs the
CRDs and starts the process (idempotent, like ``ensure_up()``); ``cluster down`` stops it
with the rest. Its pid file, log and facts live in the cluster's ``run/`` and ``logs/``:
``dask-operator.pid``, ``dask-operator.log``, ``dask-operator.json``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from . import config, processes
from .components import BASE_ENV
from .errors import ClusterError
from .selection import default_paths
from .state import ClusterInfo, ClusterPaths, locked

NAME = "dask-operator"
# The cluster's add-ons carry this marker (the cluster's root), not the components' own:
# "one process per component" stays true of the components.
ADDON_MARKER_ENV = "INTERLINK_HTCONDOR_CLUSTER_ADDON"
CONTROLLER_MODULE = "dask_kubernetes.operator.controller"
# The CRDs as the operator's Helm chart installs them (the chart's `crds/`).
CRD_DIR = ("deployment", "helm", "dask-kubernetes-operator", "crds")
CRD_GROUP = "kubernetes.dask.org"
START_TIMEOUT = 60.0
STOP_GRACE = 10.0


@dataclass(frozen=True)
class OperatorInfo:
    """Facts of the running operator."""

    pid: int
    liveness_url: str  # kopf's liveness endpoint on loopback: 200 once its handlers run
    log: Path
    crds: list[str]  # the CustomResourceDefinitions it serves
    versions: dict[str, str]  # dask-kubernetes, kopf
    python: str  # the interpreter it runs on

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> OperatorInfo:
        data = json.loads(text)
        data["log"] = Path(data["log"])
        return cls(**data)


def info_file(paths: ClusterPaths) -> Path:
    return paths.run / f"{NAME}.json"


def package_versions() -> dict[str, str]:
    """Versions of the installed operator and its framework; a ClusterError naming the
    extra when they are missing."""
    try:
        return {p: metadata.version(p) for p in ("dask-kubernetes", "kopf")}
    except metadata.PackageNotFoundError as e:
        raise ClusterError(
            f"the Dask operator needs {e.name}: pip install 'interlink-htcondor[dask]'"
        ) from None


def crd_manifests() -> list[dict[str, Any]]:
    """The operator's CustomResourceDefinitions, from the installed package."""
    import yaml

    folder = resources.files("dask_kubernetes.operator").joinpath(*CRD_DIR)
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(entry.read_text()) if d]
    if not docs or any(d.get("kind") != "CustomResourceDefinition" for d in docs):
        raise ClusterError(f"no CustomResourceDefinitions found in {folder}")
    return docs


def argv(liveness_url: str) -> list[str]:
    """The operator's command line: the operator image's entry point, run by this Python."""
    return [
        sys.executable,
        "-m",
        "kopf",
        "run",
        "--standalone",  # one operator per cluster: no peering objects
        "--all-namespaces",
        f"--liveness={liveness_url}",
        "-m",
        CONTROLLER_MODULE,
    ]


def owns(paths: ClusterPaths, pid: int) -> bool:
    """An operator process of this cluster."""
    cmd = processes.cmdline(pid)
    if CONTROLLER_MODULE not in cmd or "kopf" not in cmd:
        return False
    env = processes.environ(pid)
    return env is not None and env.get(ADDON_MARKER_ENV) == str(paths.root)


def _liveness(url: str) -> str | None:
    import httpx

    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError as e:
        return f"{url}: {e.__class__.__name__}: {e}"
    return None if r.status_code == 200 else f"{url}: HTTP {r.status_code}"


def read_operator(paths: ClusterPaths | None = None) -> OperatorInfo | None:
    """The running operator's facts, or None when it does not run (or is not ready)."""
    paths = paths or default_paths()
    try:
        op = OperatorInfo.from_json(info_file(paths).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (processes.alive(op.pid) and owns(paths, op.pid)):
        return None
    return op if _liveness(op.liveness_url) is None else None


def ensure_operator(
    info: ClusterInfo, *, timeout: float = START_TIMEOUT, say: Any = None
) -> OperatorInfo:
    """Install the operator's CRDs and start the operator, unless it runs already; return
    its facts once kopf reports it alive. Needs root (like ``cluster up``) to start it."""
    paths = ClusterPaths(info.state_dir)
    running = read_operator(paths)
    if running is not None:
        return running
    if os.geteuid() != 0:
        raise ClusterError("starting the Dask operator needs root (like cluster up)")
    report = say or (lambda _m: None)
    versions = package_versions()
    with locked(paths):
        running = read_operator(paths)
        if running is not None:
            return running
        crds = install_crds(info)
        stop_locked(paths)  # a process left without its info file, or not answering
        port = _free_port()
        url = f"http://{config.HOST}:{port}/healthz"
        report(f"starting the Dask operator (dask-kubernetes {versions['dask-kubernetes']})")
        pid = processes.start(
            processes.Launch(
                name=NAME,
                argv=argv(url),
                env={
                    **BASE_ENV,
                    ADDON_MARKER_ENV: str(paths.root),
                    "KUBECONFIG": str(info.kubeconfig),
                    **{k: v for k, v in os.environ.items() if k in ("VIRTUAL_ENV", "PYTHONPATH")},
                },
                log=paths.log(NAME),
                pid_file=paths.pid_file(NAME),
                cwd=paths.run,
            )
        )
        deadline = time.monotonic() + timeout
        why = _liveness(url)
        while why is not None:
            if not processes.alive(pid):
                raise ClusterError(
                    f"the Dask operator exited during start; last lines of {paths.log(NAME)}:\n"
                    + processes.tail(paths.log(NAME), 20)
                )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the Dask operator not alive in {timeout:.0f} s ({why}); last lines of "
                    f"{paths.log(NAME)}:\n" + processes.tail(paths.log(NAME), 20)
                )
            time.sleep(0.25)
            why = _liveness(url)
        op = OperatorInfo(
            pid=pid,
            liveness_url=url,
            log=paths.log(NAME),
            crds=crds,
            versions=versions,
            python=sys.executable,
        )
        tmp = info_file(paths).with_suffix(".tmp")
        tmp.write_text(op.to_json())
        tmp.replace(info_file(paths))
        return op


def install_crds(info: ClusterInfo, timeout: float = 60) -> list[str]:
    """Server-side apply of the operator's CRDs; their names once the API server serves
    them (``Established``)."""
    import yaml

    docs = crd_manifests()
    names = [str(d["metadata"]["name"]) for d in docs]
    body = yaml.safe_dump_all(docs, sort_keys=False).encode()
    r = info.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=interlink-htcondor-cluster",
        "-f",
        "-",
        input=body,
    )
    if r.returncode != 0:
        raise ClusterError(f"installing the Dask CRDs failed: {r.stderr.decode().strip()}")
    r = info.kubectl(
        "wait",
        "--for=condition=Established",
        f"--timeout={int(timeout)}s",
        *[f"crd/{n}" for n in names],
        timeout=timeout + 10,
    )
    if r.returncode != 0:
        raise ClusterError(f"the Dask CRDs are not served: {r.stderr.decode().strip()}")
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((config.HOST, 0))
        return int(s.getsockname()[1])


def stop_operator(paths: ClusterPaths | None = None) -> bool:
    """Stop the cluster's operator (root); False when none ran. Its CRDs stay."""
    paths = paths or default_paths()
    with locked(paths):
        return stop_locked(paths)


def stop_locked(paths: ClusterPaths) -> bool:
    """Stop every operator process of this cluster (the caller holds the lock)."""

    def mine(pid: int) -> bool:
        return owns(paths, pid)

    found = set(processes.find(mine))
    pid = processes.read_pid(paths.pid_file(NAME))
    if pid > 0 and processes.alive(pid) and mine(pid):
        found.add(pid)
    for p in sorted(found):
        processes.stop(p, mine, STOP_GRACE)
    info_file(paths).unlink(missing_ok=True)
    paths.pid_file(NAME).unlink(missing_ok=True)
    return bool(found)
