"""Where the dataset is, seen from the client and from the workers.

Workers run in containers on grid slots, so they usually see the files under another
name than the notebook does (a container bind mount, an XRootD URL). A ``Dataset`` keeps
both: the client opens the files to plan partitions, the workers read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dimuon import generate

WORKER_DATA_DIR = "/data/dimuon"


@dataclass(frozen=True)
class Dataset:
    files: tuple[Path, ...]
    host_dir: Path
    worker_dir: str = WORKER_DATA_DIR

    def worker_path(self, path: str) -> str:
        """A file's path on the workers."""
        rel = Path(path).resolve().relative_to(self.host_dir.resolve())
        return f"{self.worker_dir.rstrip('/')}/{rel.as_posix()}"

    @property
    def apptainer_bind(self) -> str:
        """Apptainer options that show the directory read-only to the worker containers
        (for the ``htcondor.interlink.eu/apptainer-options`` annotation)."""
        return f"--bind {self.host_dir}:{self.worker_dir}:ro"

    @property
    def events(self) -> int:
        import uproot

        return sum(int(uproot.open(str(f))["Events"].num_entries) for f in self.files)


def prepare(
    host_dir: Path, cfg: generate.Config | None = None, worker_dir: str = WORKER_DATA_DIR
) -> Dataset:
    """Generate the files (once) into ``host_dir`` and describe them."""
    files = generate.ensure_dataset(host_dir, cfg or generate.Config())
    return Dataset(tuple(files), host_dir, worker_dir)
