"""The submit description, the sandbox files and the container modes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import classad2
import htcondor2
import pytest
from _translate_support import (
    UID,
    configmap,
    container,
    files_of,
    pod,
    request,
    secret,
    settings,
    spec_of,
)

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.jobspec import SPEC_FILE, WRAPPER_FILE
from interlink_htcondor.core.translate import TranslationError, sandbox_dir, translate
from interlink_htcondor.core.translate.submit import quote_arguments, quote_environment
from interlink_htcondor.core.translate.wrapper import wrapper_source

SHARED = "/srv/interlink/pods"


def cfg(**kw: Any) -> Any:
    storage = {"shared_dir": SHARED, **kw.pop("storage", {})}
    return settings(storage=storage, **kw)


def ad_value(expr: str) -> Any:
    return classad2.ExprTree(expr).eval()


def test_sandbox_dir() -> None:
    s = cfg()
    assert sandbox_dir(s, "team-a", "demo", UID) == Path(f"{SHARED}/team-a_demo_{UID}")
    long_name = "a" * 250
    d = sandbox_dir(s, "ns", long_name, UID)
    assert len(d.name) <= 255 and d.name.endswith(UID) and d.name.startswith("ns_aaa")


@pytest.mark.parametrize(
    ("ns", "name", "uid"),
    [
        ("../etc", "demo", UID),
        ("team-a", "../../etc", UID),
        ("team-a", "demo", "../x"),
        ("team-a", "demo/x", UID),
        ("Team", "demo", UID),
        ("team_a", "demo", UID),
        ("team-a", "demo", "a/b"),
        ("team-a", "demo", ".."),
        ("team-a", "demo\n", UID),
        ("team-a", "demo", ""),
        ("", "demo", UID),
    ],
)
def test_sandbox_dir_refuses_escapes(ns: str, name: str, uid: str) -> None:
    with pytest.raises(TranslationError):
        sandbox_dir(cfg(), ns, name, uid)


def test_translate_refuses_unsafe_identity() -> None:
    with pytest.raises(TranslationError, match="pod name"):
        translate(request(pod(name="../../etc")), cfg())


def test_shared_mode_description() -> None:
    plan = translate(request(pod(container(command=["echo", "hello"]))), cfg())
    s = plan.submit
    sandbox = f"{SHARED}/team-a_demo_{UID}"
    assert s["universe"] == "vanilla"
    assert s["executable"] == f"{sandbox}/{WRAPPER_FILE}"
    assert s["arguments"] == SPEC_FILE
    assert s["initialdir"] == sandbox
    assert s["transfer_executable"] == "false"
    assert s["should_transfer_files"] == "NO"
    assert (s["output"], s["error"]) == ("wrapper.out", "wrapper.err")
    assert s["+WantIOProxy"] == "true"
    assert s["batch_name"] == "team-a/demo"
    assert s["kill_sig"] == "SIGTERM"
    assert s["job_max_vacate_time"] == "45"
    assert "allowed_job_duration" not in s
    assert "transfer_input_files" not in s
    assert plan.transfer_input == ()
    assert (plan.pod_uid, plan.name, plan.namespace) == (UID, "demo", "team-a")
    assert plan.containers == ("main",) and plan.init_containers == ()


def test_identity_attributes_are_classad_string_literals() -> None:
    p = pod(container("app"), container("side"), init=[container("setup")])
    s = translate(request(p), cfg(policy={"instance": 'odd "name" \\ here'})).submit
    assert ad_value(s["+" + classad_attrs.POD_UID]) == UID
    assert ad_value(s["+" + classad_attrs.POD_NAME]) == "demo"
    assert ad_value(s["+" + classad_attrs.POD_NAMESPACE]) == "team-a"
    assert ad_value(s["+" + classad_attrs.CONTAINERS]) == "app,side"
    assert ad_value(s["+" + classad_attrs.INIT_CONTAINERS]) == "setup"
    assert ad_value(s["+" + classad_attrs.IMAGES]) == "busybox:1.36,busybox:1.36,busybox:1.36"
    assert ad_value(s["+" + classad_attrs.SANDBOX]) == f"{SHARED}/team-a_demo_{UID}"
    assert ad_value(s["+" + classad_attrs.PLUGIN]) == 'odd "name" \\ here'


def test_description_parses_in_the_bindings() -> None:
    plan = translate(
        request(pod(annotations={"htcondor.interlink.eu/requirements": 'Arch == "X86_64"'})), cfg()
    )
    sub = htcondor2.Submit(plan.submit)
    assert sorted(k.lower() for k in sub) == sorted(
        ("MY." + k[1:] if k.startswith("+") else k).lower() for k in plan.submit
    )
    assert sub.expand("requirements") == '(Arch == "X86_64")'
    assert sub.expand("MY.InterlinkPodName") == '"demo"'


def test_leave_in_queue_and_retention() -> None:
    s = translate(request(pod()), cfg(policy={"retention_seconds": 3600})).submit
    expr = classad2.ExprTree(s["leave_in_queue"])
    now = int(time.time())

    def keeps(status: int, completed: int) -> bool:
        ad = classad2.ClassAd({"JobStatus": status, "CompletionDate": completed})
        ad["LeaveInQueue"] = expr
        return bool(ad.eval("LeaveInQueue"))

    assert keeps(4, now - 60)  # completed a minute ago: kept for status and logs
    assert not keeps(4, now - 7200)  # retention passed
    assert not keeps(3, now)  # removed jobs leave
    assert (
        translate(request(pod()), cfg(policy={"retention_seconds": 0})).submit["leave_in_queue"]
        == "false"
    )


def test_allowed_job_duration_is_deadline_plus_grace() -> None:
    s = translate(
        request(pod(activeDeadlineSeconds=300, terminationGracePeriodSeconds=10)), cfg()
    ).submit
    assert s["allowed_job_duration"] == str(300 + 10 + 60)
    assert s["job_max_vacate_time"] == "25"


def test_spool_mode_description() -> None:
    p = pod(
        container(volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}]),
        volumes=[{"name": "cfg", "configMap": {"name": "c"}}],
    )
    plan = translate(
        request(p, configmaps=[configmap("c", {"a": "1"})]), cfg(storage={"mode": "spool"})
    )
    s = plan.submit
    assert s["should_transfer_files"] == "YES"
    assert s["transfer_executable"] == "true"
    assert s["when_to_transfer_output"] == "ON_EXIT_OR_EVICT"
    assert s["transfer_input_files"] == f"{SPEC_FILE}, {WRAPPER_FILE}, volumes"
    assert s["transfer_output_files"] == "logs, status.json"
    assert plan.transfer_input == (SPEC_FILE, WRAPPER_FILE, "volumes")
    no_vol = translate(request(pod()), cfg(storage={"mode": "spool"}))
    assert no_vol.transfer_input == (SPEC_FILE, WRAPPER_FILE)


def test_sandbox_files_and_modes() -> None:
    p = pod(
        container(volumeMounts=[{"name": "s", "mountPath": "/s"}]),
        volumes=[{"name": "s", "secret": {"secretName": "sec"}}],
    )
    plan = translate(
        request(p, secrets=[secret("sec", {"k": "v"})]),
        cfg(containers={"python": "/usr/bin/python3.11"}),
    )
    files = files_of(plan)
    assert list(files)[:2] == [SPEC_FILE, WRAPPER_FILE]
    assert files[SPEC_FILE][1] == 0o600  # env values may be secrets
    content, mode = files[WRAPPER_FILE]
    assert mode == 0o755
    first, _, rest = content.partition(b"\n")
    assert first == b"#!/usr/bin/python3.11"
    assert rest == wrapper_source().partition(b"\n")[2]
    assert files["volumes/s/k"] == (b"v", 0o600)
    assert all(".." not in f.path.split("/") and not f.path.startswith("/") for f in plan.files)


@pytest.mark.parametrize("python", ["python3", "/usr/bin/env python3 -E -s", "/usr/bin/py\n"])
def test_bad_interpreter_setting(python: str) -> None:
    with pytest.raises(TranslationError, match=r"containers\.python"):
        translate(request(pod()), cfg(containers={"python": python}))


def test_default_interpreter_is_env_python3() -> None:
    content = files_of(translate(request(pod()), cfg()))[WRAPPER_FILE][0]
    assert content.startswith(b"#!/usr/bin/env python3\n")


def test_unsafe_shared_dir() -> None:
    with pytest.raises(TranslationError, match=r"storage\.shared_dir"):
        translate(request(pod()), settings(storage={"shared_dir": "/srv/my pods"}))
    with pytest.raises(TranslationError, match=r"storage\.shared_dir"):
        translate(request(pod()), settings(storage={"shared_dir": "relative/dir"}))


def test_job_spec_is_complete() -> None:
    p = pod(
        container(
            "app",
            command=["python3", "-c", "print(1)"],
            workingDir="/work",
            lifecycle={"preStop": {"exec": {"command": ["/bin/sh", "-c", "touch /tmp/stopped"]}}},
        ),
        init=[container("setup", args=["--init"])],
        restartPolicy="OnFailure",
        activeDeadlineSeconds=120,
        terminationGracePeriodSeconds=5,
    )
    spec = spec_of(
        translate(request(p), cfg(containers={"chirp": "/usr/libexec/condor/condor_chirp"}))
    )
    assert spec.pod.uid == UID and spec.pod.name == "demo" and spec.pod.namespace == "team-a"
    assert spec.restart_policy == "OnFailure"
    assert spec.active_deadline_seconds == 120
    assert spec.termination_grace_seconds == 5
    assert spec.chirp == "/usr/libexec/condor/condor_chirp"
    assert spec.apptainer.binary == "apptainer"
    app = spec.containers[0]
    assert (app.mode, app.argv, app.working_dir) == ("exec", ["python3", "-c", "print(1)"], "/work")
    assert app.pre_stop is not None and app.pre_stop.argv == ["/bin/sh", "-c", "touch /tmp/stopped"]
    init = spec.init_containers[0]
    assert (init.name, init.mode, init.argv) == ("setup", "run", ["--init"])


def test_default_grace_is_kubernetes() -> None:
    p = pod()
    del p["spec"]["terminationGracePeriodSeconds"]
    assert spec_of(translate(request(p), cfg())).termination_grace_seconds == 30


@pytest.mark.parametrize(
    ("lifecycle", "match"),
    [
        ({"preStop": {"tcpSocket": {"port": 80}}}, "tcpSocket is not a lifecycle handler"),
        ({"preStop": {"sleep": {"seconds": 31}}}, "at most the pod's terminationGracePeriod"),
        ({"postStart": {}}, "postStart: needs exactly one of exec, httpGet or sleep"),
        ({"preStop": {"exec": {"command": []}}}, "needs a command"),
    ],
)
def test_unsupported_hooks(lifecycle: dict[str, Any], match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        translate(request(pod(container(lifecycle=lifecycle))), cfg())


def test_container_name_rules() -> None:
    with pytest.raises(TranslationError, match="unique: main"):
        translate(request(pod(container("main"), init=[container("main")])), cfg())
    with pytest.raises(TranslationError, match="container name"):
        translate(request(pod(container("Main_1"))), cfg())
    with pytest.raises(TranslationError, match="sidecar"):
        translate(request(pod(init=[container("proxy", restartPolicy="Always")])), cfg())


def test_working_dir_must_be_absolute() -> None:
    with pytest.raises(TranslationError, match="workingDir"):
        translate(request(pod(container(workingDir="rel"))), cfg())


# ----------------------------------------------------------------- container modes


def test_container_universe() -> None:
    c = container(
        "job",
        "python:3.11",
        command=["/usr/bin/python3", "-c", "import os; print(os.environ['MSG'])"],
        args=["it's", 'say "hi"', "", "$HOME $(X)", "a b"],
        env=[{"name": "MSG", "value": "hello 'world' \"x\" 5%"}],
        resources={"requests": {"cpu": "2"}},
    )
    s = translate(
        request(pod(c)),
        cfg(
            containers={
                "mode": "container_universe",
                "image_rules": [{"match": "python:*", "target": "/images/py.sif"}],
            }
        ),
    ).submit
    assert s["universe"] == "container"
    assert s["container_image"] == "/images/py.sif"
    assert s["transfer_container"] == "false"
    assert s["executable"] == "/usr/bin/python3"
    assert s["transfer_executable"] == "false"
    assert (s["output"], s["error"]) == ("job.stdout", "job.stderr")
    assert "+WantIOProxy" not in s
    sub = htcondor2.Submit(s)
    # $ reaches the job literally: the bindings read $(DOLLAR) back as $
    assert sub.expand("arguments") == (
        "\"'-c' 'import os; print(os.environ[''MSG''])' 'it''s' 'say \"\"hi\"\"' '' "
        "'$HOME $(X)' 'a b'\""
    )
    assert sub.expand("environment") == "\"MSG='hello ''world'' \"\"x\"\" 5%'\""
    # the container runs in its scratch directory; output comes back at the end
    assert s["should_transfer_files"] == "YES"
    assert s["request_cpus"] == "2"


def test_singularity_image_mode() -> None:
    c = container("job", "docker://alpine:3", command=["/bin/echo", "hi"])
    p = pod(c, annotations={"htcondor.interlink.eu/container-mode": "singularity_image"})
    s = translate(request(p), cfg()).submit
    assert s["universe"] == "vanilla"
    assert ad_value(s["+SingularityImage"]) == "docker://alpine:3"
    assert s["executable"] == "/bin/echo"
    assert s["arguments"] == "\"'hi'\""


def test_container_universe_with_image_entrypoint() -> None:
    s = translate(
        request(pod(container("job"))), cfg(containers={"mode": "container_universe"})
    ).submit
    assert "executable" not in s and "arguments" not in s
    assert s["container_image"] == "docker://busybox:1.36"
    assert "transfer_container" not in s


@pytest.mark.parametrize(
    ("p", "match"),
    [
        (pod(container("a"), container("b")), "exactly one container"),
        (pod(init=[container("i")]), "exactly one container"),
        (
            pod(
                container(volumeMounts=[{"name": "e", "mountPath": "/e"}]),
                volumes=[{"name": "e", "emptyDir": {}}],
            ),
            "no volume mounts",
        ),
        (pod(container(workingDir="/w")), "no workingDir"),
        (pod(container(lifecycle={"preStop": {"exec": {"command": ["x"]}}})), "no lifecycle"),
        (pod(container(readinessProbe={"tcpSocket": {"port": 80}})), "no probes"),
        (
            pod(annotations={"htcondor.interlink.eu/apptainer-options": "--nv"}),
            "no apptainer options",
        ),
        (pod(annotations={"interlink.eu/wstunnel-client-commands": "wstunnel"}), "no prologue"),
        (
            pod(
                container(
                    env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
                )
            ),
            "no environment from secrets",
        ),
        (pod(container(envFrom=[{"secretRef": {"name": "s"}}])), "no environment from secrets"),
    ],
)
def test_container_modes_refuse_what_they_cannot_run(p: dict[str, Any], match: str) -> None:
    # The site allows the features, so that the container mode is what refuses them.
    policy = {"allow_apptainer_options": True, "prologue_namespaces": ["*"]}
    with pytest.raises(TranslationError, match=match) as e:
        translate(request(p), cfg(containers={"mode": "container_universe"}, policy=policy))
    assert "containers.mode apptainer" in str(e.value)


@pytest.mark.parametrize(
    ("c", "match"),
    [
        (container(command=["python3", "x"]), "absolute path"),
        (container(args=["only-args"]), "needs a command"),
        (container(command=["/bin/echo", "line\nbreak"]), "line break"),
        (container(command=["/bin/echo"], env=[{"name": "X", "value": "a\nb"}]), "line break"),
        (
            container(command=["/bin/echo"], env=[{"name": "my.var", "value": "v"}]),
            "letters, digits and '_'",
        ),
        (container(command=["/bin/sh", "-c", "echo $$$$"]), "cannot be expressed"),
        (container(command=["/bin/true"], env=[{"name": "X", "value": "$(id)"}]), "evaluate"),
        (container(command=["/bin/true"], env=[{"name": "X", "value": "`id`"}]), "evaluate"),
        (container(command=["/bin/true"], env=[{"name": "X", "value": "a\\b"}]), "evaluate"),
    ],
)
def test_container_universe_errors(c: dict[str, Any], match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        translate(request(pod(c)), cfg(containers={"mode": "container_universe"}))


def test_singularity_image_needs_a_command() -> None:
    with pytest.raises(TranslationError, match="needs a command"):
        translate(request(pod()), cfg(containers={"mode": "singularity_image"}))


def test_argument_and_environment_quoting() -> None:
    assert (
        quote_arguments(["a", "b c", "it's", '"q"', ""], "x")
        == "\"'a' 'b c' 'it''s' '\"\"q\"\"' ''\""
    )
    assert quote_environment([("A", "1"), ("B", "x y'z")], "x") == "\"A='1' B='x y''z'\""
    with pytest.raises(TranslationError, match="line break"):
        quote_arguments(["a\r\nb"], "x")
