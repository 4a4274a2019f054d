"""The job wrapper run as HTCondor runs it, with stand-ins for apptainer and condor_chirp.

The stand-in execs each container's argv on the host (see ``wrapper_doubles/apptainer.py``),
so these tests check orchestration: order, parallelism, logs, states, limits and signals.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from _wrapper_harness import HOSTILE, Harness, container, oldest_python, py, wait_for

from interlink_htcondor.core import classad_attrs, jobspec


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def _chirped(run, attr: str) -> list[classad_attrs.ReportedState]:  # type: ignore[no-untyped-def]
    """The states sent for ``attr``, in order. The wrapper sends only the newest pending
    value of an attribute, so a quick transition may be skipped, never reordered."""
    out = []
    for argv in run.chirps:
        assert argv[0] == "set_job_attr" and len(argv) == 3
        if argv[1] == attr:
            assert argv[2].startswith('"') and argv[2].endswith('"')
            decoded = classad_attrs.decode_state(argv[2][1:-1])
            assert decoded is not None, argv
            out.append(decoded)
    return out


def test_hello_world_logs_states_and_status(h: Harness) -> None:
    spec = h.spec(
        [container("hello", py("import sys; print('hello'); print('oops', file=sys.stderr)"))]
    )
    run = h.run(spec)
    assert run.returncode == 0, run.stderr
    assert run.text("hello", "stdout") == b"hello\n"
    assert run.text("hello", "stderr") == b"oops\n"
    st = run.state("hello")
    assert (st["state"], st["exit_code"], st["reason"]) == ("terminated", 0, "Completed")
    assert st["finished"] >= st["started"] > 1700000000
    assert run.status["final"] is True and run.status["exit_code"] == 0
    assert run.status["pod"] == {"uid": "uid-1", "name": "pod", "namespace": "ns"}
    states = _chirped(run, "InterlinkStateC0")
    assert [s.state for s in states] in (["running", "terminated"], ["terminated"])
    assert states[-1] == classad_attrs.ReportedState(
        "terminated", 0, "Completed", st["started"], st["finished"], 0, False, False
    )
    inv = run.invocations[0]
    assert inv["mode"] == "exec" and inv["argv"][1:] == ["-c", spec.containers[0].argv[2]]
    flags = [o[0] for o in inv["options"]]
    assert {"--containall", "--no-mount", "--no-eval", "--workdir", "--pwd"} <= set(flags)
    assert ["--no-mount", "hostfs,cwd"] in inv["options"]


def test_run_mode_uses_the_image_runscript(h: Harness) -> None:
    spec = h.spec([jobspec.ContainerSpec(name="r", image="IMAGE", mode="run", argv=["a", "b c"])])
    run = h.run(spec)
    assert run.returncode == 0, run.stderr
    assert run.text("r") == b"run ['a', 'b c']\n"
    assert run.invocations[0]["mode"] == "run"


def test_init_containers_run_in_order_and_fail_fast(h: Harness, tmp_path: Path) -> None:
    order = tmp_path / "order"
    step = "open(%r, 'a').write('%s\\n'); raise SystemExit(%d)"
    spec = h.spec(
        [container("app", py(step % (str(order), "app", 0)))],
        init=[
            container("first", py(step % (str(order), "first", 0))),
            container("second", py(step % (str(order), "second", 3))),
            container("third", py(step % (str(order), "third", 0))),
        ],
    )
    run = h.run(spec)
    assert order.read_text() == "first\nsecond\n"
    assert run.returncode == 3
    assert run.state("first")["reason"] == "Completed"
    assert (run.state("second")["exit_code"], run.state("second")["reason"]) == (3, "Error")
    for name in ("third", "app"):
        st = run.state(name)
        assert st["state"] == "terminated" and st["exit_code"] != 0
        assert st["reason"] == "InitContainerFailed" and "second" in st["message"]
    assert _chirped(run, "InterlinkStateC0")[-1].reason == "InitContainerFailed"
    assert _chirped(run, "InterlinkStateI1")[-1] == classad_attrs.ReportedState(
        "terminated",
        3,
        "Error",
        run.state("second")["started"],
        run.state("second")["finished"],
        0,
        False,
        False,
    )


def test_app_containers_run_in_parallel(h: Harness, tmp_path: Path) -> None:
    # Each waits for the other's file: this passes only if both run at the same time.
    a, b = tmp_path / "a", tmp_path / "b"
    wait = (
        "import os, time, pathlib; pathlib.Path(%r).touch(); end = time.time() + 20\n"
        "while not os.path.exists(%r):\n"
        "    assert time.time() < end; time.sleep(0.05)\n"
    )
    spec = h.spec(
        [container("a", py(wait % (str(a), str(b)))), container("b", py(wait % (str(b), str(a))))]
    )
    run = h.run(spec)
    assert run.returncode == 0, run.stderr
    assert run.state("a")["reason"] == run.state("b")["reason"] == "Completed"


def test_exit_code_is_the_first_failed_container_in_pod_order(h: Harness) -> None:
    spec = h.spec(
        [
            container("ok", py("pass")),
            container("slow-fail", py("import time; time.sleep(1); raise SystemExit(42)")),
            container("fast-fail", py("raise SystemExit(7)")),
        ]
    )
    run = h.run(spec)
    assert run.returncode == 42
    assert (run.state("fast-fail")["exit_code"], run.state("fast-fail")["reason"]) == (7, "Error")
    assert run.state("ok")["reason"] == "Completed"


def test_killed_by_a_signal_exits_128_plus_signal(h: Harness) -> None:
    spec = h.spec([container("k", py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))])
    run = h.run(spec)
    assert run.returncode == 137
    assert (run.state("k")["exit_code"], run.state("k")["reason"]) == (137, "Error")


def test_command_not_found_and_missing_image(h: Harness) -> None:
    spec = h.spec(
        [
            container("nocmd", ["no-such-command-xyz"]),
            container("noimage", ["true"], image="/nonexistent/image.sif"),
        ]
    )
    run = h.run(spec)
    nocmd, noimage = run.state("nocmd"), run.state("noimage")
    assert (nocmd["exit_code"], nocmd["reason"]) == (127, "ContainerCannotRun")
    assert "executable file not found" in nocmd["message"]
    assert (noimage["exit_code"], noimage["reason"]) == (128, "ContainerCannotRun")
    assert "/nonexistent/image.sif" in noimage["message"]
    assert run.returncode == 127
    assert b"FATAL:" in run.text("nocmd", "stderr")  # kubectl logs shows why


def test_partial_lines_and_long_lines(h: Harness) -> None:
    code = (
        "import sys, time\n"
        "sys.stdout.write('prompt: '); sys.stdout.flush(); time.sleep(1.5)\n"
        "sys.stdout.write('answer\\n' + 'x' * 40000 + '\\nno-newline-at-end'); sys.stdout.flush()\n"
    )
    run = h.run(h.spec([container("p", py(code))]))
    assert run.returncode == 0, run.stderr
    recs = [r for r in run.records("p") if r.stream == "stdout"]
    assert (recs[0].tag, recs[0].text) == ("P", b"prompt: ")  # visible before the line ends
    assert (recs[1].tag, recs[1].text) == ("F", b"answer")
    assert recs[-1].tag == "P" and recs[-1].text == b"no-newline-at-end"
    assert all(len(r.text) <= 16 * 1024 for r in recs)
    assert run.text("p") == b"prompt: answer\n" + b"x" * 40000 + b"\nno-newline-at-end"
    stamps = [r.stamp for r in recs]
    assert stamps == sorted(stamps)


def test_logs_are_written_while_the_container_runs(h: Harness, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (
        "import os, time\nprint('first', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\nprint('second')\n"
    )
    h.start(h.spec([container("live", py(code))]))
    log = h.sandbox / "logs" / "live.log"
    end = time.monotonic() + 20
    while not (log.exists() and b"first" in log.read_bytes()):
        assert time.monotonic() < end, "the log was not written while running"
        time.sleep(0.05)
    status = json.loads((h.sandbox / "status.json").read_text())
    assert status["final"] is False and status["containers"][0]["state"] == "running"
    while not h.chirp_file.exists() or "running" not in h.chirp_file.read_text():
        assert time.monotonic() < end, "the running state was not sent while running"
        time.sleep(0.05)
    go.touch()
    run = h.finish()
    assert run.text("live") == b"first\nsecond\n"


def test_hostile_environment_arrives_byte_for_byte(h: Harness, tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    code = f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"
    env = [*list(HOSTILE.items()), ("bad.name", "dropped"), ("AFTER", "still here")]
    run = h.run(h.spec([container("env", py(code), env=env)]))
    assert run.returncode == 0, run.stderr
    got = json.loads(out.read_text())
    for name, value in HOSTILE.items():
        assert got.get(name) == value, name
    assert got["AFTER"] == "still here" and "bad.name" not in got
    assert b"'bad.name' dropped" in run.text("env", "stderr")


def test_oldest_python_with_c_locale(tmp_path: Path) -> None:
    python = oldest_python()
    if python is None:
        pytest.skip("no Python 3.6/3.7 interpreter on this machine")
    h = Harness(tmp_path, python=python)
    out = tmp_path / "env.json"
    code = f"import json, os; print('日本'); json.dump(dict(os.environ), open({str(out)!r}, 'w'))"
    mounts = [jobspec.MountSpec(volume="scratch", mount_path="/données")]
    spec = h.spec(
        [container("env", py(code), env=list(HOSTILE.items()), mounts=mounts)],
        volumes={"scratch": jobspec.VolumeSpec(kind="emptyDir")},
    )
    run = h.run(spec, env={"LC_ALL": "C", "LANG": "C"})
    assert run.returncode == 0, run.stderr
    got = json.loads(out.read_text())
    assert {k: got.get(k) for k in HOSTILE} == HOSTILE
    assert run.text("env") == "日本\n".encode()
    assert ["--bind", f"{h.sandbox}/_interlink/emptydir/scratch:/données"] in run.invocations[0][
        "options"
    ]


def test_memory_limit_kills_with_oomkilled(h: Harness) -> None:
    code = (
        "import time\nblocks = []\n"
        "for _ in range(200):\n"
        "    blocks.append(bytearray(16 << 20)); time.sleep(0.05)\n"
    )
    spec = h.spec(
        [
            container("hog", py(code), memory_limit_bytes=96 << 20),
            container("small", py("import time; time.sleep(0.5)"), memory_limit_bytes=96 << 20),
        ]
    )
    run = h.run(spec)
    hog = run.state("hog")
    assert (hog["exit_code"], hog["reason"]) == (137, "OOMKilled")
    assert "memory limit of 100663296 bytes exceeded" in hog["message"]
    assert run.state("small")["reason"] == "Completed"
    assert run.returncode == 137
    assert _chirped(run, "InterlinkStateC0")[-1].reason == "OOMKilled"


def test_memory_of_child_processes_counts(h: Harness) -> None:
    code = (
        "import subprocess, sys\n"
        'child = "import time\\nb = []\\nfor _ in range(100):\\n"\n'
        'child += " b.append(bytearray(16 << 20)); time.sleep(0.05)"\n'
        "subprocess.run([sys.executable, '-c', child])\n"
        "import time; time.sleep(30)\n"
    )
    run = h.run(h.spec([container("parent", py(code), memory_limit_bytes=64 << 20)]))
    assert run.state("parent")["reason"] == "OOMKilled"
    assert run.elapsed < 25


def test_active_deadline_stops_everything(h: Harness) -> None:
    spec = h.spec(
        [container("sleeper", py("import time; time.sleep(60)"))],
        active_deadline_seconds=2,
        termination_grace_seconds=2,
    )
    run = h.run(spec)
    st = run.state("sleeper")
    assert st["reason"] == "DeadlineExceeded" and st["exit_code"] != 0
    assert run.returncode == st["exit_code"]
    assert run.elapsed < 15
    assert "activeDeadlineSeconds" in run.status["message"]


def test_sigterm_runs_prestop_then_stops_within_grace(h: Harness, tmp_path: Path) -> None:
    events = tmp_path / "events"
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time, pathlib\n"
        "def term(*_):\n"
        f"    open({str(events)!r}, 'a').write('term\\n'); sys.exit(0)\n"
        f"signal.signal(signal.SIGTERM, term)\npathlib.Path({str(ready)!r}).touch()\n"
        "while True: time.sleep(0.1)\n"
    )
    hook = py(f"import time; time.sleep(0.5); open({str(events)!r}, 'a').write('prestop\\n')")
    stubborn_ready = tmp_path / "stubborn-ready"
    stubborn = py(
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(stubborn_ready)!r}).touch(); time.sleep(60)"
    )
    spec = h.spec(
        [
            container("web", py(code), pre_stop=jobspec.HandlerSpec(argv=hook)),
            container("stubborn", stubborn),
        ],
        termination_grace_seconds=3,
    )
    proc = h.start(spec)
    wait_for(ready)
    wait_for(stubborn_ready)  # its SIGTERM handler is in place
    proc.send_signal(signal.SIGTERM)
    run = h.finish()
    assert events.read_text() == "prestop\nterm\n"
    assert (run.state("web")["exit_code"], run.state("web")["reason"]) == (0, "Completed")
    stubborn_state = run.state("stubborn")
    assert (stubborn_state["exit_code"], stubborn_state["reason"]) == (137, "Error")
    assert run.returncode == 137
    assert run.elapsed < 15
    hooks = [i for i in run.invocations if i["argv"] == hook]
    assert hooks and hooks[0]["mode"] == "exec"


def test_sigterm_during_init_reports_everything_terminated(h: Harness, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    spec = h.spec(
        [container("app", py("pass"))],
        init=[
            container(
                "wait",
                py(f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"),
            )
        ],
        termination_grace_seconds=2,
    )
    proc = h.start(spec)
    wait_for(ready)
    proc.send_signal(signal.SIGTERM)
    run = h.finish()
    assert run.state("wait")["state"] == "terminated" and run.state("wait")["exit_code"] != 0
    app = run.state("app")
    assert (app["state"], app["reason"]) == ("terminated", "PodTerminated")
    assert run.returncode != 0


def test_restart_on_failure_counts_restarts(h: Harness, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    code = (
        f"import pathlib; p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1))\n"
        "print('attempt', n); raise SystemExit(0 if n == 2 else 1)\n"
    )
    run = h.run(h.spec([container("flaky", py(code))], restart_policy="OnFailure"))
    assert run.returncode == 0, run.stderr
    st = run.state("flaky")
    assert (st["reason"], st["restart_count"]) == ("Completed", 2)
    # Each instance has its own log; the one before the last is kept for --previous.
    assert run.text("flaky") == b"attempt 2\n"
    assert run.text("flaky.previous") == b"attempt 1\n"
    assert st["last_state"]["exit_code"] == 1 and st["last_state"]["reason"] == "Error"
    reasons = [s.reason for s in _chirped(run, "InterlinkStateC0")]
    assert reasons[-1] == "Completed" and reasons.count("CrashLoopBackOff") <= 2


def test_restart_never_keeps_the_failure(h: Harness, tmp_path: Path) -> None:
    run = h.run(h.spec([container("once", py("raise SystemExit(5)"))], restart_policy="Never"))
    assert run.returncode == 5 and run.state("once")["restart_count"] == 0


def test_prologue_runs_first_and_its_failure_fails_the_pod(h: Harness, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ok = h.run(
        h.spec(
            [container("c", py(f"import os; assert os.path.exists({str(marker)!r})"))],
            prologue=[f"echo tunnel up; touch '{marker}'"],
        )
    )
    assert ok.returncode == 0, ok.stderr
    assert b"tunnel up" in (h.sandbox / "logs" / "_prologue.log").read_bytes()

    h2 = Harness(tmp_path / "second")
    bad = h2.run(h2.spec([container("c", py("pass"))], prologue=["echo broken >&2; exit 9"]))
    assert bad.returncode == 9
    st = bad.state("c")
    assert (st["reason"], st["state"]) == ("PrologueFailed", "terminated")
    assert not (h2.sandbox / "logs" / "c.log").exists()


def test_volumes_and_mount_arguments(h: Harness, tmp_path: Path) -> None:
    (h.sandbox / "volumes" / "cfg").mkdir(parents=True)
    (h.sandbox / "volumes" / "cfg" / "app.conf").write_text("k=v\n")
    hostdir = tmp_path / "host"
    hostdir.mkdir()
    spec = h.spec(
        [
            container(
                "c",
                py("pass"),
                mounts=[
                    jobspec.MountSpec(volume="cache", mount_path="/cache"),
                    jobspec.MountSpec(volume="cache", mount_path="/sub", sub_path="a/b"),
                    jobspec.MountSpec(
                        volume="cfg",
                        mount_path="/etc/app.conf",
                        sub_path="app.conf",
                        read_only=True,
                    ),
                    jobspec.MountSpec(volume="data", mount_path="/data,1"),
                ],
                working_dir="/cache",
            ),
            container(
                "d", py("pass"), mounts=[jobspec.MountSpec(volume="cache", mount_path="/shared")]
            ),
        ],
        volumes={
            "cache": jobspec.VolumeSpec(kind="emptyDir"),
            "cfg": jobspec.VolumeSpec(kind="sandbox", path="volumes/cfg"),
            "data": jobspec.VolumeSpec(kind="host", path=str(hostdir)),
        },
    )
    run = h.run(spec)
    assert run.returncode == 0, run.stderr
    empty = h.sandbox / "_interlink" / "emptydir" / "cache"
    assert (empty / "a" / "b").is_dir()  # a missing subPath is created, like kubelet does
    opts = [o for inv in run.invocations for o in inv["options"]]
    assert ["--bind", f"{empty}:/cache"] in opts
    assert ["--bind", f"{empty}/a/b:/sub"] in opts
    assert ["--bind", f"{h.sandbox}/volumes/cfg/app.conf:/etc/app.conf:ro"] in opts
    assert ["--mount", f'type=bind,source={hostdir},"destination=/data,1"'] in opts
    assert ["--pwd", "/cache"] in opts and ["--pwd", "/"] in opts
    assert ["--bind", f"{empty}:/shared"] in opts  # the same directory for both containers


def test_subpath_cannot_escape_its_volume(h: Harness, tmp_path: Path) -> None:
    vol = h.sandbox / "volumes" / "v"
    vol.mkdir(parents=True)
    (vol / "link").symlink_to("/etc")
    spec = h.spec(
        [
            container(
                "c",
                py("pass"),
                mounts=[jobspec.MountSpec(volume="v", mount_path="/x", sub_path="link")],
            )
        ],
        volumes={"v": jobspec.VolumeSpec(kind="sandbox", path="volumes/v")},
    )
    run = h.run(spec)
    st = run.state("c")
    assert st["reason"] == "ContainerCannotRun" and "leaves the volume" in st["message"]
    assert run.invocations == []


def test_missing_chirp_is_not_fatal(h: Harness) -> None:
    run = h.run(h.spec([container("c", py("print('fine')"))], chirp="/nonexistent/condor_chirp"))
    assert run.returncode == 0
    assert "condor_chirp not found" in run.stderr
    assert run.state("c")["reason"] == "Completed"


def test_failing_chirp_is_not_fatal(h: Harness) -> None:
    h.chirp.write_text("#!/bin/sh\necho 'no IO proxy' >&2\nexit 1\n")
    run = h.run(h.spec([container("c", py("print('fine')"))]))
    assert run.returncode == 0
    assert "condor_chirp set_job_attr InterlinkStateC0 failed" in run.stderr
    assert "no IO proxy" in run.stderr


def test_chirp_found_on_path(h: Harness, tmp_path: Path) -> None:
    run = h.run(
        h.spec([container("c", py("pass"))], chirp=""),
        env={"PATH": f"{h.bin}:{os.environ['PATH']}"},
    )
    assert run.returncode == 0
    assert _chirped(run, "InterlinkStateC0")[-1].reason == "Completed"


def test_unknown_spec_version_is_refused(h: Harness) -> None:
    doc = json.loads(h.spec([container("c", py("pass"))]).to_json())
    doc["version"] = 99
    run = h.run(json.dumps(doc).encode())
    assert run.returncode == 2
    assert "job spec version 99 is not supported" in run.stderr
    assert "version 99" in run.status["message"] and run.status["final"] is True
    assert run.invocations == []


def test_emptydir_size_limit_evicts_the_pod(h: Harness) -> None:
    code = "import time\nopen(%r, 'wb').write(b'x' * (4 << 20))\ntime.sleep(60)\n"
    spec = h.spec(
        [
            container(
                "filler", py(code % str(h.sandbox / "_interlink" / "emptydir" / "tmp" / "big"))
            )
        ],
        volumes={"tmp": jobspec.VolumeSpec(kind="emptyDir", size_limit_bytes=1 << 20)},
        termination_grace_seconds=1,
    )
    run = h.run(spec)
    assert run.state("filler")["reason"] == "Evicted"
    assert "sizeLimit" in run.status["message"]
    assert run.elapsed < 20


def test_restart_always_restarts_after_success_until_stopped(h: Harness, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    # The third instance waits for the SIGTERM (one ending meanwhile could get it while its
    # interpreter shuts down, without its handler).
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "while n >= 3: time.sleep(0.1)\n"
    )
    proc = h.start(
        h.spec([container("loop", py(code))], restart_policy="Always", termination_grace_seconds=1)
    )
    end = time.monotonic() + 20
    while not (counter.exists() and int(counter.read_text() or 0) >= 3):
        assert time.monotonic() < end
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    run = h.finish()
    st = run.state("loop")
    assert st["restart_count"] >= 2 and st["state"] == "terminated"
    assert run.returncode == 0, run.stderr  # every run succeeded; the pod was stopped


def test_memory_of_a_daemon_that_left_the_tree_counts(h: Harness) -> None:
    # Double fork: the grandchild is reparented away from the container's tree but stays in
    # its session, where the monitor's periodic full scan finds it.
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        b = []\n"
        "        for _ in range(100): b.append(bytearray(16 << 20)); time.sleep(0.05)\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "os.wait(); time.sleep(60)\n"
    )
    run = h.run(h.spec([container("forker", py(code), memory_limit_bytes=96 << 20)]))
    assert run.state("forker")["reason"] == "OOMKilled"
    assert run.elapsed < 30
