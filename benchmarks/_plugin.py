"""Shared parts of the plugin benchmarks: a real plugin subprocess on loopback against the
personal pool, pods that stay queued (so 1,000 "tracked" pods cost no execute slots), and
cleanup of every job and sandbox a run made.

Every benchmark tags its jobs with its own ``policy.instance`` and removes them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from interlink_htcondor.client import create_body
from interlink_htcondor.devpool import PoolInfo, ensure_up
from interlink_htcondor.local_plugin import ServeProcess, force_remove, pool_schedd

Json = dict[str, Any]
# Never matches a slot: the job stays idle, tracked but not run.
NEVER_MATCHES = 'TARGET.Machine == "no-such-machine.invalid"'


def machine_notes() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3) if ms else float("nan"),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def idle_pod(i: int, tag: str) -> Json:
    """A small pod as Kubernetes serialises it, that HTCondor keeps queued."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"bench-{tag}-{i}",
            "namespace": "bench",
            "uid": str(uuid.uuid4()),
            "annotations": {"htcondor.interlink.eu/requirements": NEVER_MATCHES},
            "labels": {"app": "bench"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", "echo hello; sleep 5"],
                    "env": [{"name": "INDEX", "value": str(i)}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
            ],
            "tolerations": [
                {
                    "key": "virtual-node.interlink/no-schedule",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                }
            ],
        },
        "status": {"phase": "Pending"},
    }


def vk_pod(i: int, tag: str) -> Json:
    """A Dask worker pod as the virtual kubelet sends it once scheduled (managed fields,
    owner reference, tolerations, status conditions: about 3 kB of JSON), that HTCondor
    keeps queued. ``create_many`` adds the ``JobID`` annotation from /create's answer,
    as interLink does."""
    name = f"bench-{tag}-worker-{i}"
    stamp = "2026-11-30T09:12:44Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "creationTimestamp": stamp,
            "generateName": f"bench-{tag}-worker-",
            "labels": {
                "dask.org/cluster-name": f"bench-{tag}",
                "dask.org/component": "worker",
                "dask.org/workergroup-name": "default",
                "pod-template-hash": "7d9c8b6f5",
            },
            "annotations": {"htcondor.interlink.eu/requirements": NEVER_MATCHES},
            "managedFields": [
                {
                    "apiVersion": "v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, "f:spec": {}},
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "time": stamp,
                }
            ],
            "name": name,
            "namespace": "bench",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "blockOwnerDeletion": True,
                    "controller": True,
                    "kind": "ReplicaSet",
                    "name": f"bench-{tag}-worker-7d9c8b6f5",
                    "uid": "5b0e9a4c-2f61-4a8e-9d3b-7c1f0e2a4b6d",
                }
            ],
            "resourceVersion": str(900000 + i),
            "uid": str(uuid.uuid4()),
        },
        "spec": {
            "containers": [
                {
                    "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "1"],
                    "env": [
                        {"name": "DASK_WORKER_NAME", "value": name},
                        {
                            "name": "DASK_SCHEDULER_ADDRESS",
                            "value": "tcp://bench-scheduler.bench.svc.cluster.local:8786",
                        },
                    ],
                    "image": "ghcr.io/dask/dask:2026.8.0",
                    "imagePullPolicy": "IfNotPresent",
                    "name": "worker",
                    "ports": [{"containerPort": 8788, "name": "http-dashboard", "protocol": "TCP"}],
                    "resources": {
                        "limits": {"cpu": "1", "memory": "2Gi"},
                        "requests": {"cpu": "1", "memory": "2Gi"},
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
            ],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "nodeName": "vk-htcondor",
            "nodeSelector": {"kubernetes.io/hostname": "vk-htcondor"},
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {
                    "effect": "NoSchedule",
                    "key": "virtual-node.interlink/no-schedule",
                    "operator": "Exists",
                },
                {
                    "effect": "NoExecute",
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "tolerationSeconds": 300,
                },
            ],
        },
        "status": {
            "conditions": [
                {
                    "lastProbeTime": None,
                    "lastTransitionTime": stamp,
                    "status": "True",
                    "type": "PodScheduled",
                }
            ],
            "phase": "Pending",
            "qosClass": "Guaranteed",
        },
    }


