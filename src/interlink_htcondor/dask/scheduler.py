"""The scheduler part of a ``DaskCluster`` resource, in one of two places.

**In Kubernetes** (the production layout): the operator's own scheduler pod on an ordinary
node, behind a Service (NodePort, LoadBalancer or ClusterIP) whose address the grid slots
can reach. Only the command changes: distributed installs the ``dask`` command alone
nowadays, while the operator's helper still names the ``dask-scheduler`` script.

**On the virtual node** (the development cluster, which has no kubelet to run it
anywhere else): the pod tolerates the virtual node's taint and selects it like the workers,
so the scheduler is an HTCondor job too. A job's container shares its host's network
(Apptainer), and nothing forwards a Service's ports to it (no kube-proxy, no pod network),
so the scheduler listens itself on the address the workers are given,
``tcp://<host>:<port>``, and the Service's ports, node ports and container ports are those
port numbers: however a client derives the address (the node's address and the NodePort,
or the Service's port), it lands on the scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from dask_kubernetes.operator import make_scheduler_spec

from interlink_htcondor.dask.template import WorkerTemplate

Json = dict[str, Any]

SCHEDULER_COMMAND = ("dask", "scheduler")
COMM_PORT = "tcp-comm"
DASHBOARD_PORT = "http-dashboard"
NODE_PORTS = range(30000, 32768)  # the API server's default --service-node-port-range
SCHEDULER_CPU = "1"


def scheduler_spec(
    cluster_name: str,
    *,
    image: str,
    service_type: str = "NodePort",
    node_port: int | None = None,
    dashboard_node_port: int | None = None,
    resources: Mapping[str, Mapping[str, str]] | None = None,
) -> Json:
    """The operator's scheduler spec (``make_scheduler_spec``) running ``dask scheduler``,
    with its NodePorts pinned when given (so that the address is known before the Service
    exists)."""
    spec: Json = make_scheduler_spec(
        cluster_name=cluster_name,
        image=image,
        resources=dict(resources) if resources else None,
        scheduler_service_type=service_type,
    )
    container = spec["spec"]["containers"][0]
    for key in ("env", "resources"):  # the operator's helper writes explicit nulls
        if container.get(key) is None:
            container.pop(key, None)
    args = list(container["args"])
    if args[:1] == ["dask-scheduler"]:
        args = [*SCHEDULER_COMMAND, *args[1:]]
    container["args"] = args
    pins = {COMM_PORT: node_port, DASHBOARD_PORT: dashboard_node_port}
    if any(p is not None for p in pins.values()):
        if service_type not in ("NodePort", "LoadBalancer"):
            raise ValueError("scheduler_node_port needs a NodePort or LoadBalancer Service")
        for port in spec["service"]["ports"]:
            pinned = pins.get(port["name"])
            if pinned is not None:
                _check_node_port(pinned)
                port["nodePort"] = pinned
    return spec


def _check_node_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or port not in NODE_PORTS:
        raise ValueError(
            f"a NodePort must be a port in {NODE_PORTS.start}-{NODE_PORTS.stop - 1}, not {port!r}"
        )


def listen_address(scheduler_address: str | None) -> tuple[str, int]:
    """``(host, port)`` of a ``tcp://host:port`` address, which a scheduler on the virtual
    node listens on."""
    parts = urlsplit(scheduler_address or "")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ValueError(
            "a scheduler on the virtual node listens where the workers connect: give "
            f"scheduler_address='tcp://<host>:<port>', not {scheduler_address!r}"
        )
    return parts.hostname, port


def on_virtual_node(
    scheduler: Json,
    template: WorkerTemplate,
    *,
    resources: Mapping[str, Mapping[str, str]] | None = None,
) -> Json:
    """``scheduler`` (from ``scheduler_spec``) moved onto the virtual node, as an HTCondor
    job listening on the template's ``scheduler_address``.

    The Service must be a NodePort whose ``tcp-comm`` node port is that address's port and
    whose dashboard node port is pinned too: they are the ports the scheduler listens on.
    Its pod gets the workers' scheduling (toleration and node selector) and annotations
    (accounting group, requirements, Apptainer options), one CPU and the workers' memory
    unless ``resources`` says otherwise.
    """
    host, port = listen_address(template.scheduler_address)
    service = scheduler["service"]
    node_ports = {p["name"]: p.get("nodePort") for p in service["ports"]}
    if service.get("type") != "NodePort" or node_ports.get(COMM_PORT) != port:
        raise ValueError(
            "a scheduler on the virtual node needs a NodePort Service whose node port is "
            f"the port of scheduler_address ({port}): pass scheduler_node_port={port}"
        )
    dashboard = node_ports.get(DASHBOARD_PORT)
    if dashboard is None:
        raise ValueError("a scheduler on the virtual node needs dashboard_node_port too")
    for p in service["ports"]:
        p["port"] = p["nodePort"]  # targetPort stays the named container port: the same
    pod = scheduler["spec"]
    container = pod["containers"][0]
    container["args"] = [
        *SCHEDULER_COMMAND,
        "--host",
        host,
        "--port",
        str(port),
        "--dashboard-address",
        f"{host}:{dashboard}",
    ]
    container["ports"] = [
        {"name": COMM_PORT, "containerPort": port, "protocol": "TCP"},
        {"name": DASHBOARD_PORT, "containerPort": dashboard, "protocol": "TCP"},
    ]
    quantity = {"cpu": SCHEDULER_CPU, "memory": template.memory}
    container["resources"] = (
        {k: dict(v) for k, v in resources.items()}
        if resources
        else {"requests": dict(quantity), "limits": dict(quantity)}
    )
    placement = template.pod_spec()
    pod["nodeSelector"] = placement["nodeSelector"]
    pod["tolerations"] = placement["tolerations"]
    annotations = template.pod_annotations()
    if annotations:
        scheduler.setdefault("metadata", {})["annotations"] = annotations
    return scheduler
