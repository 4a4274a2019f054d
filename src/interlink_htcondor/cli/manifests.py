"""Reading Kubernetes manifests given on the command line (``render``, ``submit``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from interlink_htcondor.cli import UsageError

Json = dict[str, Any]


def load_documents(path: Path) -> list[Json]:
    """Every object of a YAML/JSON file: several documents and ``kind: List`` unpacked."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{path} is not valid YAML/JSON: {e}") from None
    out: list[Json] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: expected Kubernetes objects, found {type(doc).__name__}")
        if doc.get("kind") == "List" or (doc.get("items") is not None and "kind" not in doc):
            out += [i for i in doc.get("items") or [] if isinstance(i, dict)]
        else:
            out.append(doc)
    return out


def of_kind(docs: Sequence[Json], kind: str, path: Path) -> list[Json]:
    """The objects of ``kind`` (an object without ``kind`` counts as a Pod)."""
    found = [d for d in docs if d.get("kind", "Pod") == kind]
    if not found:
        raise UsageError(f"{path} holds no {kind}")
    return found


def load_pod(path: Path) -> Json:
    """The one pod of a manifest, with namespace (``default``) and uid filled in when
    absent. A missing uid becomes a UUID derived from namespace and name, so that the same
    manifest always gives the same pod."""
    pods = [d for d in load_documents(path) if d.get("kind", "Pod") == "Pod"]
    if len(pods) != 1:
        raise UsageError(f"{path}: expected exactly one Pod, found {len(pods)}")
    pod = pods[0]
    meta = pod.get("metadata") or {}
    pod["metadata"] = meta
    if not meta.get("namespace"):
        meta["namespace"] = "default"
    if not meta.get("uid") and meta.get("name"):
        meta["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod:{meta['namespace']}/{meta['name']}"))
    return pod