class BenchPlugin(ServeProcess):
    """``interlink-htcondor serve`` (embedded default) with a private instance name."""

    def __init__(self, pool: PoolInfo, extra_env: dict[str, str] | None = None) -> None:
        self.pool = pool
        self.instance = f"bench-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "INTERLINK_HTCONDOR_POLICY__INSTANCE": self.instance,
            "INTERLINK_HTCONDOR_SERVER__LOG_LEVEL": "warning",
            **(extra_env or {}),
        }
        super().__init__(env)

    def rss_mib(self) -> float:
        """Resident memory of the plugin process (the uvicorn server is that process)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def metric(self, name: str, labels: str = "") -> float:
        """A sample of the plugin's /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        key = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0

    def metrics_sum(self, name: str, label_filter: str = "") -> float:
        """The sum of every sample of ``name`` whose labels contain ``label_filter``."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and label_filter in line.split("}", 1)[0]:
                total += float(line.split()[-1])
        return total

    def cleanup(self) -> None:
        """Remove every job and sandbox of this run."""
        schedd = pool_schedd(self.pool)
        c = f'InterlinkPlugin == "{self.instance}"'
        ads = schedd.query(c, ["InterlinkSandbox", "InterlinkPodUID"])
        force_remove(schedd, c, "benchmark over", grace=1)
        locks = self.pool.pods_dir / ".locks"
        for ad in ads:
            sb = ad.get("InterlinkSandbox")
            if isinstance(sb, str) and sb.startswith(str(self.pool.pods_dir) + "/"):
                shutil.rmtree(sb, ignore_errors=True)
            uid = ad.get("InterlinkPodUID")
            if isinstance(uid, str) and uid and "/" not in uid:
                (locks / uid).unlink(missing_ok=True)


async def create_many(
    url: str, pods: Sequence[Json], concurrency: int = 16, check: bool = True
) -> list[float]:
    """POST /create for every pod, ``concurrency`` at a time; per-call latencies. Uses the
    light ``RawHTTP`` client so that the load generator costs little CPU. A failed create
    raises (``check``) or leaves its pod without the ``JobID`` annotation."""
    host, _, port = url.removeprefix("http://").partition(":")
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    client = RawHTTP(host, int(port))

    async def one(pod: Json) -> None:
        async with sem:
            body = json.dumps(create_body(pod)).encode()
            t0 = time.perf_counter()
            status, payload = await client.request("POST", "/create", body)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                if not check:
                    return
                raise RuntimeError(f"create failed: {status} {payload[:300]!r}")
            jid = json.loads(payload)["PodJID"]
            pod["metadata"].setdefault("annotations", {})["JobID"] = jid

    try:
        await asyncio.gather(*(one(p) for p in pods))
    finally:
        await client.close()
    return latencies


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client for load generation: far cheaper per call than
    a full client library, so the load generator does not starve the plugin of CPU on a
    small machine. Requests with a body and Content-Length answers only (what the plugin
    sends for /status and /healthz)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        payload = await reader.readexactly(length)
        self.idle.append(conn)
        return status, payload

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def schedd_pid(info: PoolInfo) -> int | None:
    """Host pid of the pool's ``condor_schedd`` (in the pool's PID namespace)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "condor_schedd":
                continue
            if os.readlink(entry / "ns" / "pid") == info.pid_ns:
                return int(entry.name)
        except OSError:
            continue
    return None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a process (and of its children it has reaped: the
    schedd's forked query workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def parser(doc: str | None, pods: int) -> argparse.ArgumentParser:
    """The command line of a benchmark: its docstring's first line and ``--pods``."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--pods", type=int, default=pods)
    return ap


def new_result(name: str, args: argparse.Namespace) -> Json:
    return {"benchmark": name, "machine": machine_notes(), "params": vars(args)}


@contextlib.contextmanager
def running(info: PoolInfo) -> Iterator[BenchPlugin]:
    """A started plugin; afterwards it is stopped and every job and sandbox of it removed."""
    bench = BenchPlugin(info)
    bench.start()
    try:
        yield bench
    finally:
        bench.stop()
        bench.cleanup()


def pool() -> PoolInfo:
    info = ensure_up()
    info.apply_client_env()
    return info


def write_result(name: str, result: Json) -> None:
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
