"""The job wrapper with the real Apptainer of the personal pool (no HTCondor job around it).

Each test writes a sandbox under the pool's shared directory (the same path inside and
outside the pool), runs ``python3 <wrapper> pod.json`` there as the job user inside the
pool's root file system, then reads the CRI logs and ``status.json`` from the host.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _wrapper_harness import HOSTILE as UNIT_HOSTILE
from _wrapper_harness import SandboxRun

from interlink_htcondor.core import classad_attrs, jobspec
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.jobside import wrapper
from interlink_htcondor.local_plugin import free_port

pytestmark = pytest.mark.integration

# The unit tests' hostile values, and an escape that JSON decoding must not expand.
HOSTILE = {**UNIT_HOSTILE, "U0A": "literal \\u000A stays"}


def _run(
    pool: PoolInfo,
    sandbox: Path,
    spec: jobspec.JobSpec,
    *,
    files: dict[str, str] | None = None,
    term_after: float | None = None,
) -> SandboxRun:
    """Runs the wrapper as the job user inside the pool, in ``sandbox`` holding ``files``
    (as the plugin writes volumes); ``term_after`` sends the wrapper SIGTERM."""
    for rel, content in (files or {}).items():
        path = sandbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (sandbox / jobspec.SPEC_FILE).write_bytes(spec.to_json())
    (sandbox / jobspec.WRAPPER_FILE).write_bytes(Path(wrapper.__file__).read_bytes())
    for root, dirs, names in os.walk(sandbox):
        for n in dirs + names:
            os.chown(Path(root) / n, pool.job_uid, pool.job_gid)
    argv = ["python3", jobspec.WRAPPER_FILE, jobspec.SPEC_FILE]
    if term_after is not None:
        argv = ["timeout", "--preserve-status", "-s", "TERM", str(term_after), *argv]
    r = pool.run_in_pool(argv, cwd=sandbox, timeout=180)
    return SandboxRun(r.returncode, r.stderr.decode("utf-8", "replace"), sandbox)


def _spec(containers: list[jobspec.ContainerSpec], **kw: Any) -> jobspec.JobSpec:
    return jobspec.JobSpec(
        pod=jobspec.PodIdentity(uid=str(uuid.uuid4()), name="wrapper-test", namespace="tests"),
        containers=containers,
        chirp="/nonexistent/condor_chirp",  # no job around the wrapper here
        **kw,
    )


@pytest.fixture
def sandbox(pool: PoolInfo) -> Iterator[Path]:
    """A fresh job directory in the pool's shared directory, removed after the test."""
    path = pool.make_job_dir(f"wrapper-test-{uuid.uuid4().hex[:12]}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def busybox(pool: PoolInfo) -> str:
    return str(pool.images["busybox"])


@pytest.fixture(scope="module")
def python_image(pool: PoolInfo) -> str:
    return str(pool.images["python"])


def test_hostile_env_and_args_arrive_byte_for_byte(
    pool: PoolInfo, sandbox: Path, busybox: str
) -> None:
    env = [*HOSTILE.items(), ("HOME", "/home/custom"), ("bad.name", "x"), ("LAST", "ok")]
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="env", image=busybox, mode="exec", argv=["env", "-0"], env=env
            ),
            jobspec.ContainerSpec(
                name="args",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", 'printf "%s\\0" "$@"', "sh", *HOSTILE.values()],
            ),
        ]
    )
    res = _run(pool, sandbox, spec)
    assert res.returncode == 0, res.stderr
    got = dict(item.split(b"=", 1) for item in res.text("env").split(b"\0") if item)
    for name, value in HOSTILE.items():
        assert got.get(name.encode()) == value.encode(), name
    assert got[b"HOME"] == b"/home/custom" and got[b"LAST"] == b"ok"
    assert b"bad.name" not in got
    assert b"'bad.name' dropped" in res.text("env", "stderr")
    args = res.text("args").split(b"\0")[:-1]
    assert args == [v.encode() for v in HOSTILE.values()]


