"""``interlink-htcondor render pod.yaml``: print the job a pod becomes, without submitting.

Shows the submit description, the job spec (``pod.json``) and the sandbox files, from the
same settings ``serve`` would use (``--config``, or else the running personal pool's
embedded defaults; then the environment). ConfigMaps, Secrets and projected-volume ConfigMaps
are given as manifests, as interLink would attach them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interlink_htcondor import client, settings
from interlink_htcondor.cli import UsageError
from interlink_htcondor.cli.manifests import load_documents, load_pod
from interlink_htcondor.core.jobspec import SPEC_FILE
from interlink_htcondor.core.models import parse_create_body, validation_message
from interlink_htcondor.core.plan import JobPlan

PARTS = ("submit", "spec", "files")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = "Print the HTCondor job a pod manifest becomes (nothing is submitted)."
    parser.add_argument("pod", type=Path, help="pod manifest (YAML or JSON)")
    parser.add_argument("--config", type=Path, help="plugin config file (YAML)")
    parser.add_argument(
        "--configmap",
        type=Path,
        action="append",
        default=[],
        help="ConfigMap manifest(s) the pod uses (repeatable; multi-document files and Lists)",
    )
    parser.add_argument(
        "--secret", type=Path, action="append", default=[], help="Secret manifest(s) (repeatable)"
    )
    parser.add_argument(
        "--projected",
        type=Path,
        action="append",
        default=[],
        help="projected volume contents as a ConfigMap named after the volume (repeatable)",
    )
    parser.add_argument(
        "--only", choices=PARTS, help="print only the submit description, spec or file list"
    )
    parser.add_argument(
        "--no-pool-defaults",
        action="store_true",
        help="without --config, use plain defaults rather than the running pool's embedded ones",
    )


def _settings(args: argparse.Namespace) -> settings.Settings:
    # As ``serve`` does: the running pool's embedded defaults only without --config.
    base: dict[str, Any] | None = None
    if args.config is None and not args.no_pool_defaults:
        try:
            from interlink_htcondor.devpool import embedded_settings, read_info

            info = read_info()
            base = embedded_settings(info) if info is not None else None
        except Exception:  # no pool state readable here: plain defaults
            base = None
    try:
        return settings.load(args.config, base)
    except settings.ConfigError as e:
        raise UsageError(str(e)) from e
    except ValidationError as e:
        raise UsageError(f"invalid settings: {validation_message(e)}") from e


def submit_text(plan: JobPlan) -> str:
    """The submit description as condor_submit would read it."""
    width = max(len(k) for k in plan.submit)
    lines = [f"{k.ljust(width)} = {v}" for k, v in plan.submit.items()]
    return "\n".join([*lines, "queue", ""])


def files_text(plan: JobPlan) -> str:
    rows = [f"{f.mode:04o} {len(f.content):>9} {f.path}" for f in plan.files]
    if plan.transfer_input:
        rows.append(f"# spooled with the job: {', '.join(plan.transfer_input)}")
    return "\n".join([*rows, ""])


def run(args: argparse.Namespace, name: str) -> int:
    from interlink_htcondor.core.translate import TranslationError, translate

    pod = load_pod(args.pod)
    configmaps = [d for p in args.configmap for d in load_documents(p)]
    secrets = [d for p in args.secret for d in load_documents(p)]
    projected = [d for p in args.projected for d in load_documents(p)]
    body = {"pod": pod, "container": client.container_data(pod, configmaps, secrets, projected)}
    try:
        req = parse_create_body(body)
    except ValidationError as e:
        raise UsageError(f"invalid pod: {validation_message(e)}") from e
    try:
        plan = translate(req, _settings(args))
    except TranslationError as e:
        raise UsageError(f"the plugin would refuse this pod: {e}") from e

    spec = next(f for f in plan.files if f.path == SPEC_FILE)
    sections = {
        "submit": submit_text(plan),
        "spec": json.dumps(json.loads(spec.content), indent=2, ensure_ascii=False) + "\n",
        "files": files_text(plan),
    }
    if args.only:
        sys.stdout.write(sections[args.only])
        return 0
    titles = {
        "submit": "# Submit description",
        "spec": f"# Job spec ({SPEC_FILE}, read by the job wrapper)",
        "files": "# Sandbox files (mode, bytes, path)",
    }
    sys.stdout.write("\n".join(f"{titles[p]}\n{sections[p]}" for p in PARTS))
    return 0
