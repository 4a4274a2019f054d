"""Validate generated dask-kubernetes resources against the operator's own CRD schemas.

The schemas ship inside the ``dask_kubernetes`` package (the Helm chart's ``crds/``), so a
resource that passes here is what the API server will accept. Besides the JSON-schema
check, fields the schema does not declare are reported: the API server would silently
prune them, which turns a typo into a setting that quietly does nothing.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml

Json = dict[str, Any]

_CRD_DIR = ("deployment", "helm", "dask-kubernetes-operator", "crds")
_KIND_FILES = {
    "DaskCluster": "daskcluster.yaml",
    "DaskWorkerGroup": "daskworkergroup.yaml",
    "DaskJob": "daskjob.yaml",
    "DaskAutoscaler": "daskautoscaler.yaml",
}
_TOP_LEVEL = {"apiVersion", "kind", "metadata"}


class InvalidResource(ValueError):
    """A generated resource the operator's CRD would reject or prune."""


@functools.cache
def crd_schema(kind: str) -> Json:
    """The ``openAPIV3Schema`` of the served version of ``kind``'s CRD."""
    try:
        filename = _KIND_FILES[kind]
    except KeyError:
        raise ValueError(f"no dask-kubernetes CRD for kind {kind!r}") from None
    path = resources.files("dask_kubernetes.operator").joinpath(*_CRD_DIR, filename)
    crd = yaml.safe_load(path.read_text())
    for version in crd["spec"]["versions"]:
        if version.get("served", True) and version.get("storage", True):
            schema: Json = version["schema"]["openAPIV3Schema"]
            return schema
    raise ValueError(f"CRD {filename} serves no version")


def unknown_fields(obj: Any, schema: Json, path: str = "") -> list[str]:
    """Paths in ``obj`` that ``schema`` does not declare (what the API server prunes)."""
    out: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if isinstance(obj, dict):
        props: Json = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else key
            if key in props:
                out += unknown_fields(value, props[key], sub)
            elif isinstance(extra, dict):
                out += unknown_fields(value, extra, sub)
            elif extra is not True and not (path == "" and key in _TOP_LEVEL):
                out.append(sub)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def validation_errors(resource: Json) -> list[str]:
    """Every reason the operator's CRD would reject (or silently prune) ``resource``."""
    if resource.get("apiVersion") != "kubernetes.dask.org/v1":
        return [f"apiVersion must be kubernetes.dask.org/v1, not {resource.get('apiVersion')!r}"]
    schema = crd_schema(str(resource.get("kind")))
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path))
    ]
    errors += [
        f"{p}: not in the {resource['kind']} schema" for p in unknown_fields(resource, schema)
    ]
    return errors


def validate(resource: Json) -> Json:
    """Return ``resource`` unchanged, or raise ``InvalidResource`` listing every problem."""
    errors = validation_errors(resource)
    if errors:
        raise InvalidResource(
            f"{resource.get('kind')} {resource.get('metadata', {}).get('name')!r} does not "
            "match the dask-kubernetes CRD:\n  " + "\n  ".join(errors)
        )
    return resource
