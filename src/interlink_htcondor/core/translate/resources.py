"""Kubernetes resource quantities -> HTCondor requests (request_cpus/memory/disk/gpus).

Quantities are parsed here (``parse_quantity``, Kubernetes' grammar and suffixes, checked
against ``kubernetes.utils.parse_quantity`` by the tests), so that the plugin does not
need the Kubernetes client for it. Per container, the job uses
the request, or the limit when only the limit is set (as Kubernetes defaults it); the
memory limit is kept for the job wrapper to enforce. The pod's effective request is the
Kubernetes rule: max(sum over app containers, max over init containers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from interlink_htcondor.core.models import Container
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.settings import ResourceSettings

CPU = "cpu"
MEMORY = "memory"
DISK = "ephemeral-storage"
# GPU resource name -> the apptainer option that exposes that vendor's devices.
GPU_RESOURCES: dict[str, str] = {"nvidia.com/gpu": "--nv", "amd.com/gpu": "--rocm"}

MIB = 1024 * 1024
KIB = 1024
# Kubernetes' own quantity grammar: a signed decimal and one suffix or exponent.
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_DECIMAL_EXPONENT = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_EXPONENT = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
# Larger than any real machine by far; beyond it a value is a mistake, not a request.
_ABSURD = Decimal(2) ** 62


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (``"500m"``, ``"1.5Gi"``, ``"2e3"``) as a number; ValueError
    when ``text`` is not one."""
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    suffix = m.group(3) or ""
    if suffix in _BINARY_EXPONENT:
        return Decimal(text[:-2]) * Decimal(2) ** _BINARY_EXPONENT[suffix]
    if suffix in _DECIMAL_EXPONENT:
        return Decimal(text[:-1]) * Decimal(10) ** _DECIMAL_EXPONENT[suffix]
    return Decimal(text)  # no suffix, or an exponent (``2e3``) that Decimal reads itself


def parse(value: str, where: str) -> Decimal:
    """Parse one quantity; ``where`` names it in errors (container and field)."""
    text = str(value)
    try:
        q = parse_quantity(text)
    except (ValueError, InvalidOperation) as e:
        raise TranslationError(f"{where}: {value!r} is not a Kubernetes quantity") from e
    if not q.is_finite():
        raise TranslationError(f"{where}: {value!r} is not a finite quantity")
    if q < 0:
        raise TranslationError(f"{where}: {value!r} is negative")
    if q > _ABSURD:
        raise TranslationError(f"{where}: {value!r} is absurdly large")
    return q


@dataclass(frozen=True)
class ContainerResources:
    """What one container asks for (requests, defaulted from limits) and its limits."""

    cpu: Decimal = Decimal(0)  # cores
    memory: int = 0  # bytes
    disk: int = 0  # bytes
    gpus: int = 0
    gpu_resource: str = ""  # e.g. "nvidia.com/gpu"
    cpu_limit: Decimal | None = None
    memory_limit: int | None = None  # bytes, enforced by the job wrapper
    disk_limit: int | None = None


def container_resources(c: Container, kind: str) -> ContainerResources:
    where = f"{kind} {c.name!r}: resources"
    req = {k: parse(v, f"{where}.requests[{k}]") for k, v in c.resources.requests.items()}
    lim = {k: parse(v, f"{where}.limits[{k}]") for k, v in c.resources.limits.items()}
    for k in req.keys() & lim.keys():
        if req[k] > lim[k]:
            raise TranslationError(
                f"{where}: request {c.resources.requests[k]} for {k} exceeds its limit "
                f"{c.resources.limits[k]}"
            )

    def job_value(name: str) -> Decimal:
        return req.get(name, lim.get(name, Decimal(0)))

    gpus = 0
    gpu_resource = ""
    for name in GPU_RESOURCES:
        if name not in req and name not in lim:
            continue
        if name in req and name in lim and req[name] != lim[name]:
            raise TranslationError(f"{where}: {name} request and limit must be equal")
        value = job_value(name)
        if value != value.to_integral_value():
            raise TranslationError(f"{where}: {name} must be a whole number, not {value}")
        if value == 0:
            continue
        if gpu_resource:
            raise TranslationError(f"{where}: asks for GPUs of two vendors")
        gpus, gpu_resource = int(value), name
    return ContainerResources(
        cpu=job_value(CPU),
        memory=math.ceil(job_value(MEMORY)),
        disk=math.ceil(job_value(DISK)),
        gpus=gpus,
        gpu_resource=gpu_resource,
        cpu_limit=lim.get(CPU),
        memory_limit=math.ceil(lim[MEMORY]) if MEMORY in lim else None,
        disk_limit=math.ceil(lim[DISK]) if DISK in lim else None,
    )


@dataclass(frozen=True)
class PodResources:
    """The job's requests, in HTCondor units."""

    cpus: int
    memory_mib: int
    disk_kib: int
    gpus: int
    gpu_resource: str = ""

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def disk_bytes(self) -> int:
        return self.disk_kib * KIB


def _effective(app: Sequence[Decimal | int], init: Sequence[Decimal | int]) -> Decimal:
    total = sum((Decimal(v) for v in app), Decimal(0))
    return max([total, *(Decimal(v) for v in init)])


def pod_resources(
    app: Sequence[ContainerResources],
    init: Sequence[ContainerResources],
    limits: ResourceSettings,
) -> PodResources:
    cores = _effective([r.cpu for r in app], [r.cpu for r in init])
    memory = _effective([r.memory for r in app], [r.memory for r in init])
    disk = _effective([r.disk for r in app], [r.disk for r in init])
    gpus = int(_effective([r.gpus for r in app], [r.gpus for r in init]))
    vendors = {r.gpu_resource for r in (*app, *init) if r.gpu_resource}
    if len(vendors) > 1:
        raise TranslationError(f"the pod asks for GPUs of several vendors: {sorted(vendors)}")

    cpus = math.ceil(cores) if cores > 0 else limits.default_cpus
    memory_mib = math.ceil(memory / MIB) if memory > 0 else limits.default_memory_mib
    disk_kib = math.ceil(disk / KIB) if disk > 0 else limits.default_disk_mib * 1024

    if cpus > limits.max_cpus:
        raise TranslationError(
            f"the pod requests {cpus} CPUs; this site accepts at most {limits.max_cpus}"
        )
    if memory_mib > limits.max_memory_mib:
        raise TranslationError(
            f"the pod requests {memory_mib} MiB of memory; this site accepts at most "
            f"{limits.max_memory_mib} MiB"
        )
    if disk_kib > limits.max_disk_mib * 1024:
        raise TranslationError(
            f"the pod requests {math.ceil(disk_kib / 1024)} MiB of ephemeral storage; this "
            f"site accepts at most {limits.max_disk_mib} MiB"
        )
    if gpus > limits.max_gpus:
        raise TranslationError(
            f"the pod requests {gpus} GPUs; this site accepts at most {limits.max_gpus}"
        )
    return PodResources(cpus, memory_mib, disk_kib, gpus, next(iter(vendors), ""))
