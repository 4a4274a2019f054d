"""One pod container -> ``ContainerSpec`` (image, argv, env, mounts, limits, probes, hooks).

Kubelet semantics: no ``command`` runs the image's entrypoint/runscript with ``args``
(mode "run"); otherwise ``command + args`` is executed (mode "exec"). Both expand
``$(VAR)`` against the container's environment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from interlink_htcondor.core.jobspec import ContainerSpec
from interlink_htcondor.core.models import Container
from interlink_htcondor.core.translate.context import PodContext
from interlink_htcondor.core.translate.envvars import check_value, container_env, expand_argv
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.images import resolve
from interlink_htcondor.core.translate.limits import ContainerBudget
from interlink_htcondor.core.translate.probes import (
    build_hooks,
    build_probes,
    refuse_on_init_container,
)
from interlink_htcondor.core.translate.resources import GPU_RESOURCES
from interlink_htcondor.core.translate.volumes import VolumePlan, container_mounts
from interlink_htcondor.settings import ImageRule

INIT = "init container"
APP = "container"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def build_container(
    ctx: PodContext,
    c: Container,
    kind: str,
    volumes: VolumePlan,
    image_rules: Sequence[ImageRule],
    apptainer_args: Sequence[str],
) -> ContainerSpec:
    where = f"{kind} {c.name!r}"
    if kind == INIT and c.restart_policy == "Always":
        raise TranslationError(
            f"{where}: sidecar init containers (restartPolicy Always) are not supported"
        )
    if kind == INIT:
        refuse_on_init_container(c, where)
    image = resolve(c.image, image_rules, where)
    for e in c.env:
        # Apptainer carries only shell-identifier names (any other name makes it drop the
        # whole environment), so an explicit one is refused here rather than lost in the job.
        # envFrom keys that are not identifiers are skipped in the job, as the kubelet does.
        if not _IDENTIFIER.fullmatch(e.name):
            raise TranslationError(
                f"{where}: env {e.name!r}: Apptainer passes only names made of letters, "
                "digits and '_' that do not start with a digit"
            )
    budget = ContainerBudget(ctx.limits, where)
    env = container_env(ctx, c, kind, budget)
    env_map = dict(env)
    if c.command:
        mode = "exec"
        argv = expand_argv([*c.command, *c.args], env_map, f"{where}: command+args", budget)
    else:
        mode = "run"
        argv = expand_argv(list(c.args), env_map, f"{where}: args", budget)
    if c.working_dir:
        check_value(c.working_dir, f"{where}: workingDir", ctx.limits.max_value_bytes)
        if not c.working_dir.startswith("/") or "\n" in c.working_dir:
            raise TranslationError(f"{where}: workingDir {c.working_dir!r} must be absolute")
    res = ctx.resources[c.name]
    extra = list(apptainer_args)
    gpu_flag = GPU_RESOURCES.get(res.gpu_resource) if res.gpus else None
    if gpu_flag and gpu_flag not in extra:
        extra.append(gpu_flag)
    hooks = build_hooks(c, where, ctx.pod.spec.termination_grace_period_seconds, budget)
    probes = build_probes(c, where, budget)
    return ContainerSpec(
        name=c.name,
        image=image,
        mode=mode,
        argv=argv,
        working_dir=c.working_dir or None,
        env=env,
        mounts=container_mounts(c, kind, volumes, env_map, ctx.limits),
        memory_limit_bytes=res.memory_limit,
        post_start=hooks.post_start,
        pre_stop=hooks.pre_stop,
        startup_probe=probes.startup,
        liveness_probe=probes.liveness,
        readiness_probe=probes.readiness,
        apptainer_args=extra,
    )
