"""HTTP validation paths of the plugin that never reach the schedd.

Malformed input, hostile strings, absurd quantities, auth and the body size limit are all
answered before any schedd call, so no pool is needed here (the integration tests cover the
rest against the real pool).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from interlink_htcondor.core.classad_attrs import LastState
from interlink_htcondor.core.status_file import parse_status_file
from interlink_htcondor.service.app import create_app
from interlink_htcondor.service.json_logging import JsonFormatter, session_var
from interlink_htcondor.settings import Settings

UID = "0d3f1f9e-5c7a-4f43-9a38-6f1c2b9e7a10"


def pod(**over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello", "namespace": "default", "uid": UID},
        "spec": {
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
            "restartPolicy": "Never",
        },
    }
    p.update(over)
    return p


def create_body(p: dict[str, Any] | None = None) -> dict[str, Any]:
    p = p or pod()
    names = [c["name"] for c in p["spec"]["containers"]]
    return {
        "pod": p,
        "container": [
            {
                "name": n,
                "configMaps": None,
                "projectedvolumemaps": None,
                "secrets": None,
                "emptyDirs": None,
            }
            for n in names
        ],
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        storage={"shared_dir": str(tmp_path / "pods")},
        server={"max_request_bytes": 64 * 1024},
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def send(c: TestClient, method: str, path: str, body: Any, **kw: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return c.request(method, path, content=data, headers={"Content-Type": "application/json", **kw})


# ---------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "path,method",
    [("/create", "POST"), ("/status", "GET"), ("/getLogs", "GET"), ("/delete", "POST")],
)
@pytest.mark.parametrize(
    "body,fragment",
    [
        (b"{not json", "malformed JSON"),
        (b"", "empty"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
    ],
)
def test_malformed_json_is_400(
    client: TestClient, path: str, method: str, body: bytes, fragment: str
) -> None:
    r = send(client, method, path, body)
    assert r.status_code == 400, r.text
    assert fragment in r.text


def test_create_rejects_wrong_shapes(client: TestClient) -> None:
    r = send(client, "POST", "/create", [create_body(), create_body()])
    assert r.status_code == 422 and "array of 2" in r.text
    r = send(client, "POST", "/create", "a string")
    assert r.status_code == 422
    r = send(client, "POST", "/create", {"pod": None})
    assert r.status_code == 422 and "pod" in r.text


def test_create_requires_pod_identity(client: TestClient) -> None:
    p = pod()
    del p["metadata"]["uid"]
    r = send(client, "POST", "/create", create_body(p))
    assert r.status_code == 422
    assert "pod.metadata.uid" in r.text


def test_create_rejects_absurd_quantities(client: TestClient) -> None:
    p = pod()
    p["spec"]["containers"][0]["resources"] = {"requests": {"memory": "10Ei", "cpu": "1e30"}}
    r = send(client, "POST", "/create", create_body(p))
    assert r.status_code == 422, r.text
    assert "hello" in r.text  # names the pod


def test_create_refuses_an_amplifying_pod_with_the_limit(client: TestClient) -> None:
    # 39 levels of doubling in 2 KB once grew the plugin to 24 GB.
    p = pod()
    env = [{"name": "V0", "value": "x" * 40}]
    env += [{"name": f"V{i}", "value": f"$(V{i - 1})$(V{i - 1})"} for i in range(1, 40)]
    p["spec"]["containers"][0]["env"] = env
    r = send(client, "POST", "/create", create_body(p))
    assert r.status_code == 422, r.text
    assert r.text.startswith("pod default/hello cannot run: container 'main': env 'V12':")
    assert "131072 bytes" in r.text and "limits.max_value_bytes" in r.text


def test_create_refuses_a_hostile_requirements_annotation(client: TestClient) -> None:
    p = pod()
    p["metadata"]["annotations"] = {
        "htcondor.interlink.eu/requirements": "true ]\x1fexecutable = /bin/evil"
    }
    r = send(client, "POST", "/create", create_body(p))
    assert r.status_code == 422 and "requirements" in r.text


def test_create_rejects_malformed_quantity(client: TestClient) -> None:
    p = pod()
    p["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    r = send(client, "POST", "/create", create_body(p))
    assert r.status_code == 422 and "memory" in r.text


def test_create_rejects_hostile_names(client: TestClient) -> None:
    p = pod()
    p["metadata"]["name"] = "../../etc/passwd"
    r = send(client, "POST", "/create", create_body(p))
    assert r.status_code == 422
    p = pod()
    p["metadata"]["uid"] = "x; rm -rf /"
    r = send(client, "POST", "/create", create_body(p))
    assert r.status_code == 422


def test_create_one_element_array_is_accepted_up_to_translation(client: TestClient) -> None:
    # The 0.4 array form parses; the invalid memory shows it reached translation.
    p = pod()
    p["spec"]["containers"][0]["resources"] = {"limits": {"memory": "-1"}}
    r = send(client, "POST", "/create", [create_body(p)])
    assert r.status_code == 422 and "cannot run" in r.text


def test_status_requires_a_list(client: TestClient) -> None:
    r = send(client, "GET", "/status", {"metadata": {}})
    assert r.status_code == 422 and "list" in r.text


def test_logs_validation(client: TestClient) -> None:
    base = {"Namespace": "default", "PodUID": UID, "PodName": "hello", "ContainerName": "main"}
    r = send(client, "GET", "/getLogs", {**base, "Opts": {"Tail": -3}})
    assert r.status_code == 400 and "Tail" in r.text
    r = send(
        client,
        "GET",
        "/getLogs",
        {**base, "Opts": {"SinceSeconds": 5, "SinceTime": "2026-01-01T00:00:00Z"}},
    )
    assert r.status_code == 400 and "only one" in r.text
    r = send(client, "GET", "/getLogs", {"Namespace": "default"})
    assert r.status_code == 422 and "PodUID" in r.text
    r = send(client, "GET", "/getLogs", [base])
    assert r.status_code == 422


def test_delete_validation(client: TestClient) -> None:
    assert send(client, "POST", "/delete", [pod()]).status_code == 422
    r = send(client, "POST", "/delete", {"metadata": {"name": "x", "namespace": "y"}})
    assert r.status_code == 422 and "uid" in r.text


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_metrics_count_requests(client: TestClient) -> None:
    send(client, "GET", "/status", b"{bad")
    text = client.get("/metrics").text
    assert 'interlink_htcondor_requests_total{code="400",endpoint="/status"}' in text
    assert "interlink_htcondor_schedd_call_seconds" in text


# ---------------------------------------------------------------------------- size limit


def test_body_size_limit_by_content_length(client: TestClient) -> None:
    big = json.dumps(create_body()).encode() + b" " * (70 * 1024)
    r = send(client, "POST", "/create", big)
    assert r.status_code == 413


def test_body_size_limit_when_chunked(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    r = client.request(
        "POST", "/create", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413


# ---------------------------------------------------------------------------- auth


@pytest.fixture
def authed(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    s = settings.model_copy(
        update={"server": settings.server.model_copy(update={"bearer_token_file": token})}
    )
    with TestClient(create_app(s)) as c:
        yield c


def test_bearer_token_required(authed: TestClient) -> None:
    assert send(authed, "GET", "/status", b"{").status_code == 401
    r = send(authed, "GET", "/status", b"{", Authorization="Bearer wrong")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (
        send(authed, "GET", "/status", b"{", Authorization="Basic s3cret-token").status_code == 401
    )
    r = send(authed, "GET", "/status", b"{", Authorization="Bearer s3cret-token")
    assert r.status_code == 400  # through the gate, then refused as malformed
    assert authed.get("/metrics").status_code == 401


def test_health_needs_no_token(authed: TestClient) -> None:
    assert authed.get("/healthz").status_code == 200


def test_empty_token_file_is_refused(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    s = settings.model_copy(
        update={"server": settings.server.model_copy(update={"bearer_token_file": empty})}
    )
    with pytest.raises(ValueError, match="empty"):
        create_app(s)


# ---------------------------------------------------------------------------- logging


def test_json_log_lines_carry_the_session() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.session")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    tok = session_var.set("abc-123")
    try:
        logger.info("create", extra={"uid": UID})
    finally:
        session_var.reset(tok)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["session"] == "abc-123" and line["uid"] == UID and line["msg"] == "create"


def test_secret_values_never_reach_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    p = pod()
    p["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    body = create_body(p)
    body["container"][0]["secrets"] = [
        {"metadata": {"name": "s"}, "data": {"password": "c3VwZXJzZWNyZXQ="}}
    ]
    p["spec"]["containers"][0]["env"] = [{"name": "PW", "value": "supersecret"}]
    with caplog.at_level(logging.DEBUG):
        r = send(client, "POST", "/create", body, **{"InterLink-Http-Session": "sess-9"})
    assert r.status_code == 422
    assert "supersecret" not in caplog.text and "c3VwZXJzZWNyZXQ=" not in caplog.text
    assert "supersecret" not in r.text


# ---------------------------------------------------------------------------- status.json


def test_read_status_file(tmp_path: Path) -> None:
    f = tmp_path / "status.json"
    f.write_text(
        json.dumps(
            {
                "final": True,
                "init_containers": [
                    {
                        "name": "i",
                        "state": "terminated",
                        "exit_code": 0,
                        "reason": "Completed",
                        "message": "",
                        "started": 1,
                        "finished": 2,
                        "restart_count": 0,
                    }
                ],
                "containers": [
                    {
                        "name": "c",
                        "state": "terminated",
                        "exit_code": 127,
                        "reason": "Error",
                        "message": "exec: nope: not found",
                        "started": 3,
                        "finished": 4,
                        "restart_count": 1,
                        "is_started": False,
                        "ready": False,
                        "last_state": {
                            "exit_code": 137,
                            "reason": "Error",
                            "message": "Liveness probe failed",
                            "started": 1,
                            "finished": 2,
                        },
                    },
                    {"name": "bad", "state": "exploded"},
                ],
            }
        )
    )
    states = parse_status_file(f.read_bytes())
    assert set(states) == {"i", "c"}
    assert states["c"].exit_code == 127 and states["c"].message == "exec: nope: not found"
    assert states["c"].restarts == 1 and states["c"].last == LastState(137, "Error", 1, 2)
    assert (states["c"].is_started, states["c"].ready) == (False, False)
    assert states["i"].last is None and states["i"].ready is None
    assert parse_status_file(b"") == {}
    assert parse_status_file(b"[1,2") == {}
    assert parse_status_file(b"[" * 100_000) == {}  # the job writes the file: anything goes
    assert parse_status_file(b'{"containers": [{"name": 3, "state": "running"}]}') == {}
