"""``interlink-htcondor pool exec``: HTCondor's tools inside the pool, from the host."""

from __future__ import annotations

import subprocess
import sys

from interlink_htcondor.devpool import PoolInfo


def pool_exec(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "interlink_htcondor", "pool", "exec", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_condor_q_runs_inside_the_pool_as_the_jobs_owner(pool: PoolInfo) -> None:
    r = pool_exec("condor_q", "-totals")
    assert r.returncode == 0, r.stderr
    assert f"Total for {pool.job_user}@" in r.stdout  # the owner of the plugin's jobs
    assert pool_exec("id", "-un").stdout.strip() == pool.job_user
    assert pool_exec("--user", "root", "id", "-un").stdout.strip() == "root"


def test_arguments_pass_through_without_a_shell_and_the_exit_code_too(pool: PoolInfo) -> None:
    hostile = ["a b", "$(touch /tmp/pwned)", ";", "'\"", "*"]
    r = pool_exec("--", "printf", "%s\\n", *hostile)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == hostile
    assert pool_exec("sh", "-c", "exit 3").returncode == 3


def test_no_command_is_a_clear_error(pool: PoolInfo) -> None:
    r = pool_exec()
    assert r.returncode == 2
    assert "give the command to run" in r.stderr
