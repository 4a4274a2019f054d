"""Bringing the pool up and down, and reading the running pool's facts."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import config, daemons, host, images, rootfs
from .errors import PoolError
from .state import PoolInfo, PoolPaths, clear_info, default_paths, load_info, locked, write_info

Say = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"pool: {msg}", file=sys.stderr, flush=True)


def read_info(paths: PoolPaths | None = None) -> PoolInfo | None:
    """The running pool's facts, or None when it is not running."""
    paths = paths or default_paths()
    info = load_info(paths)
    if info is None or not daemons.is_pool_init(info.init_pid, info.pid_ns):
        return None
    return info


def ensure_up(
    *,
    slots: int | None = None,
    slot_memory_mib: int | None = None,
    port: int | None = None,
    timeout: float = 180,
    paths: PoolPaths | None = None,
    say: Say | None = _stderr,
) -> PoolInfo:
    """Start the pool if it is not running (building what is missing), and return its facts.

    Idempotent: a running pool is returned at once, whatever ``slots``, ``slot_memory_mib`` or
    ``port`` ask (``down`` first to change them). ``say`` receives progress lines (None: silent).
    """
    paths = paths or default_paths()
    report: Say = say or (lambda _msg: None)
    info = read_info(paths)
    if info is not None:
        if os.geteuid() == 0 and not images.all_current(paths):
            _refresh_images(paths, info, report)
        return info
    host.require_root("starting the pool")
    with locked(paths):
        info = read_info(paths)  # another process may have started it while we waited
        if info is not None:
            return info
        return _start(paths, _config(slots, slot_memory_mib, port), timeout, report)


def _refresh_images(paths: PoolPaths, info: PoolInfo, say: Say) -> None:
    """Rebuild images that no longer match this environment (e.g. dask was upgraded) in the
    running pool; their paths stay the same."""
    with locked(paths):
        if not images.all_current(paths):
            say("rebuilding the images for this environment's package versions")
            images.build_all(paths, info.init_pid, host.debian_mirror())


def _config(slots: int | None, slot_memory_mib: int | None, port: int | None) -> config.PoolConfig:
    default = config.PoolConfig()
    try:
        return config.PoolConfig(
            slots=default.slots if slots is None else slots,
            slot_memory_mib=default.slot_memory_mib if slot_memory_mib is None else slot_memory_mib,
            port=default.port if port is None else port,
        )
    except ValueError as e:
        raise PoolError(str(e)) from e


def _start(paths: PoolPaths, cfg: config.PoolConfig, timeout: float, say: Say) -> PoolInfo:
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    _sweep_stale(paths)
    for d in (paths.root, paths.run, paths.build_logs):
        d.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o755)
    host_log = paths.build_logs / "host.log"
    host.ensure_host_tools(host_log)
    host.ensure_host_user(config.JOB_USER, config.JOB_UID, config.JOB_GID, host_log)
    mirror = host.debian_mirror()
    # The python image's root needs no pool: prepare it while the pool's root fs is built.
    with ThreadPoolExecutor(max_workers=1) as pool_of_one:
        python_stage = pool_of_one.submit(images.prepare_python, paths, mirror)
        if not rootfs.is_built(paths):
            say(f"building the root file system (Debian sid, minicondor, apptainer) from {mirror}")
            rootfs.build(paths, mirror)
            timings["rootfs"] = time.monotonic() - t0
        _prepare_dirs(paths, host_log)
        rootfs.prepare(paths, cfg)
        say(f"starting condor_master ({cfg.slots} slots, collector {cfg.collector})")
        init, master = daemons.start(paths)
        ns = daemons.namespace(init)
        try:
            # Images are packed inside the pool's namespaces (apptainer lives in the root fs).
            built = {"busybox": images.build_busybox(paths, init)}
            prepared = python_stage.result()
            if prepared is not None:
                say("building the python image (Debian bookworm, this environment's dask)")
                built["python"] = images.finish_python(paths, init, prepared)
            else:
                built["python"] = paths.image("python")
            timings["images"] = time.monotonic() - t0
            deadline = time.monotonic() + timeout
            token = daemons.create_token(init, config.JOB_USER, deadline)
            daemons.write_token(paths.tokens, token, config.JOB_UID, config.JOB_GID)
            daemons.write_token(paths.root_tokens, token, 0, 0)
            daemons.wait_ready(paths, init, ns, deadline)
        except BaseException:
            daemons.stop(init, ns)
            raise
    timings["total"] = time.monotonic() - t0
    info = PoolInfo(
        state_dir=paths.root,
        collector=cfg.collector,
        token_dir=paths.tokens,
        root_token_dir=paths.root_tokens,
        shared_dir=paths.shared,
        pods_dir=paths.pods,
        job_user=config.JOB_USER,
        job_uid=config.JOB_UID,
        job_gid=config.JOB_GID,
        images=built,
        init_pid=init,
        master_pid=master,
        pid_ns=ns,
        slots=cfg.slots,
        slot_memory_mib=cfg.slot_memory_mib,
        started_at=time.time(),
        rootfs=paths.rootfs,
        timings={k: round(v, 1) for k, v in timings.items()},
    )
    write_info(paths, info)
    say(f"pool up in {timings['total']:.1f} s")
    return info


