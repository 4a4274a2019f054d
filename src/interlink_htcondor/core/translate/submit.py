"""The submit description: a readable ``dict`` the schedd gateway hands to htcondor2.

Every value is checked to reach the job exactly as meant. The submit language is
line-based and expands ``$(...)`` macros, so values carrying pod data have ``$`` written as
``$(DOLLAR)``, and the whole description is parsed back with the bindings' own
``htcondor2.Submit``: any value it would read differently (a newline, a trailing
backslash that joins lines, surrounding blanks, ``$$``) is refused with a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import classad2

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.jobspec import (
    LOG_DIR,
    SPEC_FILE,
    STATUS_FILE,
    VOLUME_DIR,
    WRAPPER_FILE,
    JobSpec,
)
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.resources import PodResources
from interlink_htcondor.core.translate.values import first_control
from interlink_htcondor.settings import Settings

WRAPPER_OUT = "wrapper.out"
WRAPPER_ERR = "wrapper.err"
# Beyond deadline + grace, so the wrapper's own DeadlineExceeded report comes first.
WALL_MARGIN_SECONDS = 60
# Time the execute point leaves between SIGTERM and SIGKILL, beyond the pod's grace.
VACATE_MARGIN_SECONDS = 15
_UNSAFE_PATH_CHARS = set(" \t,:$\"'\\")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHELL_EVALUATED = ("$", "`", "\\")


@dataclass
class SubmitDescription:
    """Ordered commands, each with the value the job must see (before macro escaping)."""

    literal: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: str | int) -> None:
        self.literal[key] = str(value)

    def attr(self, name: str, value: str) -> None:
        """A custom job attribute holding a ClassAd string literal."""
        self.literal[f"+{name}"] = classad2.quote(value)

    def expr(self, name: str, value: str) -> None:
        self.literal[f"+{name}"] = value

    def escaped(self) -> dict[str, str]:
        return {k: v.replace("$", "$(DOLLAR)") for k, v in self.literal.items()}


def verify(desc: SubmitDescription) -> dict[str, str]:
    """The escaped description, after checking the submit language reads it back intact."""
    import htcondor2  # the bindings load HTCondor's config; only when really needed

    submit = desc.escaped()
    for key, value in submit.items():
        ch = first_control(value)
        if ch is not None:
            raise TranslationError(
                f"submit command {key}: the value must be a single line without control "
                f"characters, not contain {ch!r}"
            )
        if value.endswith("\\"):  # would join the next line, wherever the gateway adds one
            raise TranslationError(f"submit command {key}: the value must not end with '\\'")
    try:
        parsed = htcondor2.Submit(submit)
    except Exception as e:  # the bindings raise ValueError/HTCondorException on parse errors
        raise TranslationError(f"the submit description does not parse: {e}") from e
    keys = list(parsed.keys())
    if len(keys) != len(submit):
        raise TranslationError("a submit value swallowed the next command (a trailing backslash?)")
    for key, meant in desc.literal.items():
        name = f"MY.{key[1:]}" if key.startswith("+") else key
        try:
            got = parsed.expand(name)
        except KeyError as e:
            raise TranslationError(f"submit command {key}: lost in the description") from e
        if got != meant:
            raise TranslationError(
                f"submit command {key}: the value cannot be expressed in a submit description "
                "(leading/trailing blanks, a trailing backslash, '$$' or '$(DOLLAR)')"
            )
    return submit


def quote_arguments(argv: Sequence[str], where: str) -> str:
    """HTCondor's new argument syntax: each argument in single quotes, ' and " doubled."""
    for a in argv:
        if any(ch in a for ch in "\n\r\x00"):
            raise TranslationError(
                f"{where}: {a!r} contains a line break, which a submit description cannot "
                "carry; use containers.mode apptainer"
            )
    inner = " ".join("'" + a.replace("'", "''").replace('"', '""') + "'" for a in argv)
    return f'"{inner}"'


