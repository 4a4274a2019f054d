"""The plugin's configuration: one validated model, from a YAML file plus environment overrides.

Environment variables override the file: ``INTERLINK_HTCONDOR_<SECTION>__<KEY>`` (for example
``INTERLINK_HTCONDOR_SCHEDD__COLLECTOR=cm.example.org``). Unknown keys are an error.
Each field's description is the admin reference (``docs/configuration.md`` is generated
from this model).

It sits at the top of the package, below every layer rather than inside one: the core's
translation reads it, the service and the CLI build it, the personal pool (``devpool``)
provides embedded defaults for it, and it imports nothing of the project itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "INTERLINK_HTCONDOR_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="TCP address to listen on (loopback by default).")
    port: int = Field(4000, ge=0, le=65535, description="TCP port to listen on.")
    socket: Path | None = Field(
        None, description="Listen on this unix socket instead of TCP (interLink's `unix://`)."
    )
    socket_mode: int = Field(0o660, description="Permission bits of the unix socket.")
    bearer_token_file: Path | None = Field(
        None,
        description="File holding a bearer token that clients must send. interLink itself "
        "sends none, so protect its path by the socket or loopback instead.",
    )
    tls_cert: Path | None = Field(None, description="TLS certificate (PEM) for TCP mode.")
    tls_key: Path | None = Field(None, description="TLS private key (PEM) for TCP mode.")
    max_request_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body accepted, in bytes."
    )
    request_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A request's headers must arrive within this from its first byte (or "
        "from the connection's start), and its body within this again; a connection that "
        "is slower is closed (headers) or answered 408 (body).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections at most; past it new connections are closed at once.",
    )
    run_as: str = Field(
        "",
        description="When started as root, switch to this user after reading the config and "
        "before serving. The plugin should run as the jobs' owner, never as root.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the structured (JSON) logs."
    )


class ScheddSettings(_Section):
    collector: str = Field(
        "", description="Collector (central manager) address; empty uses the HTCondor config."
    )
    schedd_name: str = Field(
        "", description="Schedd name to locate; empty takes the collector's only/local schedd."
    )
    auth_methods: str = Field(
        "", description="SEC_CLIENT_AUTHENTICATION_METHODS for the bindings, e.g. `IDTOKENS`."
    )
    token_dir: Path | None = Field(
        None, description="Directory of IDTOKENS/SciTokens files (mode 0700) for the bindings."
    )
    scitoken_file: Path | None = Field(
        None, description="SciToken file (SCITOKENS_FILE); re-read on every connection."
    )
    workers: int = Field(
        4,
        ge=1,
        le=32,
        description="Worker processes for schedd calls, for queries and again for submits "
        "and removals (plus one for readiness probes and one for the job snapshot). The "
        "bindings hold Python's lock while they wait, so each call runs in a process of its "
        "own.",
    )
    worker_recycle_mib: float = Field(
        32.0,
        ge=0,
        le=4096,
        description="A worker whose resident memory grew by more than this many MiB "
        "since it started (memory a large answer left behind; the bindings also leak a "
        "little with every query) ends after that call and the next call starts a fresh "
        "one. The snapshot worker, which queries every second, is recycled after at most 8 "
        "MiB and hands its view of the jobs to its successor, which counts from there. 0: "
        "never.",
    )
    timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="Deadline of one schedd call. A query past it is abandoned (its worker "
        "killed); a submit past it answers 503 and may still happen (the pod stays locked "
        "until it is known). After a timeout, calls fail at once until the schedd answers "
        "again.",
    )
    probe_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Deadline of a readiness probe (a trivial schedd query); a probe past it "
        "reports the schedd hung, and interLink's ping answers that the pool is down.",
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed schedd call (never of a timed-out one)."
    )
    unready_after_seconds: float = Field(
        30.0,
        gt=0,
        description="/readyz answers 503 when no schedd call has succeeded for this long.",
    )
    status_refresh_seconds: float = Field(
        1.0,
        gt=0,
        description="Age of the shared job snapshot that serves /status before a new query.",
    )
    full_refresh_seconds: float = Field(
        30.0,
        gt=0,
        description="Between two refreshes of the job snapshot that list every job of the "
        "plugin (the others ask the schedd only for jobs that changed). Longer with a big "
        "queue: at most one listing per twenty times its own duration.",
    )
    status_keep_fresh_seconds: float = Field(
        30.0,
        ge=0,
        description="While a /status call came within this long, the job snapshot is "
        "refreshed every `status_refresh_seconds` between calls too, so that the first call "
        "of the virtual kubelet's next loop finds it fresh (0: refreshed only when called).",
    )
    status_wait_seconds: float = Field(
        2.0,
        gt=0,
        description="Longest a /status call waits for a new job snapshot, when the last one "
        "is too old to serve (no call for a while); past it the last one is served, with its "
        "age in the `Snapshot-Age` header. A query sent in time never holds calls.",
    )
    max_stale_seconds: float = Field(
        300.0,
        gt=0,
        description="Oldest job snapshot /status serves while the schedd does not answer; "
        "past it, /status answers 503.",
    )


class ImageRule(_Section):
    match: str = Field(description="fnmatch pattern on the image reference, e.g. `busybox:*`.")
    target: str = Field(
        description="What execute points run. `{image}` is the full reference, `{repository}` "
        "and `{tag}` its parts, e.g. `/cvmfs/unpacked.cern.ch/registry.hub.docker.com/{image}` "
        "or `/images/busybox.sif`."
    )


class ContainerSettings(_Section):
    mode: Literal["apptainer", "container_universe", "singularity_image"] = Field(
        "apptainer",
        description="How containers run: `apptainer` (a vanilla job whose wrapper starts each "
        "container with apptainer; multi-container pods), `container_universe` or "
        "`singularity_image` (`+SingularityImage`; both single-container pods only).",
    )
    apptainer: str = Field("apptainer", description="Apptainer binary on execute points.")
    apptainer_args: list[str] = Field(
        default_factory=list, description="Extra apptainer options for every container."
    )
    python: str = Field(
        "/usr/bin/env python3",
        description="Interpreter of the job wrapper on execute points (Python >= 3.6).",
    )
    chirp: str = Field(
        "", description="condor_chirp path on execute points; empty finds it at run time."
    )
    image_rules: list[ImageRule] = Field(
        default_factory=list,
        description="First matching rule maps an image reference; no match gives "
        "`docker://{image}`.",
    )


class StorageSettings(_Section):
    mode: Literal["shared", "spool"] = Field(
        "shared",
        description="`shared`: sandboxes live under `shared_dir`, visible at the same path on "
        "execute points. `spool`: input is spooled to the schedd and output retrieved.",
    )
    shared_dir: Path = Field(
        Path("/var/lib/interlink-htcondor/pods"),
        description="Root of the per-pod sandboxes (shared mode: on the shared filesystem).",
    )
    host_path_allow: list[str] = Field(
        default_factory=list,
        description="Path prefixes pods may mount as hostPath volumes; empty forbids hostPath.",
    )
    pvc_paths: dict[str, str] = Field(
        default_factory=dict,
        description="PersistentVolumeClaim name (or `namespace/name`) to a path on execute points.",
    )


class ResourceSettings(_Section):
    default_cpus: int = Field(1, ge=1, description="request_cpus when a pod sets nothing.")
    default_memory_mib: int = Field(
        2048, ge=1, description="request_memory (MiB) when a pod sets nothing."
    )
    default_disk_mib: int = Field(
        1024, ge=1, description="request_disk (MiB) when a pod sets no ephemeral-storage."
    )
    max_cpus: int = Field(64, ge=1, description="Largest request_cpus accepted.")
    max_memory_mib: int = Field(512 * 1024, ge=1, description="Largest request_memory (MiB).")
    max_disk_mib: int = Field(10 * 1024 * 1024, ge=1, description="Largest request_disk (MiB).")
    max_gpus: int = Field(8, ge=0, description="Largest request_gpus accepted.")
    default_wall_seconds: int | None = Field(
        None, description="Wall-time limit when a pod sets none; empty means no limit."
    )
    max_wall_seconds: int | None = Field(
        None,
        ge=1,
        description="Largest wall time (activeDeadlineSeconds or the `wall-time` annotation) "
        "accepted; empty means no cap.",
    )


class NodeTaint(_Section):
    key: str = Field(min_length=1, description="Taint key.")
    value: str = Field("", description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "NoSchedule", description="Taint effect."
    )


# The apptainer options a site may let pods set: those the translator knows how to check
# (flags that only add containment or devices; binds, scratch and no-mount with checked values).
APPTAINER_FLAG_OPTIONS = frozenset(
    [
        "--nv",
        "--nvccli",
        "--rocm",
        "--writable-tmpfs",
        "--no-home",
        "--no-init",
        "--no-umask",
        "--no-privs",
        "--compat",
        "--cleanenv",
        "-e",
    ]
)
APPTAINER_VALUE_OPTIONS = frozenset(["--bind", "-B", "--scratch", "-S", "--no-mount"])


class PolicySettings(_Section):
    accounting_groups: dict[str, str] = Field(
        default_factory=dict,
        description="Namespace to accounting group (`accounting_group`); `*` is the fallback.",
    )
    accounting_group_user: str = Field(
        "", description="accounting_group_user for all jobs; empty uses the job owner."
    )
    allowed_submit_commands: list[str] = Field(
        default_factory=list,
        description="Submit commands pods may set with `htcondor.interlink.eu/submit.<cmd>` "
        "annotations (case-insensitive).",
    )
    allow_apptainer_options: bool = Field(
        False,
        description="Let pods add apptainer options with the `apptainer-options` annotations "
        "(and the old `htcondor-job.vk.io/singularity-options`). Off: such pods are refused. "
        "On: each option must be in `allowed_apptainer_options`, and binds must be under "
        "`storage.host_path_allow`.",
    )
    allowed_apptainer_options: list[str] = Field(
        default_factory=lambda: ["--nv", "--rocm", "--writable-tmpfs", "--bind", "-B"],
        description="The apptainer options pods may set when `allow_apptainer_options` is on. "
        "Only options the plugin knows how to check can be listed: `--nv`, `--nvccli`, "
        "`--rocm`, `--writable-tmpfs`, `--no-home`, `--no-init`, `--no-umask`, `--no-privs`, "
        "`--compat`, `--cleanenv`/`-e`, `--bind`/`-B`, `--scratch`/`-S`, `--no-mount`.",
    )
    prologue_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose pods may run prologue commands "
        "(`interlink.eu/wstunnel-client-commands`, `slurm-job.vk.io/pre-exec`) on the "
        "execute point, outside any container, with all the rights of the job's user; `*` "
        "for every namespace. Empty (the default) refuses such pods. Trusted tenants only: "
        "see the admin guide's multi-tenant model.",
    )
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces this plugin instance runs pods of; empty runs every namespace. "
        "With one instance per tenant (each with its own job owner), a pod of another "
        "namespace is refused instead of running as the wrong owner.",
    )
    held_grace_seconds: int = Field(
        300, ge=0, description="A held job is reported Failed and removed after this long."
    )
    retention_seconds: int = Field(
        86400,
        ge=0,
        description="Finished jobs leave the queue this long after completion if their pod "
        "was never deleted (`leave_in_queue`).",
    )
    instance: str = Field(
        "default",
        description="Name tagging this plugin's jobs; several plugins may share a schedd.",
    )
    max_pods: int = Field(
        0,
        ge=0,
        description="Pods the virtual node reports as its capacity (ping); 0 reports the pool's "
        "CPU count (every job takes at least one core).",
    )
    node_taints: list[NodeTaint] | None = Field(
        None,
        description="Taints the ping asks the virtual node to carry (besides interLink's own "
        "`virtual-node.interlink/no-schedule`); unset leaves the node's taints alone.",
    )

    @field_validator("allowed_apptainer_options")
    @classmethod
    def _known_options(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - APPTAINER_FLAG_OPTIONS - APPTAINER_VALUE_OPTIONS)
        if unknown:
            raise ValueError(
                f"the plugin cannot check apptainer options {unknown}; pods may only be "
                "allowed options it checks (set site-wide options in containers.apptainer_args)"
            )
        return v


class LimitSettings(_Section):
    """Bounds on what one pod may make the plugin produce. Past a bound the create is
    refused (422) with a message naming the pod, the container, the field and the limit;
    realistic pods (Dask workers, interLink's conformance pods) stay far below them."""

    max_containers: int = Field(
        64, ge=1, description="Init and app containers of one pod, together."
    )
    max_env_vars: int = Field(
        1024, ge=0, description="Environment variables of one container (`env` and `envFrom`)."
    )
    max_args: int = Field(1024, ge=0, description="`command` + `args` items of one container.")
    max_value_bytes: int = Field(
        128 * 1024,
        ge=1024,
        description="Largest single value after `$(VAR)` expansion (an environment value, "
        "an argument, a `subPathExpr`), in UTF-8 bytes. Expansion stops as soon as it passes "
        "this; Linux itself passes no argument or variable above 128 KiB.",
    )
    max_container_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        description="Environment, command and args of one container, and the commands of "
        "its exec probes and hooks, together, in bytes (what one `execve` must carry; Linux "
        "allows about 2 MiB).",
    )
    max_volumes: int = Field(256, ge=0, description="Volumes of one pod.")
    max_mounts: int = Field(256, ge=0, description="Volume mounts of one container.")
    max_volume_files: int = Field(
        4096,
        ge=0,
        description="Files the plugin writes for one pod's configMap, secret, projected and "
        "downwardAPI volumes (every `items` entry and every key counts).",
    )
    max_sandbox_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes written into one pod's sandbox: volume files plus the job spec "
        "`pod.json`.",
    )
    max_metadata_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Size of a pod's annotations (keys and values), and of its labels; "
        "Kubernetes' own limit for annotations is 256 KiB.",
    )
    max_expression_bytes: int = Field(
        4096,
        ge=256,
        description="Largest ClassAd expression or submit value a pod sets (the requirements "
        "annotation, `submit.<command>` annotations). ClassAd parsers recurse, so very long "
        "expressions could exhaust a stack.",
    )
    max_grace_seconds: int = Field(
        3600,
        ge=1,
        description="Largest `terminationGracePeriodSeconds` accepted (the pod's, and a "
        "liveness or startup probe's): how long a deleted pod, or a container killed by a "
        "failing probe, may keep running to stop.",
    )
    max_probe_seconds: int = Field(
        86_400,
        ge=1,
        description="Largest probe timing accepted (`initialDelaySeconds`, `periodSeconds`, "
        "`timeoutSeconds`).",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    schedd: ScheddSettings = Field(default_factory=ScheddSettings)
    containers: ContainerSettings = Field(default_factory=ContainerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init kwargs by ``load``).
        return (env_settings, init_settings)


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says why."""


def load(path: Path | None = None, base: dict[str, Any] | None = None) -> Settings:
    """Load settings: ``base`` (embedded defaults) < YAML file < environment."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping, not {type(loaded).__name__}")
        data = _merge(data, loaded)
    return Settings(**data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
