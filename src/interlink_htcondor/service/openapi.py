"""The plugin's OpenAPI document (served on ``/openapi.json``, behind the bearer token when
one is set), built from the wire models in ``core.models``.

It describes the wire as interLink speaks it (``docs/plugin.md``), not interLink's
published plugin spec where that drifts from the Go structs: camelCase Kubernetes objects,
``/create`` taking one object (or interLink 0.4's one-element array), ``GET`` bodies on
``/status`` and ``/getLogs``, plain-text errors, and the ping's JSON answers. The API
fuzzing suite (``tests/unit/test_api_fuzzing.py``) checks every answer against it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from interlink_htcondor import __version__
from interlink_htcondor.core import models

_REF = "#/components/schemas/{model}"
_TEXT = {"text/plain": {"schema": {"type": "string"}}}

# Answers other than 200, as ``service.errors`` lists them.
_ERRORS = {
    "400": "Malformed JSON, or option values the plugin cannot honour.",
    "404": "Unknown pod or container.",
    "408": "The body was not received within `server.request_timeout_seconds`.",
    "413": "Body larger than `server.max_request_bytes`.",
    "422": "A body of the wrong shape, or a pod the plugin cannot run; the message says why.",
    "500": "An unexpected error (the message names the session to find in the log).",
    "503": "The schedd cannot be reached or does not answer in time.",
    "507": "No space left for the pod's sandbox.",
}


def document(*, bearer: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``bearer``: every path but the probes needs the token."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel], mode: str = "validation") -> dict[str, str]:
        js = model.model_json_schema(by_alias=True, mode=mode, ref_template=_REF)  # type: ignore[arg-type]
        schemas.update(js.pop("$defs", {}))
        schemas[model.__name__] = js
        return {"$ref": _REF.format(model=model.__name__)}

    create = ref(models.CreateRequest)
    # /status and /delete receive whole core/v1 Pods but read only this of them (leniently:
    # a pod lacking it is left out, or refused with a 422 by /delete).
    schemas["PodReference"] = {
        "type": "object",
        "description": "A core/v1 Pod; the fields the plugin reads (others are ignored).",
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "uid": {"type": "string"},
                    "annotations": {
                        "type": "object",
                        "properties": {"JobID": {"type": "string"}},
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "spec": {
                "type": "object",
                "properties": {
                    "terminationGracePeriodSeconds": {"type": "integer"},
                    **{
                        key: {
                            "type": "array",
                            "items": {"$ref": _REF.format(model="ContainerName")},
                        }
                        for key in ("containers", "initContainers")
                    },
                },
            },
        },
    }
    schemas["ContainerName"] = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "image": {"type": "string"}},
    }
    pod = {"$ref": _REF.format(model="PodReference")}
    pod_status = ref(models.PodStatus, "serialization")
    ping = ref(models.PingResponse, "serialization")
    ping_error = {
        "type": "object",
        "required": ["status", "message"],
        "properties": {"status": {"const": "error"}, "message": {"type": "string"}},
    }
    probe = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "schedd": {"type": "string"}},
    }

    def json(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    def operation(
        summary: str,
        body: dict[str, Any] | None,
        ok: dict[str, Any],
        errors: tuple[str, ...],
        *,
        extra: dict[str, Any] | None = None,
        public: bool = False,
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
        for code in errors:
            responses[code] = {"description": _ERRORS[code], "content": _TEXT}
        responses.update(extra or {})
        if bearer and not public:
            responses["401"] = {"description": "No or wrong bearer token.", "content": _TEXT}
        op: dict[str, Any] = {"summary": summary, "responses": responses}
        if body is not None:
            op["requestBody"] = {"required": True, "content": json(body)}
        if public:
            op["security"] = []
        return op

    common = ("400", "408", "413", "422", "500")
    paths: dict[str, Any] = {
        "/create": {
            "post": operation(
                "Create one pod's HTCondor job (once per pod UID)",
                {
                    "oneOf": [
                        create,
                        {"type": "array", "items": create, "minItems": 1, "maxItems": 1},
                    ]
                },
                json(ref(models.CreateResponse, "serialization")),
                (*common, "503", "507"),
            )
        },
        "/status": {
            "get": operation(
                "The status of each pod asked about; with `[]`, interLink's ping",
                {"type": "array", "items": pod},
                json({"oneOf": [{"type": "array", "items": pod_status}, ping]}),
                common,
                extra={
                    "503": {
                        "description": "The pool is down (ping), or the schedd cannot be "
                        "queried and no recent snapshot is left.",
                        "content": {**json(ping_error), **_TEXT},
                    }
                },
            )
        },
        "/getLogs": {
            "get": operation(
                "A container's logs (plain text; streamed with Opts.Follow)",
                ref(models.LogRequest),
                _TEXT,
                (*common, "404", "503"),
            )
        },
        "/delete": {
            "post": operation(
                "Remove the pod's job and its files (200 for an unknown pod too)",
                pod,
                _TEXT,
                (*common, "503"),
            )
        },
        "/healthz": {
            "get": operation("Liveness: the process serves", None, json(probe), (), public=True)
        },
        "/readyz": {
            "get": operation(
                "Readiness: a schedd call succeeded recently",
                None,
                json(probe),
                (),
                extra={"503": {"description": "Not ready", "content": json(probe)}},
                public=True,
            )
        },
        "/metrics": {"get": operation("Prometheus metrics", None, _TEXT, ())},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "interlink-htcondor",
            "version": __version__,
            "description": "interLink's plugin API, as this plugin speaks it.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if bearer:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
