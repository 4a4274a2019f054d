"""``submit``, ``status`` and ``logs``: try a plugin with no Kubernetes at all.

``submit pod.yaml`` sends the pod exactly as interLink would (POST /create with a
RetrievedPodData body, ConfigMaps and Secrets attached to every container) and prints the
pod's UID and job id. ``status`` and ``logs [-f]`` read it back (GET /status, GET /getLogs).

The plugin is found at ``--url``, else ``$INTERLINK_HTCONDOR_URL``, else the personal
pool's default ``http://127.0.0.1:4000`` (``unix:///path`` for a socket).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from interlink_htcondor.cli import UsageError
from interlink_htcondor.client import PluginClient, PluginError

URL_ENV = "INTERLINK_HTCONDOR_URL"
DEFAULT_URL = "http://127.0.0.1:4000"

Json = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--url", help=f"plugin URL (default: ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--token-file", type=Path, help="file holding a bearer token")
    parser.add_argument("--ca", type=Path, help="CA bundle to verify an https plugin")
    if name == "submit":
        parser.description = "Send a pod manifest to the plugin as interLink would."
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
        parser.add_argument(
            "--namespace", help="namespace (default: the manifest's, else 'default')"
        )
        return
    parser.add_argument("pod", type=Path, nargs="?", help="pod manifest (for its identity)")
    parser.add_argument("--uid", help="pod UID (what submit printed)")
    parser.add_argument("--name", help="pod name (default: the manifest's)")
    parser.add_argument("--namespace", help="namespace (default: the manifest's, else 'default')")
    parser.add_argument(
        "--job-id",
        help="the pod's job id (what submit printed), so that a "
        "pod whose job vanished is reported as lost",
    )
    if name == "status":
        parser.description = "Show a pod's status as the plugin reports it."
        parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
        parser.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            default=0,
            help="poll until every container has terminated (or time out)",
        )
        return
    parser.description = "Print a container's logs."
    parser.add_argument("-c", "--container", help="container (default: the only one)")
    parser.add_argument("-f", "--follow", action="store_true", help="stream until it ends")
    parser.add_argument("--tail", type=int, default=0, help="last N lines")
    parser.add_argument("--limit-bytes", type=int, default=0, help="at most N bytes")
    parser.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="SECONDS",
        help="only lines newer than this many seconds",
    )
    parser.add_argument("--since-time", help="only lines at or after this RFC 3339 time")
    parser.add_argument("--timestamps", action="store_true", help="prefix each line's time")


def run(args: argparse.Namespace, name: str) -> int:
    handler = {"submit": _submit, "status": _status, "logs": _logs}[name]
    try:
        return asyncio.run(handler(args))
    except PluginError as e:
        raise UsageError(f"the plugin answered {e.status}: {e.detail.strip()}") from None
    except (OSError, httpx.TransportError) as e:
        raise UsageError(f"cannot reach the plugin: {e}") from None


# ----------------------------------------------------------------------------- helpers


def load_documents(path: Path) -> list[Json]:
    """All objects of a YAML/JSON file (``---`` separated documents, ``kind: List``)."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{path} is not valid YAML/JSON: {e}") from None
    out: list[Json] = []
    for d in docs:
        if d is None:
            continue
        if not isinstance(d, dict):
            raise UsageError(f"{path}: every document must be an object")
        if d.get("kind") == "List":
            out += [i for i in d.get("items") or [] if isinstance(i, dict)]
        else:
            out.append(d)
    return out


def _kind(docs: Sequence[Json], kind: str, path: Path) -> list[Json]:
    found = [d for d in docs if d.get("kind") == kind]
    if not found:
        raise UsageError(f"{path} holds no {kind}")
    return found


def _client(args: argparse.Namespace) -> PluginClient:
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as e:
            raise UsageError(f"cannot read {args.token_file}: {e.strerror}") from None
    verify: bool | str = str(args.ca) if args.ca else True
    return PluginClient(url, token=token, verify=verify, session=f"cli-{uuid.uuid4().hex[:12]}")


def _identity(args: argparse.Namespace) -> Json:
    """A pod object carrying what /status, /getLogs and /delete need."""
    meta: Json = {}
    if args.pod is not None:
        pod = _kind(load_documents(args.pod), "Pod", args.pod)[0]
        meta = dict(pod.get("metadata") or {})
    uid = args.uid or meta.get("uid")
    name = args.name or meta.get("name")
    if not uid or not name:
        raise UsageError("give the pod's manifest (with metadata.uid) or --uid, and its name")
    annotations = dict(meta.get("annotations") or {})
    if args.job_id:
        annotations["JobID"] = args.job_id
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": args.namespace or meta.get("namespace") or "default",
            "uid": uid,
            "annotations": annotations,
        },
    }


