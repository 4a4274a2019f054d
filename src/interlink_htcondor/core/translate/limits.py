"""Bounds on what one pod makes the plugin produce (``limits.*`` settings).

Request data can be amplified: ``$(VAR)`` references double a value at each level,
``items`` can map one key to many files, one ConfigMap can feed many volumes and
containers. Each such path is charged here *while* it is built, so that a hostile pod
costs at most a bound's worth of memory and time before it is refused with a message
naming the field and the limit (and the setting that raises it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sized

from interlink_htcondor.core.models import Pod
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.settings import LimitSettings

# Larger than any duration HTCondor keeps in its 32-bit time attributes.
MAX_SECONDS = 2**31 - 1


def too_many(what: str, count: int, limit: int, setting: str) -> TranslationError:
    return TranslationError(
        f"{what}: {count} is more than this site's limit of {limit} ({setting})"
    )


def check_count(items: Sized, limit: int, what: str, setting: str) -> None:
    if len(items) > limit:
        raise too_many(what, len(items), limit, setting)


def check_seconds(value: int, where: str, limit: int = MAX_SECONDS, setting: str = "") -> int:
    """A duration a pod asks for; past ``limit`` it is refused, never clamped."""
    if value > limit:
        extra = f" ({setting})" if setting else ""
        raise TranslationError(f"{where}: {value} s is more than the limit of {limit} s{extra}")
    return value


def metadata_bytes(m: Mapping[str, str]) -> int:
    return sum(len(k.encode("utf-8", "surrogatepass")) for k in m) + sum(
        len(v.encode("utf-8", "surrogatepass")) for v in m.values()
    )


def check_metadata(labels: Mapping[str, str], annotations: Mapping[str, str], limit: int) -> None:
    for what, m in (("labels", labels), ("annotations", annotations)):
        size = metadata_bytes(m)
        if size > limit:
            raise TranslationError(
                f"the pod's {what} take {size} bytes, more than this site's limit of "
                f"{limit} bytes (limits.max_metadata_bytes)"
            )


def check_pod(pod: Pod, limits: LimitSettings) -> None:
    """The bounds a pod must meet before anything is built from it."""
    check_metadata(pod.metadata.labels, pod.metadata.annotations, limits.max_metadata_bytes)
    check_count(
        [*pod.spec.init_containers, *pod.spec.containers],
        limits.max_containers,
        "containers (init and app)",
        "limits.max_containers",
    )
    grace = pod.spec.termination_grace_period_seconds
    if grace is not None:
        check_seconds(
            grace,
            "terminationGracePeriodSeconds",
            limits.max_grace_seconds,
            "limits.max_grace_seconds",
        )


class ContainerBudget:
    """Bytes of one container's environment, argv and hooks (``max_container_bytes``)."""

    def __init__(self, limits: LimitSettings, where: str) -> None:
        self.limits = limits
        self.where = where
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        limit = self.limits.max_container_bytes
        if self.used > limit:
            raise TranslationError(
                f"{self.where}: environment, command and args take more than this site's "
                f"limit of {limit} bytes (limits.max_container_bytes), reached at {what}"
            )

    def refund(self, nbytes: int) -> None:
        self.used -= nbytes


class PodBudget:
    """Files and bytes one pod's sandbox receives (``max_volume_files``, ``max_sandbox_bytes``)."""

    def __init__(self, limits: LimitSettings) -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def file(self, size: int, where: str) -> None:
        self.files += 1
        if self.files > self.limits.max_volume_files:
            raise TranslationError(
                f"{where}: the pod's volumes hold more than this site's limit of "
                f"{self.limits.max_volume_files} files (limits.max_volume_files)"
            )
        self.charge(size, where)

    def charge(self, size: int, where: str) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_sandbox_bytes:
            raise TranslationError(
                f"{where}: the pod's sandbox would hold more than this site's limit of "
                f"{self.limits.max_sandbox_bytes} bytes (limits.max_sandbox_bytes)"
            )