def quote_environment(env: Sequence[tuple[str, str]], where: str) -> str:
    """HTCondor's new environment syntax: ``"NAME='value' ..."`` with ' and " doubled."""
    for name, value in env:
        if not _ENV_NAME.fullmatch(name):
            raise TranslationError(
                f"{where}: environment variable {name!r} cannot be passed by HTCondor; use "
                "containers.mode apptainer"
            )
        if any(ch in value for ch in "\n\r\x00"):
            raise TranslationError(
                f"{where}: environment variable {name!r} contains a line break, which a "
                "submit description cannot carry; use containers.mode apptainer"
            )
        if any(ch in value for ch in _SHELL_EVALUATED):
            # HTCondor hands the environment to the container runtime, which evaluates it
            # like a shell would ($VAR, $(cmd), `cmd`): refuse rather than run pod data.
            raise TranslationError(
                f"{where}: environment variable {name!r} contains '$', '`' or '\\', which "
                "the container runtime would evaluate; use containers.mode apptainer"
            )
    parts = [f"{n}='" + v.replace("'", "''").replace('"', '""') + "'" for n, v in env]
    return '"' + " ".join(parts) + '"'


def check_sandbox(path: PurePosixPath) -> None:
    text = str(path)
    if not path.is_absolute() or any(ch in _UNSAFE_PATH_CHARS or ord(ch) < 0x20 for ch in text):
        raise TranslationError(
            f"sandbox path {text!r} must be absolute without blanks, quotes, '$', ',' or ':' "
            "(check storage.shared_dir)"
        )


@dataclass(frozen=True)
class Identity:
    uid: str
    name: str
    namespace: str
    sandbox: PurePosixPath
    init_containers: tuple[str, ...]
    containers: tuple[str, ...]
    images: tuple[str, ...]  # as the pod names them, init containers first


def accounting_group(settings: Settings, namespace: str, requested: str | None) -> str | None:
    """The admin's group for the namespace; a pod may only pick a subgroup of it."""
    groups = settings.policy.accounting_groups
    mapped = groups.get(namespace, groups.get("*"))
    if requested is None:
        return mapped
    if mapped is None or requested == mapped or requested.startswith(mapped + "."):
        return requested
    raise TranslationError(
        f"annotation accounting-group: {requested!r} is not {mapped!r} or one of its subgroups"
    )


def common(
    desc: SubmitDescription,
    ident: Identity,
    settings: Settings,
    res: PodResources,
    spec: JobSpec,
    group: str | None,
    requirements: Sequence[str],
) -> None:
    """Commands shared by every container mode."""
    desc.set("request_cpus", res.cpus)
    desc.set("request_memory", res.memory_mib)  # MiB
    desc.set("request_disk", res.disk_kib)  # KiB: request_disk without a unit is KiB
    if res.gpus:
        desc.set("request_gpus", res.gpus)
    desc.set("batch_name", f"{ident.namespace}/{ident.name}")
    if group:
        desc.set("accounting_group", group)
        if settings.policy.accounting_group_user:
            desc.set("accounting_group_user", settings.policy.accounting_group_user)
    if requirements:
        desc.set("requirements", " && ".join(f"({r})" for r in requirements))
    desc.attr(classad_attrs.POD_UID, ident.uid)
    desc.attr(classad_attrs.POD_NAME, ident.name)
    desc.attr(classad_attrs.POD_NAMESPACE, ident.namespace)
    desc.attr(classad_attrs.CONTAINERS, ",".join(ident.containers))
    desc.attr(classad_attrs.INIT_CONTAINERS, ",".join(ident.init_containers))
    desc.attr(classad_attrs.IMAGES, ",".join(ident.images))
    desc.attr(classad_attrs.SANDBOX, str(ident.sandbox))
    desc.attr(classad_attrs.PLUGIN, settings.policy.instance)
    retention = settings.policy.retention_seconds
    # Finished jobs stay in the queue (status and logs stay answerable) until the pod is
    # deleted or the retention time has passed.
    desc.set(
        "leave_in_queue",
        f"JobStatus == 4 && (CompletionDate =?= undefined || CompletionDate == 0 || "
        f"(time() - CompletionDate) < {retention})"
        if retention > 0
        else "false",
    )
    if spec.active_deadline_seconds is not None:
        desc.set(
            "allowed_job_duration",
            spec.active_deadline_seconds + spec.termination_grace_seconds + WALL_MARGIN_SECONDS,
        )
    desc.set("kill_sig", "SIGTERM")
    desc.set("job_max_vacate_time", spec.termination_grace_seconds + VACATE_MARGIN_SECONDS)
    desc.set("notification", "never")


