"""What translating one pod may read: the pod, the objects sent with it, its resources."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from interlink_htcondor.core.models import ConfigMap, CreateRequest, Pod, Secret
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.limits import PodBudget
from interlink_htcondor.core.translate.resources import ContainerResources, PodResources
from interlink_htcondor.settings import LimitSettings

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
    limits: LimitSettings = field(default_factory=LimitSettings)
    budget: PodBudget = field(default_factory=lambda: PodBudget(LimitSettings()))
    # Decoded objects, each decoded once however many volumes and containers use it.
    _decoded: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    @property
    def pod_ip(self) -> str:
        return self.pod.status.pod_ip or self.pod.metadata.annotations.get(POD_IP_ANNOTATION, "")

    def _once(self, obj: object, kind: str, decode: Callable[[], Any]) -> Any:
        key = (id(obj), kind)
        if key not in self._decoded:
            self._decoded[key] = decode()
        return self._decoded[key]

    def configmap_data(self, cm: ConfigMap, where: str) -> dict[str, bytes]:
        result: dict[str, bytes] = self._once(cm, "bytes", lambda: configmap_items(cm, where))
        return result

    def secret_data(self, s: Secret, where: str) -> dict[str, bytes]:
        result: dict[str, bytes] = self._once(s, "bytes", lambda: secret_items(s, where))
        return result

    def secret_text(self, s: Secret, where: str) -> dict[str, str]:
        """Every key of a Secret as text (envFrom)."""
        name = s.metadata.name

        def decode() -> dict[str, str]:
            return {
                k: text(v, f"{where}: secret {name!r} key {k!r}")
                for k, v in self.secret_data(s, where).items()
            }

        result: dict[str, str] = self._once(s, "text", decode)
        return result


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


def text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TranslationError(f"{where}: value is not UTF-8 text") from e


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