def test_volumes_read_only_subpath_and_working_dir(
    pool: PoolInfo, sandbox: Path, busybox: str
) -> None:
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="c",
                image=busybox,
                mode="exec",
                argv=[
                    "sh",
                    "-c",
                    "pwd; cat /etc/app/app.conf; cat /cfg/other; "
                    "touch /cfg/new 2>/dev/null && echo cfg-writable || echo cfg-read-only; "
                    "touch /work/new && echo work-writable; "
                    "touch /tmp/t && echo tmp-writable; ls /",
                ],
                working_dir="/work",
                mounts=[
                    jobspec.MountSpec(volume="cfg", mount_path="/cfg", read_only=True),
                    jobspec.MountSpec(
                        volume="cfg", mount_path="/etc/app/app.conf", sub_path="app.conf"
                    ),
                    jobspec.MountSpec(volume="scratch", mount_path="/work"),
                ],
            )
        ],
        volumes={
            "cfg": jobspec.VolumeSpec(kind="sandbox", path="volumes/cfg"),
            "scratch": jobspec.VolumeSpec(kind="emptyDir"),
        },
    )
    sandbox_files = {"app.conf": "key=value\n", "other": "other file\n"}
    res = _run(pool, sandbox, spec, files={f"volumes/cfg/{k}": v for k, v in sandbox_files.items()})
    assert res.returncode == 0, res.stderr
    out = res.text("c").decode().splitlines()
    assert out[:6] == [
        "/work",
        "key=value",
        "other file",
        "cfg-read-only",
        "work-writable",
        "tmp-writable",
    ]
    assert "interlink-job-wrapper.py" not in out  # the sandbox is not the container's cwd
    assert (res.sandbox / "_interlink" / "emptydir" / "scratch" / "new").exists()


def test_empty_dir_is_shared_between_containers(
    pool: PoolInfo, sandbox: Path, busybox: str
) -> None:
    writer = "echo hello from writer > /data/msg.tmp && mv /data/msg.tmp /data/msg"
    reader = (
        "i=0; while [ ! -e /data/msg ]; do i=$((i+1)); [ $i -gt 300 ] && exit 3; sleep 0.1; done;"
        " cat /data/msg; touch /data/x 2>/dev/null && echo reader-can-write || echo read-only"
    )
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="reader",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", reader],
                mounts=[jobspec.MountSpec(volume="data", mount_path="/data", read_only=True)],
            ),
            jobspec.ContainerSpec(
                name="writer",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", writer],
                mounts=[jobspec.MountSpec(volume="data", mount_path="/data")],
            ),
        ],
        volumes={"data": jobspec.VolumeSpec(kind="emptyDir")},
    )
    res = _run(pool, sandbox, spec)
    assert res.returncode == 0, res.stderr
    assert res.text("reader") == b"hello from writer\nread-only\n"


def test_run_uses_the_image_entrypoint_exec_does_not(
    pool: PoolInfo, sandbox: Path, python_image: str
) -> None:
    show = "import os, sys; print(sys.argv[1:], os.environ.get('LC_ALL'))"
    spec = _spec(
        [
            # No command: the image's runscript gets the args (Docker: args replace CMD).
            jobspec.ContainerSpec(
                name="run-args", image=python_image, mode="run", argv=["python3", "-c", show, "a b"]
            ),
            # No command and no args: the image's default program (python3, stdin empty).
            jobspec.ContainerSpec(name="run-default", image=python_image, mode="run", argv=[]),
            jobspec.ContainerSpec(
                name="exec", image=python_image, mode="exec", argv=["python3", "-c", show, "x"]
            ),
            # Args alone are not a command for this image: they fail, as under Docker.
            jobspec.ContainerSpec(
                name="run-bad", image=python_image, mode="run", argv=["-c", "print(1)"]
            ),
        ]
    )
    res = _run(pool, sandbox, spec)
    assert res.text("run-args") == b"['a b'] C.UTF-8\n"  # the image's environment applies
    assert res.text("exec") == b"['x'] C.UTF-8\n"
    assert res.state("run-default")["reason"] == "Completed"
    bad = res.state("run-bad")
    assert bad["reason"] == "Error" and bad["exit_code"] != 0
    assert res.returncode == bad["exit_code"]


