"""One pod container -> ``ContainerSpec`` (image, argv, env, mounts, limits, hooks).

Kubelet semantics: no ``command`` runs the image's entrypoint/runscript with ``args``
(mode "run"); otherwise ``command + args`` is executed (mode "exec"). Both expand
``$(VAR)`` against the container's environment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from interlink_htcondor.jobspec import ContainerSpec, ExecAction
from interlink_htcondor.models import Container
from interlink_htcondor.settings import ImageRule
from interlink_htcondor.translate.context import PodContext
from interlink_htcondor.translate.envvars import check_value, container_env, expand_argv
from interlink_htcondor.translate.errors import TranslationError
from interlink_htcondor.translate.images import resolve
from interlink_htcondor.translate.limits import ContainerBudget, check_count
from interlink_htcondor.translate.resources import GPU_RESOURCES
from interlink_htcondor.translate.volumes import VolumePlan, container_mounts

INIT = "init container"
APP = "container"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _pre_stop(c: Container, where: str, budget: ContainerBudget) -> ExecAction | None:
    if c.lifecycle is None:
        return None
    if c.lifecycle.post_start is not None:
        raise TranslationError(f"{where}: postStart hooks are not supported")
    hook = c.lifecycle.pre_stop
    if hook is None:
        return None
    if hook.exec is None or hook.http_get or hook.tcp_socket or hook.sleep:
        raise TranslationError(f"{where}: only exec preStop hooks are supported")
    if not hook.exec.command:
        raise TranslationError(f"{where}: preStop exec needs a command")
    check_count(
        hook.exec.command, budget.limits.max_args, f"{where}: preStop command", "limits.max_args"
    )
    for i, a in enumerate(hook.exec.command):
        w = f"{where}: preStop command[{i}]"
        budget.charge(check_value(a, w, budget.limits.max_value_bytes) + 1, w)
    return ExecAction(argv=list(hook.exec.command))


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
    return ContainerSpec(
        name=c.name,
        image=image,
        mode=mode,
        argv=argv,
        working_dir=c.working_dir or None,
        env=env,
        mounts=container_mounts(c, kind, volumes, env_map, ctx.limits),
        memory_limit_bytes=res.memory_limit,
        pre_stop=_pre_stop(c, where, budget),
        apptainer_args=extra,
    )
