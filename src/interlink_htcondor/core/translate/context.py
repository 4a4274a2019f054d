"""What translating one pod may read: the pod, the objects sent with it, its resources."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from interlink_htcondor.core.models import ConfigMap, CreateRequest, Pod, Secret
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.resources import ContainerResources, PodResources

# interLink's annotation carrying the pod's IP on the virtual node (mesh/VPN setups).
POD_IP_ANNOTATION = "interlink.eu/pod-ip"


@dataclass(frozen=True)
class PodContext:
    pod: Pod
    configmaps: dict[str, ConfigMap] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    # Projected volumes as interLink resolves them: a ConfigMap named after the volume.
    projected: dict[str, ConfigMap] = field(default_factory=dict)
    resources: dict[str, ContainerResources] = field(default_factory=dict)
    totals: PodResources | None = None

    @property
    def pod_ip(self) -> str:
        return self.pod.status.pod_ip or self.pod.metadata.annotations.get(POD_IP_ANNOTATION, "")


def collect(
    req: CreateRequest,
) -> tuple[dict[str, ConfigMap], dict[str, Secret], dict[str, ConfigMap]]:
    """Index the objects of every ``container[]`` entry by name (first one wins)."""
    cms: dict[str, ConfigMap] = {}
    secrets: dict[str, Secret] = {}
    projected: dict[str, ConfigMap] = {}
    for rc in req.container:
        for cm in rc.config_maps:
            cms.setdefault(cm.metadata.name, cm)
        for s in rc.secrets:
            secrets.setdefault(s.metadata.name, s)
        for pm in rc.projected_volume_maps:
            projected.setdefault(pm.metadata.name, pm)
    return cms, secrets, projected


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise TranslationError(f"{what} is not valid base64") from e


def configmap_items(cm: ConfigMap, where: str) -> dict[str, bytes]:
    """Every key of a ConfigMap as file content (``data`` as UTF-8, ``binaryData`` decoded)."""
    out = {k: v.encode() for k, v in cm.data.items()}
    for k, v in cm.binary_data.items():
        out[k] = _b64(v, f"{where}: configMap {cm.metadata.name!r} binaryData key {k!r}")
    return out


def secret_items(s: Secret, where: str) -> dict[str, bytes]:
    """Every key of a Secret, base64-decoded (``stringData`` taken as plain text)."""
    name = s.metadata.name
    out = {k: _b64(v, f"{where}: secret {name!r} key {k!r}") for k, v in s.data.items()}
    for k, sv in s.string_data.items():
        out[k] = sv.encode()
    return out