def test_containers_talk_over_localhost(
    pool: PoolInfo, sandbox: Path, busybox: str, python_image: str
) -> None:
    port = free_port()
    server = (
        "import http.server, os, threading, time\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = b'hello over localhost'\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers(); self.wfile.write(body)\n"
        f"srv = http.server.HTTPServer(('127.0.0.1', {port}), H)\n"
        "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
        "print('serving', flush=True)\n"
        "while not os.path.exists('/shared/done'): time.sleep(0.1)\n"
    )
    client = (
        f"for i in $(seq 1 300); do wget -q -O - http://127.0.0.1:{port}/ "
        "&& touch /shared/done && exit 0; sleep 0.1; done; touch /shared/done; exit 1"
    )
    mount = [jobspec.MountSpec(volume="shared", mount_path="/shared")]
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="server",
                image=python_image,
                mode="exec",
                argv=["python3", "-c", server],
                mounts=mount,
            ),
            jobspec.ContainerSpec(
                name="client", image=busybox, mode="exec", argv=["sh", "-c", client], mounts=mount
            ),
        ],
        volumes={"shared": jobspec.VolumeSpec(kind="emptyDir")},
    )
    res = _run(pool, sandbox, spec)
    assert res.returncode == 0, res.stderr
    assert res.text("client") == b"hello over localhost"
    assert res.text("server") == b"serving\n"


def test_exit_codes_and_start_failures(pool: PoolInfo, sandbox: Path, busybox: str) -> None:
    spec = _spec(
        [
            jobspec.ContainerSpec(name="ok", image=busybox, mode="exec", argv=["true"]),
            jobspec.ContainerSpec(
                name="exit42", image=busybox, mode="exec", argv=["sh", "-c", "exit 42"]
            ),
            jobspec.ContainerSpec(name="nocmd", image=busybox, mode="exec", argv=["no-such-cmd"]),
            jobspec.ContainerSpec(
                name="noimage", image="/nonexistent/image.sif", mode="exec", argv=["true"]
            ),
        ]
    )
    res = _run(pool, sandbox, spec)
    assert res.returncode == 42  # the first failed container in pod order
    assert (res.state("ok")["exit_code"], res.state("ok")["reason"]) == (0, "Completed")
    assert (res.state("exit42")["exit_code"], res.state("exit42")["reason"]) == (42, "Error")
    nocmd = res.state("nocmd")
    assert (nocmd["exit_code"], nocmd["reason"]) == (127, "ContainerCannotRun")
    assert "no-such-cmd" in nocmd["message"]
    noimage = res.state("noimage")
    assert (noimage["exit_code"], noimage["reason"]) == (128, "ContainerCannotRun")
    assert "/nonexistent/image.sif" in noimage["message"]


def test_memory_limit_with_real_apptainer(pool: PoolInfo, sandbox: Path, python_image: str) -> None:
    hog = "b = []\nimport time\nwhile True:\n    b.append(bytearray(8 << 20)); time.sleep(0.02)\n"
    small = "import time; x = bytearray(16 << 20); time.sleep(1); print('fine')"
    limit = 128 << 20
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="hog",
                image=python_image,
                mode="exec",
                argv=["python3", "-c", hog],
                memory_limit_bytes=limit,
            ),
            # Apptainer's own processes are not counted: a small container fits its limit.
            jobspec.ContainerSpec(
                name="small",
                image=python_image,
                mode="exec",
                argv=["python3", "-c", small],
                memory_limit_bytes=64 << 20,
            ),
        ]
    )
    res = _run(pool, sandbox, spec)
    hog_state = res.state("hog")
    assert (hog_state["exit_code"], hog_state["reason"]) == (137, "OOMKilled")
    assert res.state("small")["reason"] == "Completed" and res.text("small") == b"fine\n"
    assert res.returncode == 137


