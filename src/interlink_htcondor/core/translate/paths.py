"""Path checks: nothing from a pod may escape the sandbox or confuse apptainer's ``-B``."""

from __future__ import annotations

import posixpath
import re

from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.settings import StorageSettings

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_UID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?$")
# Characters that end a path in ``apptainer -B src:dst:opts,src2:...``.
_BIND_SEPARATORS = (",", ":")
_NAME_MAX = 255


def check_dns_label(value: str, what: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise TranslationError(
            f"{what} {value!r} is not a DNS label (lowercase letters, digits and '-', "
            "at most 63 characters)"
        )
    return value


def check_dns_subdomain(value: str, what: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise TranslationError(
            f"{what} {value!r} is not a DNS subdomain (lowercase letters, digits, '-' and "
            "'.', at most 253 characters)"
        )
    return value


def check_uid(value: str) -> str:
    if not _UID.fullmatch(value):
        raise TranslationError(
            f"pod uid {value!r} is not UUID-like (letters, digits and '-', at most 64)"
        )
    return value


def sandbox_name(namespace: str, name: str, uid: str) -> str:
    """``<namespace>_<name>_<uid>``; '_' cannot occur in any part, so it is unambiguous."""
    check_dns_label(namespace, "pod namespace")
    check_dns_subdomain(name, "pod name")
    check_uid(uid)
    full = f"{namespace}_{name}_{uid}"
    if len(full) <= _NAME_MAX:
        return full
    # Long pod names would overflow a file name; the uid alone keeps it unique.
    keep = _NAME_MAX - len(namespace) - len(uid) - 2
    return f"{namespace}_{name[:keep].rstrip('.-')}_{uid}"


def _no_controls(value: str, what: str) -> None:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise TranslationError(f"{what} {value!r} contains control characters")


def relative_path(value: str, what: str) -> str:
    """A relative path inside a volume or the sandbox: no '..', no absolute, no empties."""
    _no_controls(value, what)
    if value.startswith("/"):
        raise TranslationError(f"{what} {value!r} must be a relative path")
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise TranslationError(
            f"{what} {value!r} must not contain '..', '.' or empty path elements"
        )
    if any(len(p.encode()) > _NAME_MAX for p in parts):
        raise TranslationError(f"{what} {value!r} has a path element that is too long")
    return value


def bindable(value: str, what: str) -> None:
    for sep in _BIND_SEPARATORS:
        if sep in value:
            raise TranslationError(
                f"{what} {value!r} contains {sep!r}, which apptainer's bind syntax cannot express"
            )


def absolute_path(value: str, what: str) -> str:
    """An absolute path, normalised; '..' elements are refused rather than resolved."""
    _no_controls(value, what)
    if not value.startswith("/"):
        raise TranslationError(f"{what} {value!r} must be an absolute path")
    if ".." in value.split("/"):
        raise TranslationError(f"{what} {value!r} must not contain '..'")
    return posixpath.normpath(value).replace("//", "/")


def mount_path(value: str, what: str) -> str:
    path = absolute_path(value, what)
    bindable(path, what)
    if path == "/":
        raise TranslationError(f"{what} must not be '/'")
    return path


def under_prefix(path: str, prefixes: list[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one (whole path elements only)."""
    for prefix in prefixes:
        p = posixpath.normpath(prefix)
        if p == "/" or path == p or path.startswith(p.rstrip("/") + "/"):
            return True
    return False


def check_not_sandboxes(path: str, storage: StorageSettings, what: str) -> None:
    """Refuse a host path that holds, or lies within, the pods' sandboxes: every pod's
    Secrets are there, readable by the one job user all pods run as."""
    root = posixpath.normpath(str(storage.shared_dir))
    if under_prefix(path, [root]) or under_prefix(root, [path]):
        raise TranslationError(
            f"{what} {path!r} would reach the pods' sandboxes ({root}, storage.shared_dir)"
        )
