"""``translate``: one create request -> the JobPlan the schedd gateway submits. Pure."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from interlink_htcondor.core.jobspec import (
    SPEC_FILE,
    WRAPPER_FILE,
    ApptainerSpec,
    ContainerSpec,
    JobSpec,
    PodIdentity,
)
from interlink_htcondor.core.models import Container, CreateRequest
from interlink_htcondor.core.plan import JobPlan, SandboxFile
from interlink_htcondor.core.translate import submit as sd
from interlink_htcondor.core.translate.annotations import PodOptions, parse_annotations
from interlink_htcondor.core.translate.containers import APP, INIT, build_container
from interlink_htcondor.core.translate.context import PodContext, collect
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.limits import PodBudget, check_pod, check_seconds
from interlink_htcondor.core.translate.paths import check_dns_label, sandbox_name
from interlink_htcondor.core.translate.resources import container_resources, pod_resources
from interlink_htcondor.core.translate.volumes import build_volumes
from interlink_htcondor.core.translate.wrapper import wrapper_file
from interlink_htcondor.settings import Settings

DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds


def sandbox_dir(settings: Settings, namespace: str, name: str, uid: str) -> Path:
    """``<storage.shared_dir>/<namespace>_<name>_<uid>``; raises TranslationError for
    identities that are not DNS names / UUID-like (nothing may escape ``shared_dir``)."""
    return settings.storage.shared_dir / sandbox_name(namespace, name, uid)


def _wall_seconds(req: CreateRequest, options: PodOptions, settings: Settings) -> int | None:
    deadline = req.pod.spec.active_deadline_seconds
    if deadline is not None:
        check_seconds(deadline, "activeDeadlineSeconds")
    chosen = [s for s in (deadline, options.wall_seconds) if s]
    cap = settings.resources.max_wall_seconds
    if not chosen:
        default = settings.resources.default_wall_seconds
        return default if default is not None else cap
    wall = min(chosen)
    if cap is not None and wall > cap:
        raise TranslationError(
            f"the pod asks for a wall time of {wall} s; this site accepts at most {cap} s"
        )
    return wall


def _container_mode_checks(req: CreateRequest, options: PodOptions, mode: str) -> None:
    pod = req.pod
    problems = []
    if len(pod.spec.containers) != 1 or pod.spec.init_containers:
        problems.append("exactly one container and no init containers")
    c = pod.spec.containers[0]
    if c.volume_mounts:
        problems.append("no volume mounts")
    if c.working_dir:
        problems.append("no workingDir")
    if c.lifecycle is not None and (c.lifecycle.pre_stop or c.lifecycle.post_start):
        problems.append("no lifecycle hooks")
    if c.startup_probe or c.liveness_probe or c.readiness_probe:
        problems.append("no probes")
    if options.apptainer_args or options.container_apptainer_args:
        problems.append("no apptainer options")
    if options.prologue:
        problems.append("no prologue (interLink port exposure or mesh)")
    # The environment becomes part of the job ClassAd, which pool users can read.
    if any(e.value_from and e.value_from.secret_key_ref for e in c.env) or any(
        s.secret_ref for s in c.env_from
    ):
        problems.append("no environment from secrets")
    if problems:
        raise TranslationError(
            f"containers.mode {mode} runs single-container pods only, with "
            f"{'; '.join(problems)}; this pod needs containers.mode apptainer"
        )


def translate(req: CreateRequest, settings: Settings) -> JobPlan:
    """Translate one pod. Raises ``TranslationError`` (a client error) with a clear message."""
    pod = req.pod
    meta = pod.metadata
    limits = settings.limits
    sandbox = PurePosixPath(sandbox_dir(settings, meta.namespace, meta.name, meta.uid))
    sd.check_sandbox(sandbox)
    served = settings.policy.namespaces
    if served and meta.namespace not in served:
        raise TranslationError(
            f"this plugin runs pods of namespaces {', '.join(served)} only, not "
            f"{meta.namespace!r} (policy.namespaces)"
        )
    check_pod(pod, limits)

    init_names = [c.name for c in pod.spec.init_containers]
    app_names = [c.name for c in pod.spec.containers]
    for name in (*init_names, *app_names):
        check_dns_label(name, "container name")
    duplicates = sorted(
        {n for n in init_names + app_names if (init_names + app_names).count(n) > 1}
    )
    if duplicates:
        raise TranslationError(f"container names must be unique: {', '.join(duplicates)}")

    options = parse_annotations(meta.annotations, settings, init_names + app_names, meta.namespace)
    mode = options.mode or settings.containers.mode
    if mode != "apptainer":
        _container_mode_checks(req, options, mode)

    resources = {c.name: container_resources(c, INIT) for c in pod.spec.init_containers}
    resources.update({c.name: container_resources(c, APP) for c in pod.spec.containers})
    totals = pod_resources(
        [resources[n] for n in app_names], [resources[n] for n in init_names], settings.resources
    )
    configmaps, secrets, projected = collect(req)
    budget = PodBudget(limits)
    ctx = PodContext(pod, configmaps, secrets, projected, resources, totals, limits, budget)
    volumes = build_volumes(ctx, settings.storage)

    rules = settings.containers.image_rules

    def build(kind: str, containers: list[Container]) -> list[ContainerSpec]:
        return [
            build_container(
                ctx, c, kind, volumes, rules, options.container_apptainer_args.get(c.name, [])
            )
            for c in containers
        ]

    init_specs = build(INIT, pod.spec.init_containers)
    app_specs = build(APP, pod.spec.containers)

    grace = pod.spec.termination_grace_period_seconds
    spec = JobSpec(
        pod=PodIdentity(uid=meta.uid, name=meta.name, namespace=meta.namespace),
        apptainer=ApptainerSpec(
            binary=settings.containers.apptainer,
            args=[*settings.containers.apptainer_args, *options.apptainer_args],
        ),
        prologue=options.prologue,
        volumes=volumes.specs,
        init_containers=init_specs,
        containers=app_specs,
        restart_policy=pod.spec.restart_policy,
        active_deadline_seconds=_wall_seconds(req, options, settings),
        termination_grace_seconds=DEFAULT_GRACE_SECONDS if grace is None else grace,
        chirp=settings.containers.chirp,
    )

    ident = sd.Identity(
        uid=meta.uid,
        name=meta.name,
        namespace=meta.namespace,
        sandbox=sandbox,
        init_containers=tuple(init_names),
        containers=tuple(app_names),
        images=tuple(c.image for c in (*pod.spec.init_containers, *pod.spec.containers)),
    )
    desc = sd.SubmitDescription()
    spec_json = spec.to_json()
    budget.charge(len(spec_json), f"the job spec ({SPEC_FILE})")
    files = [SandboxFile(SPEC_FILE, spec_json, 0o600)]
    transfer: tuple[str, ...] = ()
    if mode == "apptainer":
        transfer = sd.apptainer_mode(desc, ident, settings, bool(volumes.files))
        files.append(SandboxFile(WRAPPER_FILE, wrapper_file(settings.containers.python), 0o755))
    else:
        sd.container_mode(desc, mode, ident, spec)
    group = sd.accounting_group(settings, meta.namespace, options.accounting_group)
    sd.common(desc, ident, settings, totals, spec, group, options.requirements)
    sd.extra_commands(desc, options.submit)
    files.extend(volumes.files)
    return JobPlan(
        pod_uid=meta.uid,
        name=meta.name,
        namespace=meta.namespace,
        submit=sd.verify(desc),
        files=tuple(files),
        transfer_input=transfer,
        init_containers=tuple(init_names),
        containers=tuple(app_names),
    )
