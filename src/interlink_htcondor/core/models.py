"""Wire models of the interLink plugin API (see the contract in docs).

Request side: ``CreateRequest`` (RetrievedPodData) with the subset of core/v1 Pod,
ConfigMap and Secret the plugin reads, ``PodRef`` (the pods of /status and /delete, read
leniently) and ``LogRequest``. Response side: ``CreateResponse``, ``PodStatus`` with
``ContainerStatus`` entries, and ``PingResponse``.

Kubernetes objects arrive as the API server serialises them: camelCase keys, ``null`` for
empty Go slices and maps, and many fields this plugin does not use. Unknown fields are
ignored; the identity the plugin relies on (pod name, namespace and uid; every container's
name and image) is required and reported clearly when missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel


def _none_to_list(v: Any) -> Any:
    return [] if v is None else v


def _none_to_dict(v: Any) -> Any:
    return {} if v is None else v


def _quantity_to_str(v: Any) -> Any:
    # Quantities are strings on the wire; YAML manifests may give plain numbers.
    if isinstance(v, bool):
        return v  # rejected by the str type below, as Kubernetes does
    if isinstance(v, int | float):
        return str(v)
    return v


def rfc3339(t: datetime | float) -> str:
    """Kubernetes time format (metav1.Time): RFC 3339, UTC, second precision. A number is
    Unix seconds; a naive datetime is taken as UTC."""
    if not isinstance(t, datetime):
        t = datetime.fromtimestamp(int(t), UTC)
    elif t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


StrList = Annotated[list[str], BeforeValidator(_none_to_list)]
StrMap = Annotated[dict[str, str], BeforeValidator(_none_to_dict)]
Quantity = Annotated[str, BeforeValidator(_quantity_to_str)]
QuantityMap = Annotated[dict[str, Quantity], BeforeValidator(_none_to_dict)]
UtcTime = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]


class _K8s(BaseModel):
    """A Kubernetes object subset: camelCase on the wire, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )


class _K8sOpen(_K8s):
    """Like ``_K8s`` but keeps unknown fields, to name unsupported volume sources."""

    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted(k for k, v in (self.model_extra or {}).items() if v is not None)


# --------------------------------------------------------------------------- metadata


class ObjectMeta(_K8s):
    name: str = Field(min_length=1)
    namespace: str = ""
    uid: str = ""
    labels: StrMap = Field(default_factory=dict)
    annotations: StrMap = Field(default_factory=dict)


class PodMeta(ObjectMeta):
    """A pod's identity: all three parts are required."""

    namespace: str = Field(min_length=1)
    uid: str = Field(min_length=1)


# --------------------------------------------------------------------------- env


class KeySelector(_K8s):
    name: str = ""
    key: str = Field(min_length=1)
    optional: bool | None = None


class ObjectFieldSelector(_K8s):
    field_path: str = Field(min_length=1)
    api_version: str | None = None


class ResourceFieldSelector(_K8s):
    resource: str = Field(min_length=1)
    container_name: str | None = None
    divisor: Quantity | None = None


class EnvVarSource(_K8s):
    config_map_key_ref: KeySelector | None = None
    secret_key_ref: KeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None


class EnvVar(_K8s):
    name: str = Field(min_length=1)
    value: str | None = None
    value_from: EnvVarSource | None = None


class LocalObjectRef(_K8s):
    name: str = ""
    optional: bool | None = None


class EnvFromSource(_K8s):
    prefix: str = ""
    config_map_ref: LocalObjectRef | None = None
    secret_ref: LocalObjectRef | None = None


# --------------------------------------------------------------------------- containers


class ResourceRequirements(_K8s):
    requests: QuantityMap = Field(default_factory=dict)
    limits: QuantityMap = Field(default_factory=dict)


class VolumeMount(_K8s):
    name: str = Field(min_length=1)
    mount_path: str = Field(min_length=1)
    sub_path: str = ""
    sub_path_expr: str = ""
    read_only: bool = False


class ExecAction(_K8s):
    command: StrList = Field(default_factory=list)


