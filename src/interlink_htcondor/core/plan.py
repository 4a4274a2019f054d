"""What the pure core hands the schedd gateway: everything needed to submit one pod.

The translator (pod -> JobPlan) is pure; the gateway (JobPlan -> schedd) does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SandboxFile:
    """A file the plugin writes into the pod's sandbox before submission.

    ``path`` is relative to the sandbox root and never contains ``..``.
    """

    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class JobPlan:
    pod_uid: str
    name: str
    namespace: str
    # Submit description commands, including ``+Attr`` custom attributes (values already
    # ClassAd expressions where they start with '+').
    submit: dict[str, str]
    # Files written into the sandbox (wrapper, pod.json, volume contents).
    files: tuple[SandboxFile, ...] = field(default_factory=tuple)
    # Sandbox entries to send with the job when spooling (relative paths).
    transfer_input: tuple[str, ...] = field(default_factory=tuple)
    # Container names in pod order, for status reporting when the job is gone.
    init_containers: tuple[str, ...] = field(default_factory=tuple)
    containers: tuple[str, ...] = field(default_factory=tuple)
