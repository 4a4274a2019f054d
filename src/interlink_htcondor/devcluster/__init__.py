"""A real Kubernetes control plane with interLink's virtual node in front of the personal pool,
for development, demos and CI (see ``docs/cluster.md``).

Local processes on 127.0.0.1, no container and no kubelet: etcd (Debian sid), kube-apiserver,
kube-controller-manager and kube-scheduler (built from ``k8s.io/kubernetes``), the plugin
(``interlink-htcondor serve --socket``) in front of the personal pool, interLink's API server
and its virtual kubelet (built from ``github.com/interlink-hq/interlink``). State lives in
``<pool state dir>/cluster``.

Python API::

    from interlink_htcondor import devcluster

    info = devcluster.ensure_up()     # idempotent (root); ClusterInfo once the node is Ready
    info = devcluster.read_info()     # ClusterInfo of the running cluster, or None
    info.kubeconfig                   # admin kubeconfig (system:masters)
    info.kubectl("get", "node", "-o", "json")   # CompletedProcess, output captured
    api = info.api_client()           # kubernetes.client.ApiClient for the admin
    info.node_name, info.plugin_socket, info.plugin_instance, info.interlink_socket
    info.log_path("virtual-kubelet")  # each component's log
    devcluster.restart("plugin")      # or "interlink", "vk", "apiserver", ...; waits until ready
    devcluster.health(info)           # {component: None when ready, else why not}
    devcluster.build_all()            # only build (and fetch) what is missing; {name: executable}
    devcluster.down()                 # no process left (root); data and binaries stay

    devcluster.ensure_operator(info)  # the dask-kubernetes operator and its CRDs (root)
    devcluster.read_operator()        # OperatorInfo of the running operator, or None
    devcluster.virtual_node_cluster_options(info)  # VirtualNodeCluster keywords for here

``ClusterInfo`` fields: ``state_dir``, ``kubeconfig``, ``server`` (``https://127.0.0.1:16443``),
``node_name`` (``htcondor-vk``), ``vk_namespace``/``vk_service_account`` (the virtual kubelet's
identity), ``plugin_socket``, ``plugin_instance`` (``policy.instance`` of the cluster's plugin:
its jobs carry ``InterlinkPlugin == "devcluster"``), ``interlink_socket`` (interLink's API
server, HTTP over a unix socket), ``kubelet_port``,
``ports``, ``versions`` (kubernetes, interlink, etcd), ``binaries`` (component -> executable,
``kubectl`` included), ``pids``, ``logs_dir``, ``pool_state_dir``, ``started_at``, ``timings``.
Methods: ``env()`` (``KUBECONFIG`` and ``PATH`` with this kubectl first), ``kubectl(*args)``,
``api_client()``, ``log_path(component)``.

Which cluster: ``<pool state dir>/cluster`` on the default ports, unless
``INTERLINK_HTCONDOR_CLUSTER_DIR`` and ``INTERLINK_HTCONDOR_CLUSTER_PORT_OFFSET`` choose a
private one (``default_paths()``, ``default_ports()``; every function above, the CLI and the
tests' ``kube_cluster`` follow them). A private cluster shares the default one's builds and
the pool; its plugin's jobs carry ``InterlinkPlugin == "devcluster-<digest>"``.

Components, in start order (``COMPONENTS``): ``etcd``, ``kube-apiserver``,
``kube-controller-manager``, ``kube-scheduler``, ``plugin``, ``interlink``,
``virtual-kubelet``. The dask-kubernetes operator is an add-on (``operator``: it needs the
``dask`` extra): ``cluster up`` starts it when the extra is installed, ``down`` stops it.
"""

from __future__ import annotations

from .cluster import build_all, down, ensure_up, health, read_info, restart
from .components import ALIASES, COMPONENTS
from .daskoptions import virtual_node_cluster_options
from .errors import ClusterError
from .operator import OperatorInfo, ensure_operator, read_operator, stop_operator
from .selection import CLUSTER_DIR_ENV, PORT_OFFSET_ENV, default_paths, default_ports
from .state import ClusterInfo, ClusterPaths, builtin_paths

COMPONENT_NAMES = tuple(c.name for c in COMPONENTS)

__all__ = [
    "ALIASES",
    "CLUSTER_DIR_ENV",
    "COMPONENT_NAMES",
    "PORT_OFFSET_ENV",
    "ClusterError",
    "ClusterInfo",
    "ClusterPaths",
    "OperatorInfo",
    "build_all",
    "builtin_paths",
    "default_paths",
    "default_ports",
    "down",
    "ensure_operator",
    "ensure_up",
    "health",
    "read_info",
    "read_operator",
    "restart",
    "stop_operator",
    "virtual_node_cluster_options",
]