def _prepare_dirs(paths: PoolPaths, log: Any) -> None:
    """Shared and pods directories owned by the job user; the images directory readable; every
    parent reachable by the job user."""
    uid, gid = config.JOB_UID, config.JOB_GID
    paths.images.mkdir(parents=True, exist_ok=True)
    paths.images.chmod(0o755)
    paths.pods.mkdir(parents=True, exist_ok=True)
    for d in (paths.shared, paths.pods):
        os.chown(d, uid, gid)
    paths.shared.chmod(0o755)
    paths.pods.chmod(0o700)
    paths.run.chmod(0o755)
    paths.tokens.mkdir(parents=True, exist_ok=True)
    os.chown(paths.tokens, uid, gid)
    paths.tokens.chmod(0o700)
    host.grant_traverse(paths.root, uid, log)


def _sweep_stale(paths: PoolPaths) -> None:
    """Stop what is left of a pool on this root fs that its info file does not describe
    (it died without ``down``, or an older version wrote the file)."""
    for init in daemons.find_inits(paths.rootfs):
        daemons.stop(init, daemons.namespace(init), grace=10)
    clear_info(paths)


def down(paths: PoolPaths | None = None, say: Say | None = _stderr) -> bool:
    """Stop the pool: no condor process and no mount left. False when it was not running."""
    paths = paths or default_paths()
    host.require_root("stopping the pool")
    report: Say = say or (lambda _msg: None)
    with locked(paths):
        running = False
        for init in daemons.find_inits(paths.rootfs):
            running = True
            ns = daemons.namespace(init)
            if daemons.stop(init, ns):
                report("the daemons did not stop in time and were killed")
            left = daemons.processes_in(ns)
            if left:
                raise PoolError(f"pool processes still running after down: {left}")
        clear_info(paths)
    mounts = daemons.host_mounts_under(paths.root)
    if mounts:
        raise PoolError(f"mounts left under {paths.root}: {', '.join(mounts)}")
    return running


def embedded_settings(info: PoolInfo) -> dict[str, Any]:
    """The plugin's embedded default settings for this pool: the ``base`` of
    ``settings.load(base=...)``."""
    return {
        "schedd": {
            "collector": info.collector,
            "auth_methods": "IDTOKENS",
            "token_dir": str(info.token_dir),
        },
        # Pods may bind data under the shared directory (the demo's dataset); never the
        # pods' own sandboxes, which the translator refuses whatever the allow-list says.
        "storage": {
            "mode": "shared",
            "shared_dir": str(info.pods_dir),
            "host_path_allow": [str(info.shared_dir)],
        },
        "policy": {"allow_apptainer_options": True},
        "server": {"run_as": info.job_user},
        "containers": {"image_rules": config.image_rules(info.images)},
    }
