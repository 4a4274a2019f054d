"""Pod volumes -> ``JobSpec.volumes`` plus the files the plugin writes under ``volumes/``.

configMap, secret, projected and downwardAPI volumes become files in the sandbox
(``volumes/<volume>/<path>``), emptyDir a scratch directory the job wrapper creates,
hostPath (admin allow-list) and PVCs (admin mapping) paths on the execute point. Like the
kubelet, file-backed volumes are always mounted read-only. Secret material (secret files,
service-account tokens) never keeps permission bits for others.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

from interlink_htcondor.core.jobspec import VOLUME_DIR, MountSpec, VolumeSpec
from interlink_htcondor.core.models import (
    ConfigMapProjection,
    Container,
    DownwardAPIProjection,
    KeyToPath,
    SecretProjection,
    Volume,
)
from interlink_htcondor.core.plan import SandboxFile
from interlink_htcondor.core.translate.context import PodContext
from interlink_htcondor.core.translate.downward import field_value, resource_value
from interlink_htcondor.core.translate.envvars import expand
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.limits import PodBudget, check_count
from interlink_htcondor.core.translate.paths import (
    absolute_path,
    bindable,
    check_dns_label,
    check_not_sandboxes,
    mount_path,
    relative_path,
    under_prefix,
)
from interlink_htcondor.core.translate.resources import parse
from interlink_htcondor.settings import LimitSettings, StorageSettings

DEFAULT_MODE = 0o644  # Kubernetes' default for configMap/secret/projected/downwardAPI
SECRET_DEFAULT_MODE = 0o600  # stricter than Kubernetes when the pod gives no mode
NO_OTHERS = ~0o007 & 0o777
# The cluster CA and the service-account token only exist inside the cluster: interLink
# sends them in projectedvolumemaps; without that they are left out, not an error.
CLUSTER_CA_CONFIGMAP = "kube-root-ca.crt"
SUPPORTED = "configMap, secret, projected, downwardAPI, emptyDir, hostPath, persistentVolumeClaim"


@dataclass
class VolumePlan:
    specs: dict[str, VolumeSpec] = field(default_factory=dict)
    files: list[SandboxFile] = field(default_factory=list)
    read_only: set[str] = field(default_factory=set)  # volumes always mounted read-only


def _mode(value: int | None, default: int, where: str) -> int:
    mode = default if value is None else value
    if not 0 <= mode <= 0o777:
        raise TranslationError(f"{where}: mode {value} is not between 0 and 0777")
    return mode


class _Files:
    """The files of one volume, with path checks, no file/directory clashes, and every
    file charged to the pod's budget (``items`` may name one big key many times)."""

    def __init__(self, volume: str, budget: PodBudget) -> None:
        self.volume = volume
        self.budget = budget
        self.entries: dict[str, tuple[bytes, int]] = {}

    def add(self, path: str, content: bytes, mode: int, where: str, *, secret: bool) -> None:
        relative_path(path, f"{where}: path")
        self.budget.file(len(content), f"{where}: path {path!r}")
        self.entries[path] = (content, mode & NO_OTHERS if secret else mode)

    def sandbox_files(self) -> list[SandboxFile]:
        paths = set(self.entries)
        for p in paths:
            parts = p.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in paths:
                    raise TranslationError(
                        f"volume {self.volume!r}: {'/'.join(parts[:i])!r} is both a file and "
                        "a directory"
                    )
        return [
            SandboxFile(f"{VOLUME_DIR}/{self.volume}/{p}", content, mode)
            for p, (content, mode) in sorted(self.entries.items())
        ]


def _select(
    items: list[KeyToPath],
    data: dict[str, bytes],
    out: _Files,
    default_mode: int,
    where: str,
    *,
    optional: bool,
    secret: bool,
) -> None:
    """Apply ``items`` (key -> path, mode) or take every key."""
    if not items:
        for key in sorted(data):
            out.add(key, data[key], default_mode, where, secret=secret)
        return
    for it in items:
        if it.key not in data:
            if optional:
                continue
            raise TranslationError(f"{where}: has no key {it.key!r}")
        out.add(it.path, data[it.key], _mode(it.mode, default_mode, where), where, secret=secret)


def _downward(
    ctx: PodContext,
    src: DownwardAPIProjection,
    out: _Files,
    default_mode: int,
    where: str,
    skip: Collection[str] = (),
) -> None:
    for it in src.items:
        if it.path in skip:
            continue
        w = f"{where}: item {it.path!r}"
        if it.field_ref is not None:
            text = field_value(ctx, it.field_ref, w, volume=True)
        elif it.resource_field_ref is not None:
            text = resource_value(ctx, it.resource_field_ref, "", w)
        else:
            raise TranslationError(f"{w}: needs fieldRef or resourceFieldRef")
        out.add(it.path, text.encode(), _mode(it.mode, default_mode, w), w, secret=False)