def test_sigterm_runs_prestop_in_the_container_then_stops_it(
    pool: PoolInfo, sandbox: Path, busybox: str
) -> None:
    main = (
        "trap 'echo term >> /shared/events; exit 0' TERM; echo started > /shared/started;"
        " while true; do sleep 0.1; done"
    )
    hook = ["sh", "-c", "[ -e /shared/started ] && echo prestop-$HOOK_VAR >> /shared/events"]
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="main",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", main],
                env=[("HOOK_VAR", "same-env")],
                mounts=[jobspec.MountSpec(volume="shared", mount_path="/shared")],
                pre_stop=jobspec.HandlerSpec(argv=hook),
            )
        ],
        volumes={"shared": jobspec.VolumeSpec(kind="emptyDir")},
        termination_grace_seconds=10,
    )
    res = _run(pool, sandbox, spec, term_after=5)
    events = res.sandbox / "_interlink" / "emptydir" / "shared" / "events"
    assert events.read_text() == "prestop-same-env\nterm\n"
    st = res.state("main")
    assert (st["state"], st["exit_code"], st["reason"]) == ("terminated", 0, "Completed")
    assert res.status["message"] == "the job was asked to stop (SIGTERM)"


def test_exec_probes_and_hooks_run_in_the_containers_own_file_system(
    pool: PoolInfo, sandbox: Path, busybox: str
) -> None:
    """The postStart hook writes to the container's /tmp, the container and an exec
    readiness probe (1 s timeout, Apptainer's start-up not counted) read it there."""
    main = (
        "i=0; while [ ! -e /tmp/from-hook ]; do i=$((i+1)); [ $i -gt 300 ] && exit 3;"
        " sleep 0.1; done; cat /tmp/from-hook; sleep 4"
    )
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="c",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", main],
                post_start=jobspec.HandlerSpec(argv=["sh", "-c", "echo hooked > /tmp/from-hook"]),
                readiness_probe=jobspec.ProbeSpec(
                    argv=["sh", "-c", "cat /tmp/from-hook && echo PROBE-OUTPUT"],
                    period_seconds=1,
                    timeout_seconds=1,
                ),
            )
        ]
    )
    res = _run(pool, sandbox, spec)
    assert res.returncode == 0, res.stderr
    assert res.text("c") == b"hooked\n"  # neither the hook's nor the probe's output
    assert "container c: started True, ready True" in res.stderr
    assert "probe failed" not in res.stderr and "probe errored" not in res.stderr
    assert (res.sandbox / "logs" / "c.poststart.log").exists()


def test_exec_probes_and_hooks_join_the_running_container(
    pool: PoolInfo, sandbox: Path, busybox: str
) -> None:
    """Each container has its own PID and IPC namespaces (--containall); an exec probe or
    hook still sees what its container sees, as CRI exec does: its processes, its /tmp and
    $HOME, its environment and working directory, and no other container's processes."""
    main = (
        "sleep 3617 & i=0; while [ ! -e /tmp/probed ] && [ $i -lt 300 ]; do i=$((i+1));"
        " sleep 0.1; done; kill $!; cat $HOME/from-hook; [ -e /tmp/probed ]"
    )
    probe = (
        'ps | grep -q "[s]leep 3617" && ! ps | grep -q "[s]leep 3618"'
        ' && [ "$(cat $HOME/from-hook)" = from-env ] && [ "$(pwd)" = /tmp ]'
        " && touch /tmp/probed"
    )
    spec = _spec(
        [
            jobspec.ContainerSpec(
                name="c",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", main],
                working_dir="/tmp",
                env=[("MARK", "from-env")],
                post_start=jobspec.HandlerSpec(argv=["sh", "-c", "echo $MARK > $HOME/from-hook"]),
                readiness_probe=jobspec.ProbeSpec(
                    argv=["sh", "-c", probe], period_seconds=1, timeout_seconds=2
                ),
            ),
            jobspec.ContainerSpec(
                name="other",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", "sleep 3618 & sleep 6; kill $!"],
            ),
        ]
    )
    res = _run(pool, sandbox, spec)
    assert res.returncode == 0, res.stderr
    assert res.text("c") == b"from-env\n"
    assert "container c: started True, ready True" in res.stderr
    assert "cannot join container" not in res.stderr