def apptainer_mode(
    desc: SubmitDescription, ident: Identity, settings: Settings, has_volumes: bool
) -> tuple[str, ...]:
    """The wrapper as a vanilla job; returns the sandbox entries to spool."""
    desc.set("universe", "vanilla")
    desc.set("executable", str(ident.sandbox / WRAPPER_FILE))
    desc.set("arguments", SPEC_FILE)
    desc.set("initialdir", str(ident.sandbox))
    desc.set("output", WRAPPER_OUT)
    desc.set("error", WRAPPER_ERR)
    desc.expr("WantIOProxy", "true")
    if settings.storage.mode == "shared":
        desc.set("transfer_executable", "false")
        desc.set("should_transfer_files", "NO")
        return ()
    inputs = (SPEC_FILE, WRAPPER_FILE, *((VOLUME_DIR,) if has_volumes else ()))
    desc.set("transfer_executable", "true")
    desc.set("should_transfer_files", "YES")
    desc.set("when_to_transfer_output", "ON_EXIT_OR_EVICT")
    desc.set("transfer_input_files", ", ".join(inputs))
    desc.set("transfer_output_files", f"{LOG_DIR}, {STATUS_FILE}")
    return inputs


def container_mode(desc: SubmitDescription, mode: str, ident: Identity, spec: JobSpec) -> None:
    """A single container run by HTCondor itself (container universe or +SingularityImage)."""
    c = spec.containers[0]
    where = f"container {c.name!r}"
    if mode == "container_universe":
        desc.set("universe", "container")
        desc.set("container_image", c.image)
        if c.image.startswith("/"):
            desc.set("transfer_container", "false")  # already on the execute point
    else:
        desc.set("universe", "vanilla")
        desc.attr("SingularityImage", c.image)
    if c.mode == "exec":
        exe, args = c.argv[0], c.argv[1:]
        if not exe.startswith("/") or any(ch.isspace() for ch in exe):
            raise TranslationError(
                f"{where}: in {mode} mode the command must start with an absolute path "
                f"without blanks, not {exe!r}"
            )
        desc.set("executable", exe)
        desc.set("transfer_executable", "false")
        if args:
            desc.set("arguments", quote_arguments(args, f"{where}: args"))
    elif c.argv or mode == "singularity_image":
        raise TranslationError(
            f"{where}: {mode} mode needs a command (the image's entrypoint cannot take args "
            "there); use containers.mode apptainer"
        )
    if c.env:
        desc.set("environment", quote_environment(c.env, where))
    desc.set("initialdir", str(ident.sandbox))
    desc.set("output", f"{c.name}.stdout")
    desc.set("error", f"{c.name}.stderr")
    # The container runs in the job's scratch directory in both storage modes (binding a
    # shared initialdir into the container is not something every site allows); its
    # output comes back to the sandbox when it ends.
    desc.set("should_transfer_files", "YES")
    desc.set("when_to_transfer_output", "ON_EXIT_OR_EVICT")


def extra_commands(desc: SubmitDescription, extra: Mapping[str, str]) -> None:
    """Admin-allowed commands from ``submit.<command>`` annotations."""
    for command, value in extra.items():
        # Submit commands are case-insensitive: replace ours rather than add a twin.
        for key in [k for k in desc.literal if k.lower() == command.lower()]:
            del desc.literal[key]
        desc.set(command, value)