def _projected(ctx: PodContext, vol: Volume, out: _Files) -> None:
    src = vol.projected
    assert src is not None
    where = f"volume {vol.name!r}"
    default_mode = _mode(src.default_mode, DEFAULT_MODE, where)
    resolved = ctx.projected.get(vol.name)  # interLink's flattened view of the sources
    # interLink's view holds only metadata.name, namespace and uid of a downward API source:
    # the other items (labels, annotations, resource fields) come from the pod itself.
    resolved_data = {} if resolved is None else ctx.configmap_data(resolved, where)
    modes: dict[str, int] = {}
    secret_paths: set[str] = set()
    for i, proj in enumerate(src.sources):
        w = f"{where}: sources[{i}]"
        if proj.unknown_fields():
            raise TranslationError(f"{w}: projection {proj.unknown_fields()[0]} is not supported")
        if proj.config_map is not None:
            _projected_configmap(ctx, proj.config_map, resolved is None, out, default_mode, w)
            for it in proj.config_map.items:
                modes[it.path] = _mode(it.mode, default_mode, w)
        elif proj.secret is not None:
            _projected_secret(ctx, proj.secret, out, default_mode, w)
            secret_paths.update(it.path for it in proj.secret.items)
        elif proj.downward_api is not None:
            _downward(ctx, proj.downward_api, out, default_mode, w, skip=resolved_data)
            for d in proj.downward_api.items:
                modes[d.path] = _mode(d.mode, default_mode, w)
        elif proj.service_account_token is not None:
            secret_paths.add(proj.service_account_token.path)
    if resolved is not None:
        for path, content in resolved_data.items():
            out.add(
                path,
                content,
                modes.get(path, default_mode),
                where,
                secret=path in secret_paths,
            )


def _projected_configmap(
    ctx: PodContext,
    src: ConfigMapProjection,
    build: bool,
    out: _Files,
    default_mode: int,
    where: str,
) -> None:
    if not build:
        return
    cm = ctx.configmaps.get(src.name)
    if cm is None:
        if src.optional or src.name == CLUSTER_CA_CONFIGMAP:
            return
        raise TranslationError(f"{where}: configMap {src.name!r} is not in the request")
    _select(
        src.items,
        ctx.configmap_data(cm, where),
        out,
        default_mode,
        f"{where}: configMap {src.name!r}",
        optional=bool(src.optional),
        secret=False,
    )


def _projected_secret(
    ctx: PodContext, src: SecretProjection, out: _Files, default_mode: int, where: str
) -> None:
    secret = ctx.secrets.get(src.name)
    if secret is None:
        if src.optional:
            return
        raise TranslationError(f"{where}: secret {src.name!r} is not in the request")
    _select(
        src.items,
        ctx.secret_data(secret, where),
        out,
        default_mode,
        f"{where}: secret {src.name!r}",
        optional=bool(src.optional),
        secret=True,
    )


def _sources(vol: Volume) -> list[str]:
    known = {
        "configMap": vol.config_map,
        "secret": vol.secret,
        "projected": vol.projected,
        "downwardAPI": vol.downward_api,
        "emptyDir": vol.empty_dir,
        "hostPath": vol.host_path,
        "persistentVolumeClaim": vol.persistent_volume_claim,
    }
    return [k for k, v in known.items() if v is not None]