def test_states_reach_the_job_ad_through_condor_chirp(
    pool: PoolInfo, schedd: Any, sandbox: Path, wait_job: Any, busybox: str
) -> None:
    """The wrapper as a real vanilla job: condor_chirp found at run time, states live."""
    import htcondor2

    ctl = sandbox / "ctl"
    ctl.mkdir()
    os.chown(ctl, pool.job_uid, pool.job_gid)
    spec = jobspec.JobSpec(
        pod=jobspec.PodIdentity(uid=str(uuid.uuid4()), name="chirp-test", namespace="tests"),
        volumes={"ctl": jobspec.VolumeSpec(kind="host", path=str(ctl))},
        init_containers=[
            jobspec.ContainerSpec(name="init", image=busybox, mode="exec", argv=["true"])
        ],
        containers=[
            jobspec.ContainerSpec(
                name="main",
                image=busybox,
                mode="exec",
                argv=["sh", "-c", "while [ ! -e /ctl/go ]; do sleep 0.2; done; exit 3"],
                mounts=[jobspec.MountSpec(volume="ctl", mount_path="/ctl", read_only=True)],
            )
        ],
    )
    (sandbox / jobspec.SPEC_FILE).write_bytes(spec.to_json())
    exe = sandbox / jobspec.WRAPPER_FILE
    exe.write_bytes(Path(wrapper.__file__).read_bytes())
    exe.chmod(0o755)
    for path in sandbox.iterdir():
        os.chown(path, pool.job_uid, pool.job_gid)
    submit = htcondor2.Submit(
        {
            "universe": "vanilla",
            "executable": str(exe),
            "arguments": jobspec.SPEC_FILE,
            "initialdir": str(sandbox),
            "should_transfer_files": "NO",
            "transfer_executable": "false",
            "output": "wrapper.out",
            "error": "wrapper.err",
            "request_memory": "64",
            "+WantIOProxy": "true",
        }
    )
    cluster = schedd.submit(submit).cluster()
    try:
        deadline = time.monotonic() + 180
        live = None
        while time.monotonic() < deadline:
            ads = schedd.query(f"ClusterId == {cluster}", projection=["InterlinkStateC0"])
            live = ads[0].get("InterlinkStateC0") if ads else None
            if isinstance(live, str) and live.startswith("running "):
                break
            time.sleep(0.5)
        assert isinstance(live, str) and live.startswith("running "), live
        (ctl / "go").touch()
        ad = wait_job(cluster)
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster} && JobStatus != 4")
    main = classad_attrs.decode_state(ad["InterlinkStateC0"])
    init = classad_attrs.decode_state(ad["InterlinkStateI0"])
    assert main is not None and (main.state, main.exit_code, main.reason) == (
        "terminated",
        3,
        "Error",
    )
    assert init is not None and (init.state, init.reason) == ("terminated", "Completed")
    assert main.finished >= main.started >= init.finished > 0
    assert ad["ExitCode"] == 3
    assert "condor_chirp" not in (sandbox / "wrapper.err").read_text()  # no chirp failure
