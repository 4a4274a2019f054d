"""Where the pool keeps its files, and the facts of a running pool (``PoolInfo``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import config

STATE_DIR_ENV = "INTERLINK_HTCONDOR_POOL_DIR"
INFO_VERSION = 1


def state_dir() -> Path:
    """The pool's state directory: ``$INTERLINK_HTCONDOR_POOL_DIR`` or
    ``~/.cache/interlink-htcondor``."""
    override = os.environ.get(STATE_DIR_ENV, "").strip()
    if override:
        return Path(override).absolute()
    return Path.home() / ".cache" / "interlink-htcondor"


@dataclass(frozen=True)
class PoolPaths:
    """Layout of the state directory."""

    root: Path

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def pods(self) -> Path:
        return self.shared / "pods"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def root_tokens(self) -> Path:
        return self.root / "root-tokens"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def build_logs(self) -> Path:
        return self.root / "logs"

    @property
    def info_file(self) -> Path:
        return self.run / "pool.json"

    @property
    def pid_file(self) -> Path:
        return self.run / "master.pid"

    @property
    def master_output(self) -> Path:
        return self.run / "master.out"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def condor_logs(self) -> Path:
        return self.rootfs / "var" / "log" / "condor"

    @property
    def condor_config_dir(self) -> Path:
        return self.rootfs / "etc" / "condor" / "config.d"

    def image(self, name: str) -> Path:
        return self.images / name

    def bind_dirs(self) -> list[Path]:
        """Host directories visible at the same path inside the pool."""
        return [self.shared, self.images]


def default_paths() -> PoolPaths:
    return PoolPaths(state_dir())


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created with its directory) meanwhile:
    the development pool, cluster and hub serialise their ``up`` and ``down`` with it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def locked(paths: PoolPaths) -> contextlib.AbstractContextManager[None]:
    """Serialise ``up`` and ``down`` between processes (tests and people share one pool)."""
    return exclusive(paths.lock_file)


@dataclass(frozen=True)
class PoolInfo:
    """Facts of a running pool, as ``pool up`` recorded them."""

    state_dir: Path
    collector: str
    token_dir: Path
    root_token_dir: Path
    shared_dir: Path
    pods_dir: Path
    job_user: str
    job_uid: int
    job_gid: int
    images: dict[str, Path]
    init_pid: int
    master_pid: int
    pid_ns: str
    slots: int
    slot_memory_mib: int
    started_at: float
    rootfs: Path
    timings: dict[str, float] = field(default_factory=dict)

    # -- client side -------------------------------------------------------------------------

    def token_dir_for(self, uid: int) -> Path:
        """The token directory a client running as ``uid`` reads: HTCondor accepts only token
        files its user owns, so root has its own copy of the job user's token."""
        return self.root_token_dir if uid == 0 else self.token_dir

    def client_env(self, uid: int | None = None) -> dict[str, str]:
        """What ``pool env`` prints: the htcondor2 client configuration and the pool's paths,
        for a client running as ``uid`` (default: this process's user)."""
        return config.client_env(
            collector=self.collector,
            token_dir=self.token_dir_for(os.geteuid() if uid is None else uid),
            state_dir=self.state_dir,
            shared_dir=self.shared_dir,
            pods_dir=self.pods_dir,
            job_user=self.job_user,
            images=self.images,
        )

    def apply_client_env(self) -> None:
        """Set :meth:`client_env` in ``os.environ`` and make htcondor2 re-read its config."""
        os.environ.update(self.client_env())
        import htcondor2

        htcondor2.reload_config()

    def make_job_dir(self, name: str) -> Path:
        """A fresh directory under the shared directory, owned by the job user (for a job's
        ``initialdir`` in shared-filesystem mode). Root only."""
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a plain directory name: {name!r}")
        path = self.shared_dir / name
        path.mkdir(mode=0o755)
        os.chown(path, self.job_uid, self.job_gid)
        return path

    # -- inside the pool ---------------------------------------------------------------------

    def run_in_pool(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        input: bytes | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` inside the pool's mount namespace and root filesystem, where the
        daemons, ``apptainer`` and the images live, as ``user`` (default: the job user;
        ``"root"`` for root). The environment is ``env`` on top of a minimal one (PATH, HOME,
        USER, LANG); ``cwd`` defaults to the user's home. Root only. Output is captured."""
        from . import daemons

        return daemons.run_in_namespace(
            self.init_pid,
            argv,
            user=self.job_user if user is None else user,
            cwd=None if cwd is None else str(cwd),
            env=env,
            timeout=timeout,
            input=input,
            check=check,
        )

    # -- persistence -------------------------------------------------------------------------

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["version"] = INFO_VERSION
        return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PoolInfo:
        data = json.loads(text)
        if data.pop("version", None) != INFO_VERSION:
            raise ValueError("pool info written by another version")
        for key in ("state_dir", "token_dir", "root_token_dir", "shared_dir", "pods_dir", "rootfs"):
            data[key] = Path(data[key])
        data["images"] = {k: Path(v) for k, v in data["images"].items()}
        return cls(**data)


def replace_file(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a file): a temporary
    file beside it, given ``mode`` when set, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    if mode is not None:
        tmp.chmod(mode)
    tmp.replace(path)


def write_info(paths: PoolPaths, info: PoolInfo) -> None:
    replace_file(paths.info_file, info.to_json(), 0o644)


def load_info(paths: PoolPaths) -> PoolInfo | None:
    """The recorded facts, whether or not the pool still runs."""
    try:
        return PoolInfo.from_json(paths.info_file.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_info(paths: PoolPaths) -> None:
    for f in (paths.info_file, paths.pid_file):
        f.unlink(missing_ok=True)
