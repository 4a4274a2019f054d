"""What ``submit``, ``status`` and ``logs`` share: reaching a running plugin.

The plugin is found at ``--url``, else ``$INTERLINK_HTCONDOR_URL``, else the personal
pool's default ``http://127.0.0.1:4000`` (``unix:///path`` for a socket).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from interlink_htcondor.cli import UsageError
from interlink_htcondor.cli.manifests import load_documents, of_kind
from interlink_htcondor.client import PluginClient, PluginError

URL_ENV = "INTERLINK_HTCONDOR_URL"
DEFAULT_URL = "http://127.0.0.1:4000"

Json = dict[str, Any]


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"plugin URL (default: ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--token-file", type=Path, help="file holding a bearer token")
    parser.add_argument("--ca", type=Path, help="CA bundle to verify an https plugin")


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", type=Path, nargs="?", help="pod manifest (for its identity)")
    parser.add_argument("--uid", help="pod UID (what submit printed)")
    parser.add_argument("--name", help="pod name (default: the manifest's)")
    parser.add_argument("--namespace", help="namespace (default: the manifest's, else 'default')")
    parser.add_argument(
        "--job-id",
        help="the pod's job id (what submit printed), so that a "
        "pod whose job vanished is reported as lost",
    )


def run_against_plugin(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace
) -> int:
    """Run ``command``; the plugin's refusals and unreachable plugins become one line."""
    try:
        return asyncio.run(command(args))
    except PluginError as e:
        raise UsageError(f"the plugin answered {e.status}: {e.detail.strip()}") from None
    except (OSError, httpx.TransportError) as e:
        raise UsageError(f"cannot reach the plugin: {e}") from None


def client(args: argparse.Namespace) -> PluginClient:
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as e:
            raise UsageError(f"cannot read {args.token_file}: {e.strerror}") from None
    verify: bool | str = str(args.ca) if args.ca else True
    return PluginClient(url, token=token, verify=verify, session=f"cli-{uuid.uuid4().hex[:12]}")


def identity(args: argparse.Namespace) -> Json:
    """A pod object carrying what /status, /getLogs and /delete need."""
    meta: Json = {}
    if args.pod is not None:
        pod = of_kind(load_documents(args.pod), "Pod", args.pod)[0]
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