def build_volumes(ctx: PodContext, storage: StorageSettings) -> VolumePlan:
    plan = VolumePlan()
    ns = ctx.pod.metadata.namespace
    check_count(ctx.pod.spec.volumes, ctx.limits.max_volumes, "volumes", "limits.max_volumes")
    for vol in ctx.pod.spec.volumes:
        where = f"volume {vol.name!r}"
        check_dns_label(vol.name, "volume name")
        if vol.name in plan.specs:
            raise TranslationError(f"{where}: defined twice")
        if vol.unknown_fields():
            raise TranslationError(
                f"{where}: type {vol.unknown_fields()[0]!r} is not supported (supported: "
                f"{SUPPORTED})"
            )
        kinds = _sources(vol)
        if len(kinds) > 1:
            raise TranslationError(f"{where}: has several sources: {', '.join(kinds)}")
        kind = kinds[0] if kinds else "emptyDir"  # the API server's default source
        sandbox = VolumeSpec(kind="sandbox", path=f"{VOLUME_DIR}/{vol.name}")
        files = _Files(vol.name, ctx.budget)
        if kind == "configMap":
            src = vol.config_map
            assert src is not None
            plan.read_only.add(vol.name)
            cm = ctx.configmaps.get(src.name)
            if cm is None and not src.optional:
                raise TranslationError(f"{where}: configMap {src.name!r} is not in the request")
            if cm is not None:
                _select(
                    src.items,
                    ctx.configmap_data(cm, where),
                    files,
                    _mode(src.default_mode, DEFAULT_MODE, where),
                    f"{where}: configMap {src.name!r}",
                    optional=bool(src.optional),
                    secret=False,
                )
            plan.specs[vol.name] = sandbox
        elif kind == "secret":
            ssrc = vol.secret
            assert ssrc is not None
            plan.read_only.add(vol.name)
            secret = ctx.secrets.get(ssrc.secret_name)
            if secret is None and not ssrc.optional:
                raise TranslationError(
                    f"{where}: secret {ssrc.secret_name!r} is not in the request"
                )
            if secret is not None:
                _select(
                    ssrc.items,
                    ctx.secret_data(secret, where),
                    files,
                    _mode(ssrc.default_mode, SECRET_DEFAULT_MODE, where),
                    f"{where}: secret {ssrc.secret_name!r}",
                    optional=bool(ssrc.optional),
                    secret=True,
                )
            plan.specs[vol.name] = sandbox
        elif kind == "projected":
            plan.read_only.add(vol.name)
            _projected(ctx, vol, files)
            plan.specs[vol.name] = sandbox
        elif kind == "downwardAPI":
            dsrc = vol.downward_api
            assert dsrc is not None
            plan.read_only.add(vol.name)
            _downward(ctx, dsrc, files, _mode(dsrc.default_mode, DEFAULT_MODE, where), where)
            plan.specs[vol.name] = sandbox
        elif kind == "emptyDir":
            size = None
            if vol.empty_dir is not None and vol.empty_dir.size_limit is not None:
                size = math.ceil(parse(vol.empty_dir.size_limit, f"{where}: sizeLimit"))
            plan.specs[vol.name] = VolumeSpec(kind="emptyDir", size_limit_bytes=size)
        elif kind == "hostPath":
            hsrc = vol.host_path
            assert hsrc is not None
            path = absolute_path(hsrc.path, f"{where}: hostPath")
            bindable(path, f"{where}: hostPath")
            if not storage.host_path_allow:
                raise TranslationError(f"{where}: hostPath volumes are not allowed on this site")
            if not under_prefix(path, storage.host_path_allow):
                raise TranslationError(
                    f"{where}: hostPath {path!r} is outside the allowed prefixes "
                    f"{storage.host_path_allow}"
                )
            check_not_sandboxes(path, storage, f"{where}: hostPath")
            plan.specs[vol.name] = VolumeSpec(kind="host", path=path)
        else:  # persistentVolumeClaim
            psrc = vol.persistent_volume_claim
            assert psrc is not None
            target = storage.pvc_paths.get(f"{ns}/{psrc.claim_name}")
            if target is None:
                target = storage.pvc_paths.get(psrc.claim_name)
            if target is None:
                raise TranslationError(
                    f"{where}: persistentVolumeClaim {psrc.claim_name!r} has no path on this "
                    "site (storage.pvc_paths)"
                )
            path = absolute_path(target, f"{where}: path of claim {psrc.claim_name!r}")
            bindable(path, f"{where}: path of claim {psrc.claim_name!r}")
            check_not_sandboxes(path, storage, f"{where}: path of claim {psrc.claim_name!r}")
            if psrc.read_only:
                plan.read_only.add(vol.name)
            plan.specs[vol.name] = VolumeSpec(kind="host", path=path)
        plan.files.extend(files.sandbox_files())
    return plan


def container_mounts(
    c: Container, kind: str, plan: VolumePlan, env: dict[str, str], limits: LimitSettings
) -> list[MountSpec]:
    mounts: list[MountSpec] = []
    seen: set[str] = set()
    check_count(
        c.volume_mounts, limits.max_mounts, f"{kind} {c.name!r}: volumeMounts", "limits.max_mounts"
    )
    for m in c.volume_mounts:
        where = f"{kind} {c.name!r}: volumeMount {m.mount_path!r}"
        if m.name not in plan.specs:
            raise TranslationError(f"{where}: mounts unknown volume {m.name!r}")
        path = mount_path(m.mount_path, where)
        if path in seen:
            raise TranslationError(f"{where}: mount path used twice")
        seen.add(path)
        if m.sub_path and m.sub_path_expr:
            raise TranslationError(f"{where}: subPath and subPathExpr are exclusive")
        sub = (
            expand(m.sub_path_expr, env, limits.max_value_bytes, f"{where}: subPathExpr")
            if m.sub_path_expr
            else m.sub_path
        )
        if sub:
            relative_path(sub, f"{where}: subPath")
            bindable(sub, f"{where}: subPath")
        mounts.append(
            MountSpec(
                volume=m.name,
                mount_path=path,
                sub_path=sub,
                read_only=m.read_only or m.name in plan.read_only,
            )
        )
    return mounts
