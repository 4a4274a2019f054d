"""Each pod's /status entry, mapped and serialised once per change of its job; and the
pods of each /status body, parsed once.

The virtual kubelet asks about every pod again in each loop, and most jobs have not
changed since: their entry is the same JSON as last time. An entry is kept with the job
ad it was made from and the parts of the request's pod it depends on; the snapshot
replaces an ad that changes with a new object (it never edits one), so an entry is
current exactly while the pod's ad is the same object and the pod the same.

Only entries that depend on nothing else are kept: an idle job (with the slot-size
diagnosis it was made with) or a running one whose containers are not all over. Held
jobs (their grace period runs out), terminal answers (read from ``status.json``) and lost
pods are mapped at every call.

The virtual kubelet also sends the same bytes for a pod again and again (the pod as the
API server holds it, unchanged until its status changes): ``BodyCache`` keeps what a body
was parsed into, by a 128-bit digest of its bytes, so that parsing 3 kB of JSON is not
the larger part of answering.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from interlink_htcondor.core.models import PodRef
from interlink_htcondor.core.pod_status import (
    IDLE,
    RUNNING,
    SUSPENDED,
    TRANSFERRING_OUTPUT,
    StatusResult,
)

Ad = Mapping[str, Any]
# Job states whose mapping does not depend on the time of the call.
STEADY_STATES = frozenset({IDLE, RUNNING, TRANSFERRING_OUTPUT, SUSPENDED})


def pod_key(pod: PodRef) -> Hashable:
    """What of the request's pod the entry depends on (names, images)."""
    return (pod.name, pod.namespace, pod.init_containers, pod.containers, tuple(pod.images.items()))


def cacheable(ad: Ad, result: StatusResult) -> bool:
    return ad.get("JobStatus") in STEADY_STATES and not result.terminal and not result.remove_reason


@dataclass(frozen=True, slots=True)
class _Entry:
    ad: Ad
    pod: Hashable
    diagnosis: str | None
    data: bytes


class AnswerCache:
    """Serialised entries by pod UID. Bounded: past ``limit`` entries it starts over (a
    pod's entry is replaced, never added twice, so that takes pods no longer asked about
    for years, or a queue that shrank)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, uid: str, ad: Ad, pod: Hashable, diagnosis: str | None) -> bytes | None:
        e = self._entries.get(uid)
        if e is None or e.ad is not ad or e.diagnosis != diagnosis or e.pod != pod:
            return None
        return e.data

    def put(self, uid: str, ad: Ad, pod: Hashable, diagnosis: str | None, data: bytes) -> None:
        if uid not in self._entries and len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[uid] = _Entry(ad, pod, diagnosis, data)


class BodyCache:
    """The pods each /status body held, by a digest of the body. Bounded like
    ``AnswerCache``: past ``limit`` entries it starts over."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[bytes, Sequence[PodRef]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=16).digest()

    def get(self, key: bytes) -> Sequence[PodRef] | None:
        return self._entries.get(key)

    def put(self, key: bytes, pods: Sequence[PodRef]) -> None:
        if key not in self._entries and len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[key] = tuple(pods)
