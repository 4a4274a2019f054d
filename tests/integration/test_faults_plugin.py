"""Faults of the plugin itself and of its storage, against the real pool.

- kill -9 in the middle of a burst of creates, restart, replay the same creates: every
  pod has exactly one job, and a pod answered before the kill gets the same job again;
- the sandbox directory full (a small tmpfs as ``storage.shared_dir``): a clear 507,
  nothing half-written left, and creates work again once space is freed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from faults import jobs_of, poll
from plugin_harness import load_pod, started

from interlink_htcondor.client import PluginClient
from interlink_htcondor.devpool import PoolInfo

# Creates in the burst that kill -9 cuts short.
BURST = 24


def idle_pod(name: str) -> dict[str, Any]:
    return load_pod("unschedulable.yaml", name=f"{name}-{uuid.uuid4().hex[:6]}")


def test_kill_9_during_a_burst_then_replay(pool: PoolInfo, tmp_path: Path) -> None:
    with started(pool, tmp_path) as plugin:
        pods = [idle_pod("burst") for _ in range(BURST)]
        answers: dict[str, Any] = {}

        async def burst() -> None:
            async with PluginClient(plugin.url, timeout=60) as c:

                async def one(p: dict[str, Any]) -> None:
                    try:
                        answers[p["metadata"]["uid"]] = await c.create(p)
                    except Exception as e:  # the plugin dies under it
                        answers[p["metadata"]["uid"]] = e

                await asyncio.gather(*(one(p) for p in pods))

        thread = threading.Thread(target=lambda: asyncio.run(burst()))
        thread.start()
        # Kill as soon as the first of the burst's jobs is in the queue.
        poll(
            lambda: any(jobs_of(pool, plugin.instance, p["metadata"]["uid"]) for p in pods),
            60,
            "a first job of the burst",
        )
        assert plugin.proc is not None
        plugin.proc.kill()
        plugin.proc.wait(30)
        plugin.proc = None
        thread.join(120)
        assert len(answers) == len(pods)
        before = {uid: a for uid, a in answers.items() if isinstance(a, dict)}

        plugin.start()
        replayed = {p["metadata"]["uid"]: plugin.create(p) for p in pods}
        for p in pods:
            uid = p["metadata"]["uid"]
            jobs = jobs_of(pool, plugin.instance, uid)
            assert len(jobs) == 1, f"pod {uid}: {len(jobs)} jobs"
            assert replayed[uid]["PodJID"] == f"{jobs[0]['ClusterId']}.{jobs[0]['ProcId']}"
            if uid in before:
                assert before[uid]["PodJID"] == replayed[uid]["PodJID"]
        # And again: nothing new.
        assert {p["metadata"]["uid"]: plugin.create(p) for p in pods} == replayed


def _mount_tmpfs(path: Path, size: str, uid: int, gid: int) -> None:
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size},uid={uid},gid={gid},mode=0755",
            "tmpfs",
            str(path),
        ],
        check=True,
    )


def _fill(path: Path) -> Path:
    """Fill the file system of ``path`` to the last byte."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def test_a_full_sandbox_directory(pool: PoolInfo, tmp_path: Path) -> None:
    # Where the plugin (the job user) can reach it; the pool's jobs see the directory
    # below the mount, which is fine: the pod's job never runs (no slot matches it).
    shared = pool.make_job_dir(f"test-full-{uuid.uuid4().hex[:8]}")
    _mount_tmpfs(shared, "4m", pool.job_uid, pool.job_gid)
    try:
        env = {"INTERLINK_HTCONDOR_STORAGE__SHARED_DIR": str(shared)}
        with started(pool, tmp_path, **env) as plugin:
            filler = _fill(shared)
            pod = idle_pod("full")
            t0 = time.monotonic()
            r = httpx.post(plugin.url + "/create", json=plugin.create_body(pod), timeout=60)
            assert time.monotonic() - t0 < 10
            assert r.status_code == 507, r.text
            assert "no space left" in r.text and pod["metadata"]["name"] in r.text
            # Nothing half-written: no sandbox, no lock file of the pod.
            left = sorted(str(p.relative_to(shared)) for p in shared.rglob("*"))
            assert left in (["filler"], [".locks", "filler"]), left
            assert jobs_of(pool, plugin.instance, pod["metadata"]["uid"]) == []
            assert httpx.get(plugin.url + "/healthz", timeout=10).status_code == 200
            # Space again: the same create goes through.
            filler.unlink()
            answer = plugin.create(pod)
            (job,) = jobs_of(pool, plugin.instance, pod["metadata"]["uid"])
            assert answer["PodJID"] == f"{job['ClusterId']}.{job['ProcId']}"
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=False)
        os.rmdir(shared)
