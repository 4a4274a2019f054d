"""``interlink-htcondor submit pod.yaml``: send a pod to a running plugin as interLink would.

POST /create with a RetrievedPodData body (ConfigMaps and Secrets attached to every
container), then print the pod's UID and job id. No Kubernetes needed.
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from interlink_htcondor.cli import admin
from interlink_htcondor.cli.manifests import Json, load_documents, of_kind


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = "Send a pod manifest to the plugin as interLink would."
    admin.add_connection_arguments(parser)
    parser.add_argument("pod", type=Path, help="pod manifest (YAML or JSON)")
    parser.add_argument(
        "--configmap",
        type=Path,
        action="append",
        default=[],
        help="ConfigMap manifest the pod uses (repeatable)",
    )
    parser.add_argument(
        "--secret",
        type=Path,
        action="append",
        default=[],
        help="Secret manifest the pod uses (repeatable)",
    )
    parser.add_argument(
        "--projected",
        type=Path,
        action="append",
        default=[],
        help="ConfigMap holding projected volume files (repeatable)",
    )
    parser.add_argument("--uid", help="pod UID (default: the manifest's, else a new one)")
    parser.add_argument("--namespace", help="namespace (default: the manifest's, else 'default')")


def run(args: argparse.Namespace, name: str) -> int:
    return admin.run_against_plugin(_submit, args)


async def _submit(args: argparse.Namespace) -> int:
    docs = load_documents(args.pod)
    pod = of_kind(docs, "Pod", args.pod)[0]
    configmaps = [d for d in docs if d.get("kind") == "ConfigMap"]
    secrets = [d for d in docs if d.get("kind") == "Secret"]
    for path in args.configmap:
        configmaps += of_kind(load_documents(path), "ConfigMap", path)
    for path in args.secret:
        secrets += of_kind(load_documents(path), "Secret", path)
    projected: list[Json] = []
    for path in args.projected:
        projected += of_kind(load_documents(path), "ConfigMap", path)
    meta = pod.setdefault("metadata", {})
    if args.namespace:
        meta["namespace"] = args.namespace
    meta.setdefault("namespace", "default")
    if args.uid:
        meta["uid"] = args.uid
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    pod.setdefault("status", {"phase": "Pending"})
    async with admin.client(args) as client:
        answer = await client.create(
            pod, configmaps=configmaps, secrets=secrets, projected=projected
        )
    print(f"pod {meta['namespace']}/{meta['name']} uid {answer['PodUID']} job {answer['PodJID']}")
    print(
        f"  status: interlink-htcondor status --uid {answer['PodUID']} "
        f"--name {meta['name']} --namespace {meta['namespace']} --job-id {answer['PodJID']}"
    )
    return 0
