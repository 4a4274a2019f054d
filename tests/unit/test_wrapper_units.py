"""The job wrapper's pure parts, and its agreement with the plugin-side contracts."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import time

import pytest
from _wrapper_harness import WRAPPER, oldest_python

from interlink_htcondor.core import classad_attrs, jobspec
from interlink_htcondor.jobside import wrapper as w


def test_source_is_python36_syntax() -> None:
    ast.parse(WRAPPER.read_text(), feature_version=(3, 6))


def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(WRAPPER.read_text())
    stdlib = {
        "contextlib", "http", "json", "os", "re", "select", "shutil", "signal", "socket",
        "ssl", "subprocess", "sys", "threading", "time", "typing", "urllib",
    }  # fmt: skip
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= stdlib
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None and node.level == 0
            assert node.module.split(".")[0] in stdlib


def test_compiles_with_the_oldest_python_here() -> None:
    python = oldest_python()
    if python is None:  # the ast check above still holds
        pytest.skip("no Python 3.6/3.7 interpreter on this machine")
    subprocess.run([python, "-m", "py_compile", str(WRAPPER)], check=True)


@pytest.mark.parametrize(
    "state",
    [
        classad_attrs.ReportedState("waiting", 0, "", 0, 0, 0, False, False),
        classad_attrs.ReportedState("running", 0, "", 1700000000, 0, 0, True, True),
        classad_attrs.ReportedState("running", 0, "", 1700000000, 0, 2, True, False),
        classad_attrs.ReportedState(
            "terminated", 137, "OOMKilled", 1700000000, 1700000042, 0, False, False
        ),
        classad_attrs.ReportedState(
            "waiting",
            137,
            "CrashLoopBackOff",
            1700000000,
            1700000001,
            3,
            False,
            False,
            classad_attrs.LastState(137, "Error", 1699999990, 1700000000),
            "back-off 10s restarting failed container=web: Liveness probe failed: "
            'Get "http://127.0.0.1:8080/": dial tcp 127.0.0.1:8080: connect: refused \\ \n x',
        ),
    ],
)
def test_state_encoding_matches_attrs(state: classad_attrs.ReportedState) -> None:
    last = state.last
    encoded = w.encode_state(
        state.state,
        state.exit_code,
        state.reason,
        state.started,
        state.finished,
        state.restarts,
        ("S" if state.is_started else "") + ("R" if state.ready else ""),
        None if last is None else (last.exit_code, last.reason, last.started, last.finished),
        state.message,
    )
    assert encoded == classad_attrs.encode_state(state)
    assert '"' not in encoded and "\\" not in encoded and "\n" not in encoded
    decoded = classad_attrs.decode_state(encoded)
    assert decoded == dataclasses.replace(state, message=classad_attrs.clean_message(state.message))


def test_clean_message_matches_attrs() -> None:
    for text in ['a "b" \\ c\n\td\x1b', "x" * 5000, "ünïcode ✓", ""]:
        assert w.clean_message(text) == classad_attrs.clean_message(text)


def test_state_attribute_names_match_attrs() -> None:
    for i in range(3):
        assert w.state_attr("init", i) == classad_attrs.state_attr("init", i)
        assert w.state_attr("app", i) == classad_attrs.state_attr("app", i)


def test_reasons_are_single_tokens() -> None:
    reasons = [
        v for k, v in vars(w).items() if k.isupper() and isinstance(v, str) and v[:1].isupper()
    ]
    assert "OOMKilled" in reasons and "DeadlineExceeded" in reasons
    for reason in reasons:
        assert reason.split() == [reason] and '"' not in reason


def test_constants_match_jobspec() -> None:
    assert w.SPEC_VERSION == jobspec.SPEC_VERSION
    assert w.SPEC_FILE == jobspec.SPEC_FILE
    assert w.LOG_DIR == jobspec.LOG_DIR
    assert w.VOLUME_DIR == jobspec.VOLUME_DIR
    assert w.STATUS_FILE == jobspec.STATUS_FILE
    assert w.PREVIOUS_LOG == jobspec.PREVIOUS_LOG
    assert w.MAX_MESSAGE == classad_attrs.MAX_MESSAGE


def _full_spec() -> jobspec.JobSpec:
    return jobspec.JobSpec(
        pod=jobspec.PodIdentity(uid="u", name="n", namespace="ns"),
        volumes={
            "cache": jobspec.VolumeSpec(kind="emptyDir", size_limit_bytes=1 << 20),
            "cfg": jobspec.VolumeSpec(kind="sandbox", path="volumes/cfg"),
            "data": jobspec.VolumeSpec(kind="host", path="/data"),
        },
        init_containers=[
            jobspec.ContainerSpec(name="init", image="/i.sif", mode="exec", argv=["true"])
        ],
        containers=[
            jobspec.ContainerSpec(
                name="main",
                image="docker://python:3.11",
                mode="run",
                argv=["-c", "print(1)"],
                working_dir="/work",
                env=[("A", "1"), ("B", "x\ny")],
                mounts=[
                    jobspec.MountSpec(volume="cache", mount_path="/cache"),
                    jobspec.MountSpec(
                        volume="cfg",
                        mount_path="/etc/app.conf",
                        sub_path="app.conf",
                        read_only=True,
                    ),
                ],
                memory_limit_bytes=1 << 30,
                pre_stop=jobspec.HandlerSpec(argv=["sh", "-c", "sleep 1"]),
                apptainer_args=["--nv"],
            )
        ],
        restart_policy="OnFailure",
        active_deadline_seconds=60,
        prologue=["echo hi"],
    )


def test_accepts_every_field_of_the_plugin_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pod.json"
    path.write_bytes(_full_spec().to_json())
    spec = w.load_spec(str(path))
    assert spec["containers"][0]["env"] == [["A", "1"], ["B", "x\ny"]]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": 2}, "version 2 is not supported"),
        ({"version": None}, "version None is not supported"),
        (
            {"containers": [{"name": "../x", "image": "i", "mode": "exec", "argv": ["a"]}]},
            "not a usable file name",
        ),
        (
            {"containers": [{"name": "a", "image": "i", "mode": "exec", "argv": []}]},
            "needs a command",
        ),
        (
            {"containers": [{"name": "a", "image": "i", "mode": "shell", "argv": ["x"]}]},
            "mode must be",
        ),
        ({"volumes": {"v": {"kind": "nfs"}}}, "unknown kind"),
        ({"volumes": {"v": {"kind": "sandbox", "path": "../../etc"}}}, "without '..'"),
        ({"volumes": {"v": {"kind": "host", "path": "rel"}}}, "absolute path"),
    ],
)
def test_rejects_bad_specs(tmp_path, patch, message) -> None:  # type: ignore[no-untyped-def]
    import json

    doc = json.loads(_full_spec().to_json())
    doc.update(patch)
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(w.SpecError, match=message):
        w.load_spec(str(path))


def test_env_values_cross_apptainer_byte_for_byte() -> None:
    env, home, warnings = w.env_for_apptainer(
        [["A", "x\r\ny\r\r\n"], ["B", "$(id) `id` 'q' \"d\"\n"], ["E", ""], ["U", "日本"]], {}
    )
    # Apptainer's env script parser drops one CR before each LF: the wrapper adds one.
    assert env[b"APPTAINERENV_A"] == b"x\r\r\ny\r\r\r\n"
    assert env[b"APPTAINERENV_B"] == b"$(id) `id` 'q' \"d\"\n"
    assert env[b"APPTAINERENV_E"] == b""
    assert env[b"APPTAINERENV_U"] == "日本".encode()
    assert home is None and warnings == []


def test_env_names_apptainer_cannot_carry_are_dropped_with_a_warning() -> None:
    env, home, warnings = w.env_for_apptainer(
        [["a.b", "1"], ["1X", "2"], ["OK_1", "3"], ["UID", "4"], ["HOME", "/home/me"]], {}
    )
    assert env == {b"APPTAINERENV_OK_1": b"3"}
    assert home == "/home/me"
    assert len(warnings) == 3 and "'a.b'" in warnings[0]


def test_gpu_assignment_passes_through_unless_the_pod_sets_it() -> None:
    host = {b"CUDA_VISIBLE_DEVICES": b"1", b"ROCR_VISIBLE_DEVICES": b"0", b"SECRET": b"x"}
    env, _, _ = w.env_for_apptainer([["ROCR_VISIBLE_DEVICES", "5"]], host)
    assert env == {
        b"APPTAINERENV_CUDA_VISIBLE_DEVICES": b"1",
        b"APPTAINERENV_ROCR_VISIBLE_DEVICES": b"5",
    }


def test_process_env_drops_inherited_container_variables() -> None:
    env = w.process_env(
        {b"PATH": b"/bin", b"APPTAINERENV_LEAK": b"1", b"SINGULARITYENV_LEAK": b"2"},
        {b"APPTAINERENV_A": b"a"},
    )
    assert env == {b"PATH": b"/bin", b"APPTAINERENV_A": b"a"}


def test_binds() -> None:
    assert w.bind_args("/s", "/d", False) == ["--bind", "/s:/d"]
    assert w.bind_args("/s", "/d", True) == ["--bind", "/s:/d:ro"]
    assert w.bind_args("/s,1", "/d:x", True) == [
        "--mount",
        'type=bind,"source=/s,1",destination=/d:x,ro',
    ]


def test_apptainer_command_layout() -> None:
    spec = {"apptainer": {"binary": "/opt/apptainer", "args": ["--nv"]}}
    c = {"image": "/img.sif", "apptainer_args": ["--writable-tmpfs"], "working_dir": "/w"}
    cmd = w.apptainer_command(
        spec, c, "exec", ["echo", "hi"], ["--bind", "/a:/b"], "/wd", None, True
    )
    assert cmd == [
        "/opt/apptainer", "--silent", "exec", "--nv", "--writable-tmpfs",
        "--containall", "--no-mount", "hostfs,cwd", "--workdir", "/wd", "--no-eval",
        "--bind", "/a:/b", "--pwd", "/w", "/img.sif", "echo", "hi",
    ]  # fmt: skip
    run = w.apptainer_command({}, {"image": "i"}, "run", [], [], "/wd", "/home/x", False)
    assert run == [
        "apptainer", "--silent", "run", "--containall", "--no-mount", "hostfs,cwd",
        "--workdir", "/wd", "--home", "/wd/home:/home/x", "--pwd", "/", "i",
    ]  # fmt: skip


def test_cri_records() -> None:
    stamp = b"2026-01-01T00:00:00.000000001Z"
    assert w.cri_records(b"stdout", b"hi", True, stamp) == [stamp + b" stdout F hi\n"]
    assert w.cri_records(b"stderr", b"", True, stamp) == [stamp + b" stderr F \n"]
    assert w.cri_records(b"stdout", b"par", False, stamp) == [stamp + b" stdout P par\n"]
    long = b"x" * (w.MAX_LOG_LINE + 5)
    recs = w.cri_records(b"stdout", long, True, stamp)
    assert [r.split(b" ")[2] for r in recs] == [b"P", b"F"]
    assert b"".join(r.split(b" ", 3)[3][:-1] for r in recs) == long


def test_timestamps_are_rfc3339_nano_utc() -> None:
    assert w.rfc3339_nano(0.5) == "1970-01-01T00:00:00.500000000Z"
    assert w.rfc3339_nano(1700000000.9999999999) == "2023-11-14T22:13:21.000000000Z"


def test_process_tree_follows_children_and_session() -> None:
    P = w.Proc
    procs = {
        10: P(10, 1, 10, b"starter", 100),
        11: P(11, 10, 10, b"sh", 10),
        12: P(12, 11, 10, b"python3", 1000),
        13: P(13, 1, 10, b"orphan", 5),  # reparented, still in the session
        14: P(14, 12, 14, b"daemon", 7),  # left the session, still a descendant
        20: P(20, 1, 20, b"other", 999),
    }
    assert sorted(w.process_tree(procs, 10)) == [10, 11, 12, 13, 14]
    # Apptainer's own processes are not the container's memory.
    assert w.tree_memory(procs, 10, precise=False) == 10 + 1000 + 5 + 7


def test_descendants_reads_the_live_tree() -> None:
    import sys

    sleeper = "import time; time.sleep(30)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {sleeper!r}])"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        tree = w.descendants(parent.pid)
        while tree is not None and len(tree) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            tree = w.descendants(parent.pid)
        assert tree is not None and tree[0] == parent.pid and len(tree) == 2
        child = w.read_proc(tree[1])
        assert child is not None and child.ppid == parent.pid and child.rss > 0
        assert sorted(w.process_tree(w.scan_processes(), parent.pid)) == sorted(tree)
    finally:
        w.kill_tree(parent.pid, 9)
        parent.wait()
