"""Apptainer options a pod asks for (``apptainer-options`` annotations): parsed, then
checked option by option against the site's allow-list, never passed as free text.

The text is split like a shell would (``shlex``) into argv items, which the wrapper hands
to apptainer as they are. Each option must be written ``--name``, ``--name=value``,
``--name value`` or ``-X value`` (no bundled short flags), and be one the site allows
(``policy.allowed_apptainer_options``) among those the plugin knows how to check
(``settings.APPTAINER_FLAG_OPTIONS`` and ``APPTAINER_VALUE_OPTIONS``). Values are
checked too: a bind's source must lie under ``storage.host_path_allow`` (as a hostPath
volume's must) and never reach the pods' sandboxes. The result is re-emitted in one
canonical form, so apptainer reads exactly what was checked.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.paths import (
    absolute_path,
    bindable,
    check_not_sandboxes,
    under_prefix,
)
from interlink_htcondor.settings import (
    APPTAINER_FLAG_OPTIONS,
    APPTAINER_VALUE_OPTIONS,
    PolicySettings,
    StorageSettings,
)

# The long name each short option stands for.
SHORT = {"-B": "--bind", "-S": "--scratch", "-e": "--cleanenv"}
BIND_OPTIONS = frozenset(["ro", "rw"])
# ``--no-mount`` takes these names, or absolute paths of the site's own bind paths.
NO_MOUNT_NAMES = frozenset(
    ["proc", "sys", "dev", "devpts", "home", "tmp", "hostfs", "cwd", "bind-paths"]
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _binds(value: str, where: str, storage: StorageSettings) -> None:
    if not storage.host_path_allow:
        raise TranslationError(
            f"{where}: binds are not allowed on this site (storage.host_path_allow is empty)"
        )
    for spec in value.split(","):
        parts = spec.split(":")
        if not spec or len(parts) > 3:
            raise TranslationError(f"{where}: {spec!r} is not src[:dst[:ro|rw]]")
        src = absolute_path(parts[0], f"{where}: bind source")
        bindable(src, f"{where}: bind source")
        if not under_prefix(src, storage.host_path_allow):
            raise TranslationError(
                f"{where}: bind source {src!r} is outside the allowed prefixes "
                f"{storage.host_path_allow} (storage.host_path_allow)"
            )
        check_not_sandboxes(src, storage, f"{where}: bind source")
        if len(parts) > 1:
            dst = absolute_path(parts[1], f"{where}: bind destination")
            if dst == "/":
                raise TranslationError(f"{where}: a bind destination must not be '/'")
        if len(parts) > 2 and parts[2] not in BIND_OPTIONS:
            raise TranslationError(
                f"{where}: bind option {parts[2]!r} is not allowed (only ro or rw)"
            )


def _scratch(value: str, where: str, storage: StorageSettings) -> None:
    for path in value.split(","):
        if absolute_path(path, f"{where}: scratch directory") == "/":
            raise TranslationError(f"{where}: a scratch directory must not be '/'")


def _no_mount(value: str, where: str, storage: StorageSettings) -> None:
    for name in value.split(","):
        if name not in NO_MOUNT_NAMES and not name.startswith("/"):
            raise TranslationError(
                f"{where}: --no-mount {name!r} is not one of {', '.join(sorted(NO_MOUNT_NAMES))} "
                "or an absolute path"
            )


CHECKS: dict[str, Callable[[str, str, StorageSettings], None]] = {
    "--bind": _binds,
    "--scratch": _scratch,
    "--no-mount": _no_mount,
}


def parse_options(
    text: str, where: str, policy: PolicySettings, storage: StorageSettings
) -> list[str]:
    """The pod's apptainer options as checked argv items; TranslationError otherwise."""
    if not policy.allow_apptainer_options:
        raise TranslationError(
            f"{where}: this site does not let pods set apptainer options "
            "(policy.allow_apptainer_options)"
        )
    if _CONTROL.search(text):
        raise TranslationError(f"{where}: contains control characters")
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise TranslationError(f"{where}: cannot split {text!r}: {e}") from e
    allowed = set(policy.allowed_apptainer_options)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if not (name.startswith("--") or re.fullmatch(r"-[A-Za-z]", name)):
            raise TranslationError(
                f"{where}: {word!r} is not an option (write --name, --name=value or -X value)"
            )
        if name not in allowed:
            raise TranslationError(
                f"{where}: option {name} is not allowed on this site (allowed: "
                f"{', '.join(sorted(allowed)) or 'none'}; policy.allowed_apptainer_options)"
            )
        canonical = SHORT.get(name, name)
        if name in APPTAINER_FLAG_OPTIONS:
            if eq:
                raise TranslationError(f"{where}: option {name} takes no value")
            out.append(canonical)
            continue
        assert name in APPTAINER_VALUE_OPTIONS
        if not eq:
            if i == len(words):
                raise TranslationError(f"{where}: option {name} needs a value")
            value = words[i]
            i += 1
        CHECKS[canonical](value, f"{where}: {name}", storage)
        out.append(f"{canonical}={value}")
    return out