# ----------------------------------------------------------------------------- commands


async def _submit(args: argparse.Namespace) -> int:
    docs = load_documents(args.pod)
    pod = _kind(docs, "Pod", args.pod)[0]
    configmaps = [d for d in docs if d.get("kind") == "ConfigMap"]
    secrets = [d for d in docs if d.get("kind") == "Secret"]
    for path in args.configmap:
        configmaps += _kind(load_documents(path), "ConfigMap", path)
    for path in args.secret:
        secrets += _kind(load_documents(path), "Secret", path)
    projected: list[Json] = []
    for path in args.projected:
        projected += _kind(load_documents(path), "ConfigMap", path)
    meta = pod.setdefault("metadata", {})
    if args.namespace:
        meta["namespace"] = args.namespace
    meta.setdefault("namespace", "default")
    if args.uid:
        meta["uid"] = args.uid
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    pod.setdefault("status", {"phase": "Pending"})
    async with _client(args) as client:
        answer = await client.create(
            pod, configmaps=configmaps, secrets=secrets, projected=projected
        )
    print(f"pod {meta['namespace']}/{meta['name']} uid {answer['PodUID']} job {answer['PodJID']}")
    print(
        f"  status: interlink-htcondor status --uid {answer['PodUID']} "
        f"--name {meta['name']} --namespace {meta['namespace']} --job-id {answer['PodJID']}"
    )
    return 0


async def _status(args: argparse.Namespace) -> int:
    pod = _identity(args)
    deadline = time.monotonic() + args.wait
    async with _client(args) as client:
        while True:
            answer = await client.status([pod])
            entry = answer[0] if isinstance(answer, list) and answer else None
            if entry is None or not args.wait or _finished(entry):
                break
            if time.monotonic() >= deadline:
                print("timed out waiting for the pod to finish", file=sys.stderr)
                break
            await asyncio.sleep(2)
    if entry is None:
        meta = pod["metadata"]
        print(
            f"pod {meta['namespace']}/{meta['name']} (uid {meta['uid']}) is not known to "
            "the plugin",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(entry, indent=2))
        return 0
    print(format_status(entry))
    return 0


def _finished(entry: Json) -> bool:
    containers = entry.get("containers") or []
    return bool(containers) and all("terminated" in (c.get("state") or {}) for c in containers)


def format_status(entry: Json) -> str:
    """A kubectl-like table of one pod status entry."""
    rows = [("CONTAINER", "KIND", "STATE", "DETAIL")]
    for kind, key in (("init", "initContainers"), ("app", "containers")):
        for c in entry.get(key) or []:
            state = c.get("state") or {}
            if "terminated" in state:
                t = state["terminated"]
                detail = f"exit {t.get('exitCode')} {t.get('reason', '')} {t.get('message', '')}"
                rows.append((c["name"], kind, "terminated", detail.strip()))
            elif "running" in state:
                since = state["running"].get("startedAt", "")
                rows.append((c["name"], kind, "running", f"since {since}".strip()))
            else:
                w = state.get("waiting") or {}
                detail = f"{w.get('reason', '')} {w.get('message', '')}".strip()
                rows.append((c["name"], kind, "waiting", detail))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    head = (
        f"pod {entry.get('namespace')}/{entry.get('name')} uid {entry.get('UID')} "
        f"job {entry.get('JID')}"
    )
    lines = [head] + ["  ".join(r[i].ljust(width[i]) for i in range(3)) + "  " + r[3] for r in rows]
    return "\n".join(lines)


async def _logs(args: argparse.Namespace) -> int:
    pod = _identity(args)
    meta = pod["metadata"]
    container = args.container
    async with _client(args) as client:
        if container is None:
            answer = await client.status([pod])
            if not answer:
                raise UsageError(f"pod {meta['namespace']}/{meta['name']} is not known")
            names = [c["name"] for c in answer[0].get("containers") or []]
            if len(names) != 1:
                raise UsageError(f"choose a container with -c: {', '.join(names)}")
            container = names[0]
        opts: Json = {
            "Tail": args.tail,
            "Bytes": args.limit_bytes,
            "SinceSeconds": args.since,
            "Timestamps": args.timestamps,
        }
        if args.since_time:
            opts["SinceTime"] = args.since_time
        call = (meta["namespace"], meta["name"], meta["uid"], container)
        if args.follow:
            async for chunk in client.follow_logs(*call, **opts):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(await client.logs(*call, **opts))
    return 0
