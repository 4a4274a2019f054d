"""The downward API: pod fields (``fieldRef``) and container resources (``resourceFieldRef``).

Shared by environment variables and downwardAPI/projected volume files.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from interlink_htcondor.core.models import ObjectFieldSelector, ResourceFieldSelector
from interlink_htcondor.core.translate.context import PodContext
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.resources import CPU, DISK, MEMORY, parse

_MAP_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(s: str) -> str:
    """Go's ``%q`` (strconv.Quote), which the kubelet uses for label/annotation files."""
    out = ['"']
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def format_map(m: dict[str, str]) -> str:
    return "\n".join(f"{k}={go_quote(m[k])}" for k in sorted(m))


def field_value(ctx: PodContext, ref: ObjectFieldSelector, where: str, *, volume: bool) -> str:
    """The value of a ``fieldRef``; whole label/annotation maps only in volumes."""
    meta, spec = ctx.pod.metadata, ctx.pod.spec
    path = ref.field_path
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": spec.node_name,
        "spec.serviceAccountName": spec.service_account_name,
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
        "status.hostIP": ctx.pod.status.host_ip,
        "status.hostIPs": ctx.pod.status.host_ip,
    }
    if path in simple:
        return simple[path]
    m = _MAP_KEY.fullmatch(path)
    if m:
        source = meta.labels if m.group(1) == "labels" else meta.annotations
        return source.get(m.group(2), "")
    if volume and path == "metadata.labels":
        return format_map(meta.labels)
    if volume and path == "metadata.annotations":
        return format_map(meta.annotations)
    raise TranslationError(f"{where}: fieldRef {path!r} is not supported")


def resource_value(
    ctx: PodContext, ref: ResourceFieldSelector, default_container: str, where: str
) -> str:
    """The value of a ``resourceFieldRef``, divided by its divisor and rounded up.

    A limit that is not set reads as the whole job's request (the kubelet reads the node's
    allocatable there; the job's slot is this pod's node).
    """
    name = ref.container_name or default_container
    if not name:
        raise TranslationError(f"{where}: resourceFieldRef needs containerName")
    res = ctx.resources.get(name)
    if res is None:
        raise TranslationError(f"{where}: resourceFieldRef names unknown container {name!r}")
    divisor = parse(ref.divisor, f"{where}: divisor") if ref.divisor else Decimal(1)
    if divisor <= 0:
        raise TranslationError(f"{where}: divisor must be positive")
    kind, _, resource = ref.resource.partition(".")
    totals = ctx.totals
    value: Decimal
    if kind not in ("limits", "requests") or resource not in (CPU, MEMORY, DISK):
        raise TranslationError(f"{where}: resourceFieldRef {ref.resource!r} is not supported")
    if resource == CPU:
        limit = res.cpu_limit
        whole = Decimal(totals.cpus) if totals else Decimal(0)
        value = res.cpu if kind == "requests" else limit if limit is not None else whole
    elif resource == MEMORY:
        mlimit = res.memory_limit
        mwhole = totals.memory_bytes if totals else 0
        value = Decimal(
            res.memory if kind == "requests" else mlimit if mlimit is not None else mwhole
        )
    else:
        dlimit = res.disk_limit
        dwhole = totals.disk_bytes if totals else 0
        value = Decimal(
            res.disk if kind == "requests" else dlimit if dlimit is not None else dwhole
        )
    return str(math.ceil(value / divisor))
