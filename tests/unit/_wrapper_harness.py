"""Runs the job wrapper as a subprocess against the Apptainer and condor_chirp stand-ins.

The stand-ins (``wrapper_doubles/``) exec the container's argv on the host: these tests
cover the wrapper's orchestration (order, parallelism, logs, states, limits, signals). What
Apptainer itself does with the command line is covered by tests/integration with the real
Apptainer, which reads a run's sandbox with ``SandboxRun`` and uses ``HOSTILE`` too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interlink_htcondor.core import jobspec
from interlink_htcondor.jobside import wrapper

WRAPPER = Path(wrapper.__file__)
DOUBLES = Path(__file__).parent / "wrapper_doubles"
CRI_LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([FP]) (.*)$")


# Environment values and arguments that a shell-built command line would mangle.
HOSTILE = {
    "QUOTES": "it's \"double\" and 'single'",
    "DOLLAR": "$HOME ${HOME} $(id) $$ $1 $",
    "BACKTICKS": "`id` `echo pwned`",
    "JSON": '{"a": [1, "two", {"3": null}], "s": "x\\"y"}',
    "NEWLINES": "line1\nline2\n\nline4\n",
    "CRLF": "a\r\nb\r\n",
    "CRS": "x\r\r\ny\r",
    "TABS": "\tcol1\tcol2\t",
    "UNICODE": "héllo \u2013 日本語 🚀 \u200b",
    "EMPTY": "",
    "SPACES": "   ",
    "BACKSLASH": "C:\\path\\n\\t\\\\",
    "SHELL": "a; rm -rf / && echo pwned | cat > /tmp/x; exit 1",
    "GLOB": "* ? [a-z] ~",
    "CTRL": "\x01\x1b[31mred\x7f",
}


def py(code: str) -> list[str]:
    """argv running Python code in the "container" (the stand-in execs it on the host)."""
    return [sys.executable, "-c", code]


def container(name: str, argv: list[str], image: str = "", **kw: Any) -> jobspec.ContainerSpec:
    return jobspec.ContainerSpec(name=name, image=image or "IMAGE", mode="exec", argv=argv, **kw)


@dataclass
class CriRecord:
    stamp: bytes
    stream: str
    tag: str
    text: bytes


@dataclass
class SandboxRun:
    """A finished wrapper run as its sandbox shows it: ``status.json`` and the CRI logs."""

    returncode: int
    stderr: str
    sandbox: Path

    @property
    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.sandbox / "status.json").read_text())
        return data

    def state(self, name: str) -> dict[str, Any]:
        st = self.status
        for c in st["init_containers"] + st["containers"]:
            if c["name"] == name:
                return dict(c)
        raise KeyError(name)

    def records(self, name: str) -> list[CriRecord]:
        out = []
        path = self.sandbox / "logs" / f"{name}.log"
        for raw in path.read_bytes().split(b"\n")[:-1]:
            m = CRI_LINE.match(raw)
            assert m, f"not a CRI log line: {raw!r}"
            out.append(CriRecord(m[1], m[2].decode(), m[3].decode(), m[4]))
        return out

    def text(self, name: str, stream: str = "stdout") -> bytes:
        """The stream's bytes as the container wrote them (P records joined, F ends a line)."""
        return b"".join(
            r.text + (b"\n" if r.tag == "F" else b"")
            for r in self.records(name)
            if r.stream == stream
        )


@dataclass
class WrapperRun(SandboxRun):
    elapsed: float
    chirp_file: Path
    record_file: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chirps(self) -> list[list[str]]:
        if not self.chirp_file.exists():
            return []
        return [json.loads(line) for line in self.chirp_file.read_text().splitlines()]

    @property
    def invocations(self) -> list[dict[str, Any]]:
        if not self.record_file.exists():
            return []
        return [json.loads(line) for line in self.record_file.read_text().splitlines()]


class Harness:
    def __init__(self, tmp_path: Path, python: str = sys.executable) -> None:
        self.tmp = tmp_path
        self.python = python
        self.sandbox = tmp_path / "sandbox"
        self.sandbox.mkdir(parents=True)
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.apptainer = self._install("apptainer.py", "apptainer")
        self.chirp = self._install("condor_chirp.py", "condor_chirp")
        self.image = self.sandbox / "image.json"  # the stand-in's "image": a runscript
        self.image.write_text(
            json.dumps({"runscript": py("import sys; print('run', sys.argv[1:])")})
        )
        self.chirp_file = tmp_path / "chirp.jsonl"
        self.record_file = tmp_path / "apptainer.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def _install(self, source: str, name: str) -> Path:
        dst = self.bin / name
        dst.write_text(f"#!{sys.executable}\n" + (DOUBLES / source).read_text())
        dst.chmod(0o755)
        return dst

    def spec(
        self,
        containers: list[jobspec.ContainerSpec],
        init: list[jobspec.ContainerSpec] | None = None,
        **kw: Any,
    ) -> jobspec.JobSpec:
        fixed = [
            c.model_copy(update={"image": str(self.image)}) if c.image == "IMAGE" else c
            for c in containers
        ]
        fixed_init = [
            c.model_copy(update={"image": str(self.image)}) if c.image == "IMAGE" else c
            for c in init or []
        ]
        kw.setdefault("chirp", str(self.chirp))
        return jobspec.JobSpec(
            pod=jobspec.PodIdentity(uid="uid-1", name="pod", namespace="ns"),
            apptainer=jobspec.ApptainerSpec(binary=str(self.apptainer)),
            containers=fixed,
            init_containers=fixed_init,
            **kw,
        )

    def start(
        self, spec: jobspec.JobSpec | bytes, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        data = spec if isinstance(spec, bytes) else spec.to_json()
        (self.sandbox / jobspec.SPEC_FILE).write_bytes(data)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CHIRP_DOUBLE_RECORD": str(self.chirp_file),
            "APPTAINER_DOUBLE_RECORD": str(self.record_file),
            "INTERLINK_WRAPPER_BACKOFF_SECONDS": "0.2",
        }
        full_env.update(env or {})
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [self.python, str(WRAPPER), jobspec.SPEC_FILE],
            cwd=self.sandbox,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self.proc

    def finish(self, timeout: float = 60) -> WrapperRun:
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            _, err = self.proc.communicate()
            raise AssertionError("the wrapper did not finish:\n" + err.decode()) from None
        return WrapperRun(
            self.proc.returncode,
            err.decode("utf-8", "replace"),
            self.sandbox,
            time.monotonic() - self.started,
            self.chirp_file,
            self.record_file,
        )

    def run(
        self,
        spec: jobspec.JobSpec | bytes,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> WrapperRun:
        self.start(spec, env)
        return self.finish(timeout)


def wait_for(path: Path, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def oldest_python() -> str | None:
    """The oldest CPython 3.6/3.7 on this machine, if any (pyenv keeps several)."""
    for root in (Path.home() / ".pyenv" / "versions", Path("/root/.pyenv/versions")):
        for minor in ("3.6", "3.7"):
            for cand in sorted(root.glob(f"{minor}.*/bin/python{minor}")):
                if os.access(cand, os.X_OK):
                    return str(cand)
    return None
