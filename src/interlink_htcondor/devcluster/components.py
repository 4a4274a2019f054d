"""The cluster's processes: how each starts, how it is recognised, and when it is ready.

In start order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the plugin
(``interlink-htcondor serve --socket``), interLink's API server, interLink's virtual kubelet.
Every one listens on 127.0.0.1 or on a unix socket in the state directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import config, probes, processes
from .pki import PkiFiles
from .processes import Launch
from .state import ClusterPaths

# Set for every process of a cluster: its state directory (how `down` recognises them).
MARKER_ENV = "INTERLINK_HTCONDOR_CLUSTER"
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}


@dataclass(frozen=True)
class Context:
    """What the component definitions need: the layout, the executables, the pool."""

    paths: ClusterPaths
    binaries: dict[str, Path]  # etcd, kube-apiserver, ..., interlink, virtual-kubelet
    pool_state_dir: Path
    ports: config.Ports = config.PORTS
    plugin_instance: str = config.PLUGIN_INSTANCE

    @property
    def pki(self) -> PkiFiles:
        return PkiFiles(self.paths.pki)

    def config_file(self, name: str) -> Path:
        return self.paths.config / name


@dataclass(frozen=True)
class Component:
    name: str
    launch: Callable[[Context], Launch]
    owns: Callable[[Context, int], bool]  # is this process ours?
    ready: Callable[[Context], str | None]  # None when ready, else why not
    start_timeout: float = 60.0
    stop_grace: float = 15.0  # SIGTERM, then SIGKILL after this long
    # Before a start (no process of it runs then): clear what a killed one left.
    prepare: Callable[[Context], None] | None = None


def _launch(ctx: Context, name: str, argv: list[str], env: dict[str, str] | None = None) -> Launch:
    return Launch(
        name=name,
        argv=argv,
        env={**BASE_ENV, MARKER_ENV: str(ctx.paths.root), **(env or {})},
        log=ctx.paths.log(name),
        pid_file=ctx.paths.pid_file(name),
        cwd=ctx.paths.run,
    )


def _runs(binary: str) -> Callable[[Context, int], bool]:
    """Our process: this executable, started for this cluster (several clusters share the
    executables)."""

    def owns(ctx: Context, pid: int) -> bool:
        argv = processes.cmdline(pid)
        if not argv or argv[0] != str(ctx.binaries[binary]):
            return False
        env = processes.environ(pid)
        # A user other than root cannot read root's processes' environment: trust the rest
        # (read-only commands such as `cluster env`).
        return env.get(MARKER_ENV) == str(ctx.paths.root) if env is not None else os.geteuid() != 0

    return owns


def _kube_common(ctx: Context, who: str, port: int) -> list[str]:
    kubeconfig = str(ctx.paths.kubeconfig(who))
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={config.HOST}",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--v=1",
    ]


# -- etcd --------------------------------------------------------------------------------------


def _etcd(ctx: Context) -> Launch:
    p, pki = ctx.ports, ctx.pki
    client = f"https://{config.HOST}:{p.etcd_client}"
    peer = f"https://{config.HOST}:{p.etcd_peer}"
    return _launch(
        ctx,
        "etcd",
        [
            str(ctx.binaries["etcd"]),
            "--name=devcluster",
            f"--data-dir={ctx.paths.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            "--initial-cluster-state=new",
            f"--cert-file={pki.cert('etcd-server')}",
            f"--key-file={pki.key('etcd-server')}",
            f"--trusted-ca-file={pki.ca_cert}",
            "--client-cert-auth=true",
            f"--peer-cert-file={pki.cert('etcd-server')}",
            f"--peer-key-file={pki.key('etcd-server')}",
            f"--peer-trusted-ca-file={pki.ca_cert}",
            "--peer-client-cert-auth=true",
            "--log-level=warn",
        ],
    )


def _etcd_ready(ctx: Context) -> str | None:
    pki = ctx.pki
    tls = probes.tls_context(
        pki.ca_cert, pki.cert("apiserver-etcd-client"), pki.key("apiserver-etcd-client")
    )
    url = f"https://{config.HOST}:{ctx.ports.etcd_client}/health"
    return probes.https_ok(url, tls, expect='"health":"true"')


# -- kube-apiserver ----------------------------------------------------------------------------


def _apiserver(ctx: Context) -> Launch:
    p, pki = ctx.ports, ctx.pki
    return _launch(
        ctx,
        "kube-apiserver",
        [
            str(ctx.binaries["kube-apiserver"]),
            f"--advertise-address={config.HOST}",
            f"--bind-address={config.HOST}",
            f"--secure-port={p.apiserver}",
            f"--etcd-servers=https://{config.HOST}:{p.etcd_client}",
            f"--etcd-cafile={pki.ca_cert}",
            f"--etcd-certfile={pki.cert('apiserver-etcd-client')}",
            f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={config.SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # kubectl logs: the API server calls the virtual kubelet's API at the node's
            # InternalIP (127.0.0.1) with this client certificate.
            f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            # The `kubernetes` Service's endpoints may not be a loopback address.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ],
    )


def _apiserver_ready(ctx: Context) -> str | None:
    pki = ctx.pki
    tls = probes.tls_context(pki.ca_cert, pki.cert("admin"), pki.key("admin"))
    return probes.https_ok(f"{config.apiserver_url(ctx.ports)}/readyz", tls, expect="ok")


# -- controller manager, scheduler -------------------------------------------------------------


def _controller_manager(ctx: Context) -> Launch:
    pki = ctx.pki
    return _launch(
        ctx,
        "kube-controller-manager",
        [
            str(ctx.binaries["kube-controller-manager"]),
            *_kube_common(ctx, "controller-manager", ctx.ports.controller_manager),
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.key('ca')}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={config.SERVICE_CIDR}",
            "--cluster-name=interlink-htcondor-dev",
        ],
    )


def _scheduler(ctx: Context) -> Launch:
    return _launch(
        ctx,
        "kube-scheduler",
        [
            str(ctx.binaries["kube-scheduler"]),
            *_kube_common(ctx, "scheduler", ctx.ports.scheduler),
        ],
    )


def _healthz(port_of: Callable[[config.Ports], int]) -> Callable[[Context], str | None]:
    def ready(ctx: Context) -> str | None:
        url = f"https://{config.HOST}:{port_of(ctx.ports)}/healthz"
        return probes.https_ok(url, probes.tls_context(None), expect="ok")

    return ready


# -- the plugin --------------------------------------------------------------------------------


def _plugin(ctx: Context) -> Launch:
    # No --config: the running pool's embedded default. Started as root, it creates the
    # socket and drops to the pool's job user.
    return _launch(
        ctx,
        "plugin",
        [
            sys.executable,
            "-m",
            "interlink_htcondor",
            "serve",
            "--socket",
            str(ctx.paths.plugin_socket),
        ],
        {
            "INTERLINK_HTCONDOR_POOL_DIR": str(ctx.pool_state_dir),
            "INTERLINK_HTCONDOR_POLICY__INSTANCE": ctx.plugin_instance,
            "INTERLINK_HTCONDOR_POLICY__MAX_PODS": str(config.MAX_PODS),
            **{k: v for k, v in os.environ.items() if k in ("VIRTUAL_ENV", "PYTHONPATH")},
        },
    )


def _plugin_owns(ctx: Context, pid: int) -> bool:
    argv = processes.cmdline(pid)
    sock = str(ctx.paths.plugin_socket)
    return "serve" in argv and any(
        a == "--socket" and i + 1 < len(argv) and argv[i + 1] == sock for i, a in enumerate(argv)
    )


def _plugin_ready(ctx: Context) -> str | None:
    return probes.plugin_ready(ctx.paths.plugin_socket)


# -- interLink ---------------------------------------------------------------------------------


def _interlink(ctx: Context) -> Launch:
    # Its flag -interlinkconfigpath is defined after main's flag.Parse, which then refuses
    # it: the environment variable it also reads.
    return _launch(
        ctx,
        "interlink",
        [str(ctx.binaries["interlink"])],
        {"INTERLINKCONFIGPATH": str(ctx.config_file("interlink.yaml"))},
    )


def _interlink_prepare(ctx: Context) -> None:
    # It removes its socket on SIGTERM only; listening fails on a leftover one.
    ctx.paths.interlink_socket.unlink(missing_ok=True)


def _interlink_ready(ctx: Context) -> str | None:
    # The ping goes through to the plugin: 200 only when the plugin answers too.
    return probes.unix_ok(ctx.paths.interlink_socket, "POST", "/pinglink")


def _virtual_kubelet(ctx: Context) -> Launch:
    return _launch(
        ctx,
        "virtual-kubelet",
        [
            str(ctx.binaries["virtual-kubelet"]),
            f"-configpath={ctx.config_file('virtual-kubelet.yaml')}",
            f"-nodename={config.NODE_NAME}",
        ],
        {
            "KUBECONFIG": str(ctx.paths.kubeconfig("virtual-kubelet")),
            # Its kubelet API (logs) on loopback, and the node's InternalIP.
            "KUBELET_URL": config.HOST,
            "KUBELET_PORT": str(ctx.ports.kubelet),
            "POD_IP": config.HOST,
        },
    )


def _kubelet_listening(ctx: Context) -> str | None:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect((config.HOST, ctx.ports.kubelet))
        except OSError as e:
            return f"kubelet API {config.HOST}:{ctx.ports.kubelet}: {e.strerror or e}"
    return None


COMPONENTS: tuple[Component, ...] = (
    Component("etcd", _etcd, _runs("etcd"), _etcd_ready),
    Component(
        "kube-apiserver",
        _apiserver,
        _runs("kube-apiserver"),
        _apiserver_ready,
        start_timeout=120,
        # It stops serving at once on SIGTERM but its process lingers (about 15 s here).
        stop_grace=5,
    ),
    Component(
        "kube-controller-manager",
        _controller_manager,
        _runs("kube-controller-manager"),
        _healthz(lambda p: p.controller_manager),
    ),
    Component(
        "kube-scheduler",
        _scheduler,
        _runs("kube-scheduler"),
        _healthz(lambda p: p.scheduler),
    ),
    Component("plugin", _plugin, _plugin_owns, _plugin_ready, 90),
    Component(
        "interlink", _interlink, _runs("interlink"), _interlink_ready, prepare=_interlink_prepare
    ),
    Component(
        "virtual-kubelet",
        _virtual_kubelet,
        _runs("virtual-kubelet"),
        _kubelet_listening,
    ),
)

BY_NAME = {c.name: c for c in COMPONENTS}
ALIASES = {
    "vk": "virtual-kubelet",
    "apiserver": "kube-apiserver",
    "controller-manager": "kube-controller-manager",
    "scheduler": "kube-scheduler",
    "api": "interlink",
}


def named(name: str) -> Component:
    """A component by name or alias (``vk``, ``apiserver``, ``scheduler``...)."""
    key = ALIASES.get(name, name)
    if key not in BY_NAME:
        choices = ", ".join([*BY_NAME, *ALIASES])
        raise KeyError(f"no component {name!r}; choose one of {choices}")
    return BY_NAME[key]
