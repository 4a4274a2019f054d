"""The personal pool itself: real schedd, negotiator, startd and Apptainer."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import htcondor2
import pytest

from interlink_htcondor import devpool
from interlink_htcondor.devpool import daemons

COMPLETED = 4
RUNNING = 2
POOL_CYCLE_ENV = "INTERLINK_HTCONDOR_TEST_POOL_CYCLE"
CONDOR_CHIRP = "/usr/libexec/condor/condor_chirp"
WaitJob = Callable[..., Any]


def pool_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlink_htcondor", "pool", *args],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


def job_script(pool: devpool.PoolInfo, job_dir: Path, text: str) -> Path:
    """An executable script in the shared directory, owned by the job user."""
    path = job_dir / "job.sh"
    path.write_text(text)
    path.chmod(0o755)
    os.chown(path, pool.job_uid, pool.job_gid)
    return path


def assert_completed(ad: Any) -> None:
    assert ad["JobStatus"] == COMPLETED, ad.get("HoldReason", ad)
    assert ad["ExitCode"] == 0, ad


def test_container_universe_job_on_busybox_image(
    pool: devpool.PoolInfo, schedd: Any, job_dir: Path, wait_job: WaitJob
) -> None:
    sub = htcondor2.Submit({
        "universe": "container",
        "container_image": str(pool.images["busybox"]),
        "transfer_container": "false",
        "executable": "/bin/sh",
        "transfer_executable": "false",
        "arguments": "\"-c 'busybox | head -n 1; echo container-ok'\"",
        "initialdir": str(job_dir),
        "output": "out.txt",
        "error": "err.txt",
        "log": "job.log",
        "should_transfer_files": "NO",
        "request_cpus": "1",
        "request_memory": "64",
    })  # fmt: skip
    ad = wait_job(schedd.submit(sub).cluster())
    assert_completed(ad)
    out = (job_dir / "out.txt").read_text()
    assert out.startswith("BusyBox v"), out
    assert "container-ok" in out


def test_vanilla_job_runs_apptainer_itself(
    pool: devpool.PoolInfo, schedd: Any, job_dir: Path, wait_job: WaitJob
) -> None:
    script = job_script(pool, job_dir, (
        "#!/bin/sh\nset -e\n"
        'exec apptainer exec --cleanenv "$1" python3 -c '
        "'import sys, dask, distributed; "
        'print("python", *sys.version_info[:2], dask.__version__, distributed.__version__)'
        "'\n"
    ))  # fmt: skip
    sub = htcondor2.Submit({
        "executable": str(script),
        "arguments": str(pool.images["python"]),
        "initialdir": str(job_dir),
        "output": "out.txt",
        "error": "err.txt",
        "should_transfer_files": "NO",
        "request_memory": "256",
    })  # fmt: skip
    ad = wait_job(schedd.submit(sub).cluster())
    assert_completed(ad)
    words = (job_dir / "out.txt").read_text().split()
    assert words == [
        "python", "3", "11",
        importlib.metadata.version("dask"), importlib.metadata.version("distributed"),
    ], (job_dir / "err.txt").read_text()  # fmt: skip


def test_spooled_submission_output_comes_back_with_retrieve(
    pool: devpool.PoolInfo, schedd: Any, tmp_path: Path
) -> None:
    # A directory only the submitting side has: everything travels through the schedd's spool.
    (tmp_path / "input.txt").write_text("spool input\n")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\ntr a-z A-Z < input.txt > result.txt\necho spooled-ok\n")
    script.chmod(0o755)
    sub = htcondor2.Submit({
        "executable": str(script),
        "initialdir": str(tmp_path),
        "transfer_input_files": "input.txt",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "output": "out.txt",
        "error": "err.txt",
        "request_memory": "64",
    })  # fmt: skip
    result = schedd.submit(sub, spool=True)
    schedd.spool(result)
    cluster = result.cluster()
    try:
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline:
            ads = schedd.query(
                f"ClusterId == {cluster}", ["JobStatus", "HoldReason", "HoldReasonCode"]
            )
            assert ads, "a spooled job must stay in the queue until its output is retrieved"
            status = ads[0]["JobStatus"]
            # Held with code 16 while the input is being spooled, then released.
            assert status != 5 or ads[0].get("HoldReasonCode") == 16, ads[0].get("HoldReason")
            if status == COMPLETED:
                break
            time.sleep(0.5)
        assert status == COMPLETED
        assert not (tmp_path / "result.txt").exists()
        schedd.retrieve(f"ClusterId == {cluster}")
        assert (tmp_path / "result.txt").read_text() == "SPOOL INPUT\n"
        assert (tmp_path / "out.txt").read_text() == "spooled-ok\n"
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")


def test_job_sets_its_own_attribute_with_chirp(
    pool: devpool.PoolInfo, schedd: Any, job_dir: Path, wait_job: WaitJob
) -> None:
    script = job_script(pool, job_dir, (
        f"#!/bin/sh\nset -e\n{CONDOR_CHIRP} set_job_attr InterlinkPoolTest '\"chirped\"'\n"
        "sleep 6\n"
    ))  # fmt: skip
    sub = htcondor2.Submit({
        "executable": str(script),
        "initialdir": str(job_dir),
        "output": "out.txt",
        "error": "err.txt",
        "should_transfer_files": "NO",
        "request_memory": "64",
        "+WantIOProxy": "true",
    })  # fmt: skip
    cluster = schedd.submit(sub).cluster()
    seen_live = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and seen_live is None:
        ads = schedd.query(f"ClusterId == {cluster}", ["JobStatus", "InterlinkPoolTest"])
        if not ads or ads[0]["JobStatus"] in (3, COMPLETED, 5):
            break  # finished (or removed, held) before the attribute was seen
        if ads[0]["JobStatus"] == RUNNING and "InterlinkPoolTest" in ads[0]:
            seen_live = ads[0]["InterlinkPoolTest"]
        time.sleep(0.5)
    assert seen_live == "chirped", "the attribute must be visible while the job runs"
    ad = wait_job(cluster, projection=["JobStatus", "ExitCode", "InterlinkPoolTest"])
    assert_completed(ad)
    assert ad["InterlinkPoolTest"] == "chirped"


def test_slots_run_jobs_concurrently(pool: devpool.PoolInfo, schedd: Any, job_dir: Path) -> None:
    assert pool.slots >= 8
    n = pool.slots
    sub = htcondor2.Submit({
        "executable": "/bin/sleep",
        "transfer_executable": "false",
        "arguments": "30",
        "initialdir": str(job_dir),
        "should_transfer_files": "NO",
        "request_cpus": "1",
        "request_memory": "64",
    })  # fmt: skip
    cluster = schedd.submit(sub, count=n).cluster()
    most = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and most < n:
            ads = schedd.query(f"ClusterId == {cluster} && JobStatus == {RUNNING}", ["ProcId"])
            most = max(most, len(ads))
            time.sleep(0.5)
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")
    assert most == n, f"only {most} of {n} one-CPU jobs ran at the same time"


def test_python_image_matches_host_versions_and_runs_like_docker(pool: devpool.PoolInfo) -> None:
    names = ["dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "numpy",
             "scipy", "uproot", "awkward", "dask-awkward", "hist", "vector"]  # fmt: skip
    code = (
        "import importlib.metadata as m, json, sys;"
        f"print(json.dumps([list(sys.version_info[:2]), {{n: m.version(n) for n in {names!r}}}]))"
    )
    image = str(pool.images["python"])
    r = pool.run_in_pool(["apptainer", "run", image, "python3", "-c", code], timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    minor, versions = json.loads(r.stdout)
    assert tuple(minor) == sys.version_info[:2]
    assert versions == {n: importlib.metadata.version(n) for n in names}
    # No arguments: the runscript starts python3 (reading the program from stdin).
    r = pool.run_in_pool(["apptainer", "run", image], input=b"print(6 * 7)\n", timeout=120)
    assert (r.returncode, r.stdout) == (0, b"42\n"), r.stderr.decode()
    r = pool.run_in_pool(["apptainer", "exec", image, "dask", "worker", "--help"], timeout=120)
    assert r.returncode == 0 and b"Usage: dask worker" in r.stdout, r.stderr.decode()
    # The job user runs it: the same uid as on the host.
    r = pool.run_in_pool(["apptainer", "exec", str(pool.images["busybox"]), "id", "-u"])
    assert r.stdout.decode().strip() == str(pool.job_uid)


def test_pool_env_configures_another_process(pool: devpool.PoolInfo, schedd: Any) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("_CONDOR_", "CONDOR_", "INTERLINK_HTCONDOR_POOL_"))}  # fmt: skip
    env["INTERLINK_HTCONDOR_POOL_DIR"] = str(pool.state_dir)
    script = (
        'eval "$("$1" -m interlink_htcondor pool env)" && exec "$1" -c '
        "'import htcondor2; print(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd)"
        '["Name"])\''
    )
    r = subprocess.run(["sh", "-c", script, "sh", sys.executable], env=env,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    located = htcondor2.Collector(pool.collector).locate(htcondor2.DaemonType.Schedd)
    assert r.stdout.strip() == located["Name"]


def test_job_user_on_the_host_reads_the_pool_and_submits(pool: devpool.PoolInfo) -> None:
    """What the plugin does after dropping root: find the pool, write a sandbox, submit."""
    token = pool.token_dir / "pool.token"
    assert pool.token_dir.stat().st_uid == pool.job_uid
    assert pool.token_dir.stat().st_mode & 0o777 == 0o700
    assert token.stat().st_uid == pool.job_uid
    assert token.stat().st_mode & 0o777 == 0o600
    code = (
        "import os, htcondor2\n"
        "from interlink_htcondor import devpool\n"
        "info = devpool.read_info()\n"
        "info.apply_client_env()\n"
        "open(info.pods_dir / f'probe-{os.getpid()}', 'w').close()\n"
        "schedd = htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd))\n"
        "r = schedd.submit(htcondor2.Submit({'executable': '/bin/true', 'hold': 'true'}))\n"
        "owner = schedd.query(f'ClusterId == {r.cluster()}', ['Owner'])[0]['Owner']\n"
        "schedd.act(htcondor2.JobAction.Remove, f'ClusterId == {r.cluster()}')\n"
        "os.unlink(info.pods_dir / f'probe-{os.getpid()}')\n"
        "print(owner)\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": f"/home/{pool.job_user}", "LANG": "C.UTF-8",
           "INTERLINK_HTCONDOR_POOL_DIR": str(pool.state_dir)}  # fmt: skip
    r = subprocess.run(
        ["setpriv", f"--reuid={pool.job_uid}", f"--regid={pool.job_gid}", "--init-groups",
         sys.executable, "-c", code],
        env=env, capture_output=True, text=True, timeout=60, cwd="/", check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pool.job_user


def listening_addresses(pids: list[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on (IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                addr = bytes.fromhex(fields[1].split(":")[0])
                if len(addr) == 4:
                    found.add(".".join(str(b) for b in reversed(addr)))
                else:
                    found.add(addr.hex())
    return found


def test_daemons_listen_on_loopback_only(pool: devpool.PoolInfo) -> None:
    addresses = listening_addresses(daemons.processes_in(pool.pid_ns))
    assert addresses == {"127.0.0.1"}


def test_pool_up_is_idempotent(pool: devpool.PoolInfo) -> None:
    for _ in range(2):
        start = time.monotonic()
        r = pool_cli("up", "--quiet")
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - start < 10
    info = devpool.read_info()
    assert info is not None and info.master_pid == pool.master_pid
    assert daemons.find_inits(pool.rootfs) == [pool.init_pid]
    masters = [p for p in daemons.processes_in(pool.pid_ns) if comm(p) == "condor_master"]
    assert masters == [pool.master_pid]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def other_pools_namespaces() -> set[str]:
    """PID namespaces of pools from other state directories (benchmarks may run one)."""
    return {daemons.namespace(p) for p in daemons.find_inits(None)}


@pytest.mark.pool_cycle
def test_pool_down_leaves_nothing_and_warm_up_is_fast(pool: devpool.PoolInfo) -> None:
    if not os.environ.get(POOL_CYCLE_ENV):
        pytest.skip(f"stops the shared pool; set {POOL_CYCLE_ENV}=1 (make test does)")
    r = pool_cli("down")
    assert r.returncode == 0, r.stderr
    assert devpool.read_info() is None
    assert daemons.find_inits(pool.rootfs) == []
    assert daemons.processes_in(pool.pid_ns) == []
    others = other_pools_namespaces()
    assert [p for p, _ in daemons.condor_processes() if daemons.namespace(p) not in others] == []
    assert daemons.host_mounts_under(pool.state_dir) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(pool.rootfs) not in mounts
    start = time.monotonic()
    r = pool_cli("up", "--quiet")
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert elapsed < 30, f"warm pool up took {elapsed:.1f} s"
    info = devpool.read_info()
    assert info is not None
    info.apply_client_env()
    # This process still holds security sessions with the old daemons: the first call is
    # rejected (and the session dropped), the next one negotiates afresh.
    located = None
    for _ in range(3):
        try:
            located = htcondor2.Collector(info.collector).locate(htcondor2.DaemonType.Schedd)
            break
        except htcondor2.HTCondorException:
            time.sleep(0.5)
    assert located is not None
    # The same for the schedd: the session-wide plugin fixture queries it at its teardown,
    # after this test, with this process's sessions.
    schedd = htcondor2.Schedd(located)
    for attempt in range(3):
        try:
            schedd.query(constraint="false", projection=["ClusterId"])
            break
        except htcondor2.HTCondorException:
            assert attempt < 2, "the restarted schedd refused three queries"
            time.sleep(0.5)
