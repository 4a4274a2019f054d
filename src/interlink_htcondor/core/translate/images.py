"""Image references -> what execute points run (admin image rules).

References already naming a transport (``docker://``, ``oras://``, ...) or an absolute
path pass through. Otherwise the first rule whose fnmatch pattern matches the reference
wins, its target filled from ``{image}``, ``{repository}``, ``{tag}`` (and ``{digest}``);
with no match the image is pulled as ``docker://{image}``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.settings import ImageRule

PASSTHROUGH = ("docker://", "oras://", "library://", "shub://", "docker-archive:", "oci-archive:")
DEFAULT_TARGET = "docker://{image}"
# The characters of an image reference (docker reference grammar, plus transports/paths).
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$|^/[A-Za-z0-9._/:@+-]+$")
_PLACEHOLDER = re.compile(r"\{(image|repository|tag|digest)\}")


def split_reference(image: str) -> tuple[str, str, str]:
    """``registry/repo:tag@digest`` -> (repository, tag, digest); tag defaults to latest."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        repository, tag = name[:colon], name[colon + 1 :]
    else:
        repository, tag = name, "" if digest else "latest"
    return repository, tag, digest


def check_reference(image: str, where: str) -> None:
    if len(image) > 1024 or not _REFERENCE.fullmatch(image):
        raise TranslationError(f"{where}: image {image!r} is not a valid image reference")


def resolve(image: str, rules: Sequence[ImageRule], where: str) -> str:
    check_reference(image, where)
    if image.startswith("/") or image.startswith(PASSTHROUGH):
        return image
    repository, tag, digest = split_reference(image)
    values = {"image": image, "repository": repository, "tag": tag, "digest": digest}
    target = DEFAULT_TARGET
    for rule in rules:
        if fnmatch.fnmatchcase(image, rule.match):
            target = rule.target
            break
    resolved = _PLACEHOLDER.sub(lambda m: values[m.group(1)], target)
    if "{" in resolved or "}" in resolved:
        raise TranslationError(
            f"{where}: image rule target {target!r} has an unknown placeholder "
            "(use {image}, {repository}, {tag} or {digest})"
        )
    if not resolved or any(ch.isspace() or ord(ch) < 0x20 for ch in resolved):
        raise TranslationError(f"{where}: image {image!r} maps to an unusable target")
    return resolved
