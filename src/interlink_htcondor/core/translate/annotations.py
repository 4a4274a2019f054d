"""Pod annotations that steer the job.

Ours live under ``htcondor.interlink.eu/``; an unknown key there is an error, never
ignored. Also read: the old plugin's ``htcondor-job.vk.io/singularity-options``, and
interLink's port-exposure/mesh commands, which run as the job's prologue where the site
allows it (``policy.prologue_namespaces``).

Every value is validated whole: no control character anywhere, and a ClassAd expression
must be exactly one expression, with nothing left over.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import classad2

from interlink_htcondor import ANNOTATION_PREFIX
from interlink_htcondor.core.translate.apptainer_options import parse_options
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.limits import MAX_SECONDS
from interlink_htcondor.core.translate.values import bounded
from interlink_htcondor.settings import Settings

ACCOUNTING_GROUP = "accounting-group"
REQUIREMENTS = "requirements"
CONTAINER_MODE = "container-mode"
APPTAINER_OPTIONS = "apptainer-options"
WALL_TIME = "wall-time"
SUBMIT = "submit."
KNOWN = (ACCOUNTING_GROUP, REQUIREMENTS, CONTAINER_MODE, APPTAINER_OPTIONS, WALL_TIME)

LEGACY_SINGULARITY_OPTIONS = "htcondor-job.vk.io/singularity-options"
WSTUNNEL_COMMANDS = "interlink.eu/wstunnel-client-commands"
MESH_PRE_EXEC = "slurm-job.vk.io/pre-exec"
# Commands interLink asks to run before the containers, in this order (the prologue).
PROLOGUE_ANNOTATIONS = (WSTUNNEL_COMMANDS, MESH_PRE_EXEC)

MODES = {
    "apptainer": "apptainer",
    "container_universe": "container_universe",
    "container-universe": "container_universe",
    "singularity_image": "singularity_image",
    "singularity-image": "singularity_image",
}
# Submit commands the translator owns: no annotation may set them, whatever the policy.
PROTECTED = frozenset(
    c.lower()
    for c in (
        "universe",
        "executable",
        "arguments",
        "args",
        "environment",
        "env",
        "initialdir",
        "iwd",
        "transfer_executable",
        "transfer_input_files",
        "transfer_output_files",
        "transfer_output_remaps",
        "should_transfer_files",
        "when_to_transfer_output",
        "output",
        "error",
        "input",
        "log",
        "leave_in_queue",
        "queue",
        "container_image",
        "transfer_container",
        "should_transfer_container",
        "accounting_group",
        "accounting_group_user",
        "batch_name",
        "requirements",
        "getenv",
        "kill_sig",
        "allowed_job_duration",
        "+WantIOProxy",
        "MY.WantIOProxy",
        "+SingularityImage",
        "MY.SingularityImage",
    )
)
_COMMAND = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)
_UNIT_SECONDS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}


@dataclass(frozen=True)
class PodOptions:
    mode: str | None = None
    accounting_group: str | None = None
    requirements: list[str] = field(default_factory=list)
    apptainer_args: list[str] = field(default_factory=list)
    container_apptainer_args: dict[str, list[str]] = field(default_factory=dict)
    wall_seconds: int | None = None
    submit: dict[str, str] = field(default_factory=dict)
    prologue: list[str] = field(default_factory=list)


def parse_duration(value: str, where: str) -> int:
    """Whole seconds (rounded up) from ``3600`` or a Go duration such as ``1h30m``;
    durations beyond ``MAX_SECONDS`` are refused."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = Decimal(text)
    else:
        pos, seconds = 0, Decimal(0)
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += Decimal(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise TranslationError(
                f"{where}: {value!r} is neither seconds nor a duration like 1h30m"
            )
    if seconds <= 0:
        raise TranslationError(f"{where}: {value!r} must be positive")
    if seconds > MAX_SECONDS:
        raise TranslationError(f"{where}: {value!r} is more than the limit of {MAX_SECONDS} s")
    return math.ceil(seconds)


def classad_expression(value: str, where: str, limit: int) -> str:
    """``value`` if it is exactly one ClassAd expression, with nothing left over.

    The parser stops quietly at a ``]``, so the value is also parsed inside an ad between
    two attributes whose names it cannot guess: anything that closes the parentheses, adds
    an attribute or ends the ad shows as a different ad.
    """
    bounded(value, where, limit, "limits.max_expression_bytes")
    nonce = uuid.uuid4().hex
    first, last = f"InterlinkCheck{nonce}A", f"InterlinkCheck{nonce}B"
    try:
        classad2.ExprTree(value)
        ads = list(classad2.parseAds(f"[ {first} = ({value}); {last} = 1 ]"))
    except Exception as e:  # the bindings raise ClassAdException (not exported for typing)
        raise TranslationError(f"{where}: {value!r} is not a ClassAd expression") from e
    if len(ads) != 1 or sorted(ads[0].keys()) != sorted([first, last]):
        raise TranslationError(f"{where}: {value!r} is not one single ClassAd expression")
    return value


def prologue(annotations: Mapping[str, str], settings: Settings, namespace: str) -> list[str]:
    """interLink's prologue commands, where the site lets this namespace run them."""
    asked = [k for k in PROLOGUE_ANNOTATIONS if annotations.get(k)]
    if not asked:
        return []
    allowed = settings.policy.prologue_namespaces
    if "*" not in allowed and namespace not in allowed:
        raise TranslationError(
            f"annotation {asked[0]}: this site does not run prologue commands (they run "
            f"outside any container) for pods of namespace {namespace!r} "
            "(policy.prologue_namespaces)"
        )
    for k in asked:
        if "\x00" in annotations[k]:
            raise TranslationError(f"annotation {k}: contains a NUL character")
    return [annotations[k] for k in asked]


def parse_annotations(
    annotations: Mapping[str, str],
    settings: Settings,
    containers: Sequence[str],
    namespace: str,
) -> PodOptions:
    mode: str | None = None
    group: str | None = None
    requirements: list[str] = []
    apptainer_args: list[str] = []
    per_container: dict[str, list[str]] = {}
    wall: int | None = None
    submit: dict[str, str] = {}
    policy, storage = settings.policy, settings.storage
    limit = settings.limits.max_expression_bytes
    allowed = {c.lower() for c in policy.allowed_submit_commands}

    def options(value: str, where: str) -> list[str]:
        return parse_options(value, where, policy, storage)

    legacy = annotations.get(LEGACY_SINGULARITY_OPTIONS)
    if legacy is not None:
        apptainer_args += options(legacy, f"annotation {LEGACY_SINGULARITY_OPTIONS}")

    for key in sorted(annotations):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        value = annotations[key]
        name = key[len(ANNOTATION_PREFIX) :]
        where = f"annotation {key}"
        if name == ACCOUNTING_GROUP:
            if len(value) > 255 or not _GROUP.fullmatch(value):
                raise TranslationError(f"{where}: {value!r} is not an accounting group name")
            group = value
        elif name == REQUIREMENTS:
            requirements.append(classad_expression(value, where, limit))
        elif name == CONTAINER_MODE:
            if value not in MODES:
                raise TranslationError(
                    f"{where}: {value!r} is not one of apptainer, container_universe, "
                    "singularity_image"
                )
            mode = MODES[value]
        elif name == APPTAINER_OPTIONS:
            apptainer_args += options(value, where)
        elif name.startswith(APPTAINER_OPTIONS + "."):
            target = name[len(APPTAINER_OPTIONS) + 1 :]
            if target not in containers:
                raise TranslationError(f"{where}: the pod has no container {target!r}")
            per_container[target] = options(value, where)
        elif name == WALL_TIME:
            wall = parse_duration(value, where)
        elif name.startswith(SUBMIT):
            command = name[len(SUBMIT) :]
            if not _COMMAND.fullmatch(command):
                raise TranslationError(f"{where}: {command!r} is not a submit command name")
            folded = command.lower()
            if (
                folded in PROTECTED
                or f"my.{folded}" in PROTECTED
                or folded.startswith(("interlink", "my.interlink"))
            ):
                raise TranslationError(f"{where}: {command!r} is set by the plugin itself")
            if folded not in allowed:
                raise TranslationError(
                    f"{where}: submit command {command!r} is not allowed on this site "
                    "(policy.allowed_submit_commands)"
                )
            if folded.startswith("my."):
                classad_expression(value, where, limit)  # becomes a job attribute as it is
            submit[command] = bounded(value, where, limit, "limits.max_expression_bytes")
        else:
            raise TranslationError(
                f"{where}: unknown annotation under {ANNOTATION_PREFIX} (known: "
                f"{', '.join(KNOWN)}, {APPTAINER_OPTIONS}.<container>, {SUBMIT}<command>)"
            )

    return PodOptions(
        mode=mode,
        accounting_group=group,
        requirements=requirements,
        apptainer_args=apptainer_args,
        container_apptainer_args=per_container,
        wall_seconds=wall,
        submit=submit,
        prologue=prologue(annotations, settings, namespace),
    )