# A port by number or by the name of one of the container's ports (IntOrString).
PortRef = StrictInt | StrictStr


class HTTPHeader(_K8s):
    name: str = Field(min_length=1)
    value: str = ""


class HTTPGetAction(_K8s):
    path: str = ""
    port: PortRef
    host: str = ""
    scheme: str = "HTTP"
    http_headers: Annotated[list[HTTPHeader], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )


class TCPSocketAction(_K8s):
    port: PortRef
    host: str = ""


class GRPCAction(_K8s):
    port: int
    service: str | None = None


class SleepAction(_K8s):
    seconds: StrictInt


class LifecycleHandler(_K8s):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    sleep: SleepAction | None = None


class Probe(_K8s):
    """A container probe; unset (or 0) timings get the API server's defaults."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: StrictInt | None = None
    timeout_seconds: StrictInt | None = None
    period_seconds: StrictInt | None = None
    success_threshold: StrictInt | None = None
    failure_threshold: StrictInt | None = None
    termination_grace_period_seconds: StrictInt | None = None


class Lifecycle(_K8s):
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None


class ContainerPort(_K8s):
    container_port: int
    name: str = ""
    protocol: str = "TCP"


class Container(_K8s):
    name: str = Field(min_length=1)
    image: str = Field(min_length=1)
    command: StrList = Field(default_factory=list)
    args: StrList = Field(default_factory=list)
    working_dir: str = ""
    env: Annotated[list[EnvVar], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    env_from: Annotated[list[EnvFromSource], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volume_mounts: Annotated[list[VolumeMount], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )
    lifecycle: Lifecycle | None = None
    startup_probe: Probe | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    ports: Annotated[list[ContainerPort], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )
    # Only init containers may set it ("Always" makes a sidecar).
    restart_policy: str | None = None

    @field_validator("resources", mode="before")
    @classmethod
    def _null_resources(cls, v: Any) -> Any:
        return {} if v is None else v


# --------------------------------------------------------------------------- volumes


class KeyToPath(_K8s):
    key: str = Field(min_length=1)
    path: str = Field(min_length=1)
    mode: int | None = None


class ConfigMapVolumeSource(_K8s):
    name: str = Field(min_length=1)
    items: Annotated[list[KeyToPath], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    default_mode: int | None = None
    optional: bool | None = None


class SecretVolumeSource(_K8s):
    secret_name: str = Field(min_length=1)
    items: Annotated[list[KeyToPath], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    default_mode: int | None = None
    optional: bool | None = None


class DownwardAPIVolumeFile(_K8s):
    path: str = Field(min_length=1)
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    mode: int | None = None


class DownwardAPIProjection(_K8s):
    items: Annotated[list[DownwardAPIVolumeFile], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )


class DownwardAPIVolumeSource(DownwardAPIProjection):
    default_mode: int | None = None


class ConfigMapProjection(_K8s):
    name: str = Field(min_length=1)
    items: Annotated[list[KeyToPath], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    optional: bool | None = None


class SecretProjection(_K8s):
    name: str = Field(min_length=1)
    items: Annotated[list[KeyToPath], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    optional: bool | None = None


class ServiceAccountTokenProjection(_K8s):
    path: str = Field(min_length=1)
    audience: str | None = None
    expiration_seconds: int | None = None


class VolumeProjection(_K8sOpen):
    config_map: ConfigMapProjection | None = None
    secret: SecretProjection | None = None
    downward_api: DownwardAPIProjection | None = Field(None, alias="downwardAPI")
    service_account_token: ServiceAccountTokenProjection | None = None


class ProjectedVolumeSource(_K8s):
    sources: Annotated[list[VolumeProjection], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )
    default_mode: int | None = None


class EmptyDirVolumeSource(_K8s):
    medium: str = ""
    size_limit: Quantity | None = None


class HostPathVolumeSource(_K8s):
    path: str = Field(min_length=1)
    type: str | None = None


class PVCVolumeSource(_K8s):
    claim_name: str = Field(min_length=1)
    read_only: bool = False


class Volume(_K8sOpen):
    name: str = Field(min_length=1)
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = Field(None, alias="downwardAPI")
    empty_dir: EmptyDirVolumeSource | None = None
    host_path: HostPathVolumeSource | None = None
    persistent_volume_claim: PVCVolumeSource | None = None


# --------------------------------------------------------------------------- pod


class PodSpec(_K8s):
    containers: list[Container] = Field(min_length=1)
    init_containers: Annotated[list[Container], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )
    volumes: Annotated[list[Volume], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    active_deadline_seconds: int | None = Field(None, ge=1)
    termination_grace_period_seconds: int | None = Field(None, ge=0)
    node_selector: StrMap = Field(default_factory=dict)
    node_name: str = ""
    service_account_name: str = ""
    hostname: str = ""
    subdomain: str = ""


class PodObjectStatus(_K8s):
    """The ``status`` of a core/v1 Pod (what the plugin may read from it)."""

    phase: str = ""
    pod_ip: str = Field("", alias="podIP")
    host_ip: str = Field("", alias="hostIP")

    @field_validator("pod_ip", "host_ip", mode="before")
    @classmethod
    def _null_ip(cls, v: Any) -> Any:
        return "" if v is None else v


class Pod(_K8s):
    metadata: PodMeta
    spec: PodSpec
    status: PodObjectStatus = Field(default_factory=PodObjectStatus)

    @field_validator("status", mode="before")
    @classmethod
    def _null_status(cls, v: Any) -> Any:
        return {} if v is None else v

    @property
    def init_containers(self) -> list[Container]:
        return self.spec.init_containers

    @property
    def containers(self) -> list[Container]:
        return self.spec.containers


@dataclass(frozen=True)
class PodRef:
    """A pod as /status and /delete receive it: its identity, the ``JobID`` annotation
    interLink sets from our PodJID, and its container names and images.

    Built leniently from core/v1 Pod JSON (``from_pod``): /status answers for the pods it
    can and leaves the others out, so one odd pod never fails the call. Values of the
    wrong type count as absent.
    """

    uid: str
    name: str
    namespace: str
    job_id: str = ""
    init_containers: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    images: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodRef:
        meta = _mapping(pod.get("metadata"))
        spec = _mapping(pod.get("spec"))
        images: dict[str, str] = {}
        names: dict[str, list[str]] = {"initContainers": [], "containers": []}
        for key, found in names.items():
            group = spec.get(key)
            for c in group if isinstance(group, list) else []:
                if isinstance(c, Mapping) and isinstance(c.get("name"), str):
                    found.append(c["name"])
                    if isinstance(c.get("image"), str):
                        images[c["name"]] = c["image"]
        return cls(
            uid=_string(meta.get("uid")),
            name=_string(meta.get("name")),
            namespace=_string(meta.get("namespace")),
            job_id=_string(_mapping(meta.get("annotations")).get("JobID")),
            init_containers=tuple(names["initContainers"]),
            containers=tuple(names["containers"]),
            images=images,
        )

    def missing_identity(self) -> list[str]:
        """The identity fields /delete needs that this pod lacks (``metadata.uid``...)."""
        fields = (("name", self.name), ("namespace", self.namespace), ("uid", self.uid))
        return [f"metadata.{k}" for k, v in fields if not v]


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _string(v: Any) -> str:
    return v if isinstance(v, str) else ""


# --------------------------------------------------------------------------- payload objects


class ConfigMap(_K8s):
    metadata: ObjectMeta
    data: StrMap = Field(default_factory=dict)
    binary_data: StrMap = Field(default_factory=dict)  # base64


class Secret(_K8s):
    metadata: ObjectMeta
    data: StrMap = Field(default_factory=dict)  # base64
    string_data: StrMap = Field(default_factory=dict)
    type: str = ""


class RetrievedContainer(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_by_name=True, serialize_by_alias=True)

    name: str = Field(min_length=1)
    config_maps: Annotated[list[ConfigMap], BeforeValidator(_none_to_list)] = Field(
        default_factory=list, alias="configMaps"
    )
    projected_volume_maps: Annotated[list[ConfigMap], BeforeValidator(_none_to_list)] = Field(
        default_factory=list, alias="projectedvolumemaps"
    )
    secrets: Annotated[list[Secret], BeforeValidator(_none_to_list)] = Field(
        default_factory=list, alias="secrets"
    )
    empty_dirs: StrList = Field(default_factory=list, alias="emptyDirs")


class CreateRequest(BaseModel):
    """POST /create body (interLink's RetrievedPodData)."""

    model_config = ConfigDict(extra="ignore", validate_by_name=True, serialize_by_alias=True)

    pod: Pod
    container: Annotated[list[RetrievedContainer], BeforeValidator(_none_to_list)] = Field(
        default_factory=list
    )
    job_config: Any = Field(None, alias="jobConfig")
    job_script: str | None = Field(None, alias="jobScript")


def parse_create_body(raw: Any) -> CreateRequest:
    """Validate a decoded /create body: one object, or interLink 0.4's one-element array.

    Raises ``ValueError`` (a ``pydantic.ValidationError`` for schema problems).
    """
    if isinstance(raw, list):
        if len(raw) != 1:
            raise ValueError(
                f"expected one RetrievedPodData object (or a one-element array), got an "
                f"array of {len(raw)}"
            )
        raw = raw[0]
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    return CreateRequest.model_validate(raw)


def validation_message(exc: ValidationError, limit: int = 5) -> str:
    """One line naming each invalid field, e.g. ``pod.metadata.uid: Field required``."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


# --------------------------------------------------------------------------- logs


class LogRequest(BaseModel):
    """GET /getLogs body. ``Opts`` (kubectl's options, Go field names) is read by
    ``container_logs.LogOptions.from_opts``, the one parser of the log options."""

    model_config = ConfigDict(extra="ignore", validate_by_name=True, serialize_by_alias=True)

    namespace: str = Field(min_length=1, alias="Namespace")
    pod_uid: str = Field(min_length=1, alias="PodUID")
    pod_name: str = Field(min_length=1, alias="PodName")
    container_name: str = Field(min_length=1, alias="ContainerName")
    opts: dict[str, Any] = Field(default_factory=dict, alias="Opts")

    @field_validator("opts", mode="before")
    @classmethod
    def _null_opts(cls, v: Any) -> Any:
        return {} if v is None else v


# --------------------------------------------------------------------------- responses


class CreateResponse(BaseModel):
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    pod_uid: str = Field(alias="PodUID")
    pod_jid: str = Field(alias="PodJID")


class _Out(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict sent on the wire (aliases, no ``None`` fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ContainerStateWaiting(_Out):
    reason: str = ""
    message: str = ""


class ContainerStateRunning(_Out):
    started_at: UtcTime


class ContainerStateTerminated(_Out):
    exit_code: int
    signal: int | None = None
    reason: str = ""
    message: str = ""
    started_at: UtcTime | None = None
    finished_at: UtcTime | None = None


class ContainerState(_Out):
    """Exactly one of waiting, running or terminated."""

    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ContainerState:
        n = sum(s is not None for s in (self.waiting, self.running, self.terminated))
        if n != 1:
            raise ValueError("a container state needs exactly one of waiting/running/terminated")
        return self


class ContainerStatus(_Out):
    name: str
    state: ContainerState
    ready: bool = False
    restart_count: int = 0
    image: str = ""
    image_id: str = Field("", alias="imageID")
    started: bool | None = None
    last_state: ContainerState | None = None


class PodStatus(_Out):
    """One entry of the /status answer."""

    name: str
    uid: str = Field(alias="UID")
    namespace: str
    jid: str = Field(alias="JID")
    containers: list[ContainerStatus]
    init_containers: list[ContainerStatus] = Field(default_factory=list)


class Accelerator(_Out):
    resource_type: str
    available: str


class PingResources(_Out):
    cpu: str
    memory: str
    pods: str
    accelerators: list[Accelerator] = Field(default_factory=list)


class Taint(_Out):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class PingResponse(_Out):
    status: str = "ok"
    resources: PingResources | None = None
    taints: list[Taint] = Field(default_factory=list)
