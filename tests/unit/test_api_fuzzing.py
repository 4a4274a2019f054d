"""API fuzzing: schemathesis generates requests from the plugin's own OpenAPI document
(``/openapi.json``) and sends them to the real app on the in-memory gateway. No answer may
be a 500, and every answer must match the document (status code, content type, body
schema). Bounded in examples and time so that the run stays under a minute."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from _fake_gateway import FakeGateway
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from test_service_endpoints import make_settings

from interlink_htcondor.service.app import create_app

# Examples per operation, so that the run stays under a minute on the 2-core machine:
# generating a whole pod from its schema is slow (seconds); the translation of pods is
# fuzzed at length by the hostile-input suite.
DEFAULT_EXAMPLES = 30
EXAMPLES = {"/create": 4}
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_document_and_none_is_a_500(
    tmp_path: Path, mode: GenerationMode
) -> None:
    """Positive: requests the document allows; negative: requests it does not (which must
    get a documented 4xx, never a 500)."""
    app = create_app(make_settings(tmp_path), gateway=FakeGateway())
    # One client, one event loop, for the whole run (as uvicorn serves the app).
    with TestClient(app) as client:
        api = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
        assert {op.path for op in operations} >= {"/create", "/status", "/getLogs", "/delete"}
        for operation in operations:
            if mode is GenerationMode.NEGATIVE and not operation.body:
                continue  # nothing to get wrong

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=EXAMPLES.get(operation.path, DEFAULT_EXAMPLES),
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                request = case.as_transport_kwargs(base_url=str(client.base_url))
                response = client.request(
                    request["method"],
                    request["url"],
                    headers=request.get("headers"),
                    params=request.get("params"),
                    content=_content(request),
                )
                case.validate_response(response, checks=CHECKS)

            fuzz()


def test_the_document_is_served_behind_the_token(tmp_path: Path) -> None:
    token = "s3cret"
    app = create_app(make_settings(tmp_path), gateway=FakeGateway(), bearer_token=token.encode())
    with TestClient(app) as c:
        assert c.get("/openapi.json").status_code == 401
        doc = c.get("/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    assert doc["openapi"].startswith("3.1")
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    # The wire, not the drifted published spec: camelCase Pods, interLink's key names.
    schemas = doc["components"]["schemas"]
    assert "jobScript" in schemas["CreateRequest"]["properties"]
    assert "projectedvolumemaps" in schemas["RetrievedContainer"]["properties"]
    assert "PodUID" in doc["components"]["schemas"]["CreateResponse"]["properties"]
    assert "initContainers" in doc["components"]["schemas"]["PodSpec"]["properties"]


def _content(request: dict[str, Any]) -> bytes | None:
    """The body the case's transport arguments describe, as bytes."""
    if "json" in request:
        return json.dumps(request["json"]).encode()
    data = request.get("data", request.get("content"))
    return data.encode() if isinstance(data, str) else data
