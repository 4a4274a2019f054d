"""The job spec: the one file (``pod.json``) through which a pod reaches the job wrapper.

Every value from the pod travels here as JSON data, never pasted into a script. The job
wrapper (``jobside/wrapper.py``, stdlib only, runs on execute points) reads it. Bump
``SPEC_VERSION`` on any incompatible change; the wrapper refuses versions it does not know.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEC_VERSION = 1
SPEC_FILE = "pod.json"
WRAPPER_FILE = "interlink-job-wrapper.py"
LOG_DIR = "logs"
PREVIOUS_LOG = ".previous.log"  # logs/<container>.previous.log: the instance before a restart
VOLUME_DIR = "volumes"
STATUS_FILE = "status.json"  # written by the wrapper (see ``core.status_file``)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VolumeSpec(_Strict):
    """Where a pod volume lives on the execute side.

    - ``emptyDir``: created by the wrapper in the job's scratch directory;
    - ``sandbox``: files the plugin wrote under ``volumes/<name>`` in the sandbox
      (configMap, secret, projected, downwardAPI);
    - ``host``: an absolute path on the execute point (hostPath, or a mapped PVC).
    """

    kind: Literal["emptyDir", "sandbox", "host"]
    path: str = ""  # sandbox-relative for "sandbox", absolute for "host"
    size_limit_bytes: int | None = None


class MountSpec(_Strict):
    volume: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


class HttpGetSpec(_Strict):
    """An HTTP GET of a probe or hook, sent from the execute point (``host`` resolved)."""

    scheme: Literal["http", "https"] = "http"
    host: str = "127.0.0.1"
    port: int
    path: str = "/"  # with its query, if any
    headers: list[tuple[str, str]] = Field(default_factory=list)


class TcpSocketSpec(_Strict):
    """A TCP connect of a probe."""

    host: str = "127.0.0.1"
    port: int


class HandlerSpec(_Strict):
    """One probe or lifecycle action: exactly one of ``argv`` (exec in the container's
    environment), ``http_get``, ``tcp_socket`` or ``sleep_seconds``."""

    argv: list[str] | None = None
    http_get: HttpGetSpec | None = None
    tcp_socket: TcpSocketSpec | None = None
    sleep_seconds: int | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HandlerSpec:
        actions = (self.argv, self.http_get, self.tcp_socket, self.sleep_seconds)
        if sum(a is not None for a in actions) != 1:
            raise ValueError("a handler needs exactly one action")
        return self


class ProbeSpec(HandlerSpec):
    """A probe with the kubelet's timings (defaults already applied by the translator)."""

    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    # Liveness and startup probes only: the grace period of the kill that follows a failure.
    termination_grace_seconds: int | None = None


class ContainerSpec(_Strict):
    name: str
    image: str  # resolved: a local SIF/sandbox path or a docker:// / oras:// URI
    # "exec": run argv (command + args) with ``apptainer exec``;
    # "run": no command given, run the image's runscript/entrypoint with argv as args.
    mode: Literal["exec", "run"]
    argv: list[str]
    working_dir: str | None = None
    env: list[tuple[str, str]] = Field(default_factory=list)  # ordered, already expanded
    mounts: list[MountSpec] = Field(default_factory=list)
    memory_limit_bytes: int | None = None
    post_start: HandlerSpec | None = None
    pre_stop: HandlerSpec | None = None
    startup_probe: ProbeSpec | None = None
    liveness_probe: ProbeSpec | None = None
    readiness_probe: ProbeSpec | None = None
    apptainer_args: list[str] = Field(default_factory=list)


class ApptainerSpec(_Strict):
    binary: str = "apptainer"
    # Extra options for every container (site config plus pod annotations), as argv items.
    args: list[str] = Field(default_factory=list)


class PodIdentity(_Strict):
    uid: str
    name: str
    namespace: str


class JobSpec(_Strict):
    version: int = SPEC_VERSION
    pod: PodIdentity
    apptainer: ApptainerSpec = Field(default_factory=ApptainerSpec)
    # Shell commands run on the execute point before any container, outside containers
    # (interLink's wstunnel client and mesh pre-exec scripts). They run as the job's own
    # user, inside the job the pod already controls.
    prologue: list[str] = Field(default_factory=list)
    volumes: dict[str, VolumeSpec] = Field(default_factory=dict)
    init_containers: list[ContainerSpec] = Field(default_factory=list)
    containers: list[ContainerSpec] = Field(default_factory=list)
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Never"
    active_deadline_seconds: int | None = None
    termination_grace_seconds: int = 30
    # Where condor_chirp lives on the execute point ("" = look it up at run time).
    chirp: str = ""

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=1).encode()
