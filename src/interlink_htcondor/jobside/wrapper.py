#!/usr/bin/env python3
"""Job wrapper: runs one Kubernetes pod inside one HTCondor job, each container in Apptainer.

HTCondor runs this file on the execute point as ``python3 <wrapper> pod.json``. It needs only
the standard library of Python 3.6 or newer. The plugin writes ``pod.json`` (the job spec);
every value of the pod travels in it as JSON data and reaches the containers through argv
lists and environment variables, never through a shell. The one exception is the prologue,
shell commands run by design before the containers (interLink's tunnel and mesh scripts).

What it does, in order:

1. reads the spec, creates the pod's emptyDir volumes in the job's scratch directory;
2. runs the prologue commands (``sh -c``), output in ``logs/_prologue.log``;
3. runs the init containers one after the other; the first failure stops the pod;
4. runs the app containers in parallel, restarting them as ``restartPolicy`` says, and ends
   when all of them have ended;
5. writes each container's stdout and stderr to ``logs/<container>.log`` in the CRI log
   format, line by line as they come;
6. reports each container's state (waiting, running, terminated) into the job ad with
   ``condor_chirp`` and into ``status.json``;
7. enforces each container's memory limit by polling the memory of its process tree
   (no cgroups needed), the pod's ``activeDeadlineSeconds`` and emptyDir size limits;
8. on SIGTERM (``condor_rm``, pod deletion) runs the preStop hooks, stops the containers
   within the termination grace period, and reports how they ended.

The exit code is 0 when every app container succeeded, else the exit code of the first
failed container in pod order (init containers first), kept within 1..255.
"""

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

# Must match interlink_htcondor.jobspec (tests/unit check that they agree).
SPEC_VERSION = 1
SPEC_FILE = "pod.json"
LOG_DIR = "logs"
VOLUME_DIR = "volumes"

STATUS_FILE = "status.json"
PROLOGUE_LOG = "_prologue.log"  # "_" is not allowed in container names: never collides
WORK_DIR = "_interlink"  # in the scratch directory: emptyDirs and per-container /tmp, $HOME

# Termination reasons (one token each: they travel in the job ad's state encoding).
COMPLETED = "Completed"
ERROR = "Error"
OOM_KILLED = "OOMKilled"
DEADLINE_EXCEEDED = "DeadlineExceeded"
CANNOT_RUN = "ContainerCannotRun"
EVICTED = "Evicted"
INIT_FAILED = "InitContainerFailed"
PROLOGUE_FAILED = "PrologueFailed"
POD_TERMINATED = "PodTerminated"
CRASH_LOOP = "CrashLoopBackOff"
POD_INITIALIZING = "PodInitializing"

EXIT_SPEC_ERROR = 2  # the spec is unreadable or from another release: nothing ran
EXIT_NOT_STARTED = 1  # a container that never ran because the pod failed before it
EXIT_CANNOT_RUN = 128  # apptainer could not start the container (what kubelets report)
EXIT_NOT_FOUND = 127  # the command does not exist in the image (as a shell reports it)
EXIT_OOM = 137  # 128 + SIGKILL, as after a kernel OOM kill

POLL_SECONDS = 0.25  # memory polling and main-loop period
PARTIAL_FLUSH_SECONDS = 0.5  # an unterminated line is written as a "P" record after this
MAX_LOG_LINE = 16 * 1024  # longer lines are split into "P" records, like containerd
EVICTION_CHECK_SECONDS = 5.0  # emptyDir size-limit check period
SWEEP_SECONDS = 5.0  # full /proc scan period of the memory monitor
CHIRP_TIMEOUT = 30.0
BACKOFF_CAP_SECONDS = 300.0  # kubelet's restart backoff: 10 s doubling up to 5 min
BACKOFF_RESET_SECONDS = 600.0  # a container that ran this long restarts without delay
BACKOFF_ENV = "INTERLINK_WRAPPER_BACKOFF_SECONDS"  # first backoff step (default 10 s)

# Apptainer's own helper processes: their memory is not the container's.
APPTAINER_HELPERS = frozenset(
    [
        b"apptainer",
        b"singularity",
        b"starter",
        b"starter-suid",
        b"squashfuse",
        b"squashfuse_ll",
        b"fuse-overlayfs",
        b"fuse2fs",
        b"gocryptfs",
        b"appinit",  # the PID namespace's init (--containall)
    ]
)
# Set by the execute point for the job's assigned devices; containers need them too.
PASSTHROUGH_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
)
# Apptainer sources its environment injection with a shell: other names break every
# variable of the container, so they are dropped (and reported).
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_APPTAINER_IGNORED = frozenset(["UID", "GID"])  # read-only in the container shell


class SpecError(Exception):
    """The job spec cannot be run (malformed, or written for another wrapper version)."""


# ---------------------------------------------------------------------------------------
# Small helpers


def fsb(s: str) -> bytes:
    """UTF-8 bytes for argv, env and paths: works whatever the execute point's locale."""
    return s.encode("utf-8", "surrogateescape")


def rfc3339_nano(t: float) -> str:
    sec = int(t)
    nanos = int(round((t - sec) * 1e9))
    if nanos >= 1000000000:
        sec, nanos = sec + 1, nanos - 1000000000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%09dZ" % nanos


_log_lock = threading.Lock()


def log(msg: str) -> None:
    """Wrapper diagnostics go to the job's stderr (the submit file's ``error``)."""
    line = "%s interlink-wrapper: %s\n" % (rfc3339_nano(time.time()), msg)
    with _log_lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def encode_state(state: str, exit_code: int, reason: str, started: int, finished: int) -> str:
    """Same format as ``interlink_htcondor.attrs.encode_state`` (checked by a unit test)."""
    return "%s %d %s %d %d" % (state, exit_code, reason or "-", started, finished)


def state_attr(kind: str, index: int) -> str:
    """Same names as ``interlink_htcondor.attrs.state_attr``."""
    return "InterlinkState%s%d" % ("I" if kind == "init" else "C", index)


def _safe_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise SpecError("%s %r is not a usable file name" % (what, name))
    return name


def _relative_path(path: str, what: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or "\0" in path or ".." in parts:
        raise SpecError("%s %r must be a relative path without '..'" % (what, path))
    return path


def _within(path: bytes, base: bytes) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(base)
    return real == root or real.startswith(root.rstrip(b"/") + b"/")


# ---------------------------------------------------------------------------------------
# The spec


def load_spec(path: str) -> Dict[str, Any]:
    try:
        with open(fsb(path), "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SpecError("cannot read the job spec %s: %s" % (path, e)) from e
    try:
        spec = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError("the job spec %s is not valid JSON: %s" % (path, e)) from e
    if not isinstance(spec, dict):
        raise SpecError("the job spec %s is not a JSON object" % path)
    version = spec.get("version")
    if version != SPEC_VERSION:
        raise SpecError(
            "job spec version %r is not supported: this wrapper runs version %d only "
            "(the plugin and the job wrapper must come from the same release)"
            % (version, SPEC_VERSION)
        )
    validate_spec(spec)
    return spec


def validate_spec(spec: Dict[str, Any]) -> None:
    """Checks what the wrapper relies on; the plugin's model is stricter."""
    pod = spec.get("pod")
    if not isinstance(pod, dict) or not isinstance(pod.get("uid"), str):
        raise SpecError("the job spec has no pod identity")
    volumes = spec.get("volumes") or {}
    if not isinstance(volumes, dict):
        raise SpecError("volumes must be an object")
    for name, vol in volumes.items():
        _safe_name(name, "volume name")
        if not isinstance(vol, dict) or vol.get("kind") not in ("emptyDir", "sandbox", "host"):
            raise SpecError("volume %r has an unknown kind" % name)
        path = vol.get("path") or ""
        if vol["kind"] == "sandbox":
            _relative_path(path, "sandbox volume %r path" % name)
        if vol["kind"] == "host" and not path.startswith("/"):
            raise SpecError("host volume %r needs an absolute path" % name)
    seen: Set[str] = set()
    for key in ("init_containers", "containers"):
        items = spec.get(key) or []
        if not isinstance(items, list):
            raise SpecError("%s must be a list" % key)
        for c in items:
            if not isinstance(c, dict):
                raise SpecError("%s entries must be objects" % key)
            name = _safe_name(c.get("name"), "container name")
            if name in seen:
                raise SpecError("container name %r appears twice" % name)
            seen.add(name)
            if not isinstance(c.get("image"), str) or not c["image"]:
                raise SpecError("container %r has no image" % name)
            if c.get("mode") not in ("exec", "run"):
                raise SpecError("container %r: mode must be 'exec' or 'run'" % name)
            argv = c.get("argv") or []
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise SpecError("container %r: argv must be a list of strings" % name)
            if c["mode"] == "exec" and not argv:
                raise SpecError("container %r: mode 'exec' needs a command" % name)
            for pair in c.get("env") or []:
                if (
                    not isinstance(pair, list)
                    or len(pair) != 2
                    or not all(isinstance(x, str) for x in pair)
                ):
                    raise SpecError("container %r: env entries must be [name, value]" % name)
            for m in c.get("mounts") or []:
                if not isinstance(m, dict) or m.get("volume") not in volumes:
                    raise SpecError("container %r mounts an unknown volume" % name)
                if not isinstance(m.get("mount_path"), str) or not m["mount_path"].startswith("/"):
                    raise SpecError("container %r: mount paths must be absolute" % name)
                if m.get("sub_path"):
                    _relative_path(m["sub_path"], "container %r subPath" % name)
            pre_stop = c.get("pre_stop")
            if pre_stop is not None and (
                not isinstance(pre_stop, dict) or not pre_stop.get("argv")
            ):
                raise SpecError("container %r: preStop needs an argv" % name)
    if spec.get("restart_policy", "Never") not in ("Always", "OnFailure", "Never"):
        raise SpecError("unknown restart policy %r" % spec.get("restart_policy"))


# ---------------------------------------------------------------------------------------
# Building the apptainer command (pure functions)


def env_for_apptainer(
    pairs: List[List[str]], host_env: Dict[bytes, bytes]
) -> Tuple[Dict[bytes, bytes], Optional[str], List[str]]:
    """``APPTAINERENV_<NAME>`` variables for the container's environment, byte for byte.

    Returns (variables, HOME value or None, warnings). Apptainer writes each variable into
    a shell script that it sources with ``--no-eval`` quoting. That parser drops one
    carriage return before a newline, so each ``\\r\\n`` is sent as ``\\r\\r\\n``. Names that
    are not shell identifiers would break every variable, so they are left out; HOME is
    refused through APPTAINERENV and goes through ``--home`` instead.
    """
    out: Dict[bytes, bytes] = {}
    warnings: List[str] = []
    home: Optional[str] = None
    names = set()
    for name, value in pairs:
        names.add(name)
        if not _SHELL_NAME.match(name):
            warnings.append(
                "environment variable %r dropped: Apptainer only passes names made of "
                "letters, digits and '_' that do not start with a digit" % name
            )
            continue
        if name in _APPTAINER_IGNORED:
            warnings.append("environment variable %s dropped: read-only in Apptainer" % name)
            continue
        if name == "HOME":
            if value.startswith("/") and ":" not in value and "," not in value:
                home = value
            else:
                warnings.append("HOME=%r dropped: not an absolute path usable by Apptainer" % value)
            continue
        out[b"APPTAINERENV_" + fsb(name)] = fsb(value.replace("\r\n", "\r\r\n"))
    for passed in PASSTHROUGH_ENV:
        host_value = host_env.get(fsb(passed))
        if host_value is not None and passed not in names:
            out[b"APPTAINERENV_" + fsb(passed)] = host_value
    return out, home, warnings


def process_env(
    host_env: Dict[bytes, bytes], container_vars: Dict[bytes, bytes]
) -> Dict[bytes, bytes]:
    """The apptainer process's environment: the job's, without other containers' variables."""
    env = dict(
        (k, v)
        for k, v in host_env.items()
        if not k.startswith(b"APPTAINERENV_") and not k.startswith(b"SINGULARITYENV_")
    )
    env.update(container_vars)
    return env


def _csv_field(field: str) -> str:
    if any(ch in field for ch in ',"\n\r'):
        return '"' + field.replace('"', '""') + '"'
    return field


def bind_args(source: str, dest: str, read_only: bool) -> List[str]:
    """``--bind src:dst[:ro]``; ``--mount`` (CSV-quoted) where a path holds ':' or ','."""
    if ":" in source or "," in source or ":" in dest or "," in dest:
        fields = ["type=bind", "source=" + source, "destination=" + dest]
        if read_only:
            fields.append("ro")
        return ["--mount", ",".join(_csv_field(f) for f in fields)]
    return ["--bind", "%s:%s%s" % (source, dest, ":ro" if read_only else "")]


def apptainer_command(
    spec: Dict[str, Any],
    container: Dict[str, Any],
    mode: str,
    argv: List[str],
    binds: List[str],
    workdir: str,
    home: Optional[str],
    no_eval: bool,
) -> List[str]:
    """``apptainer --silent exec|run [site args] [pod args] <isolation> IMAGE argv...``.

    All pods run as the same job user, so file modes cannot keep them apart: what the
    container can reach must. ``--containall`` gives each container its own /tmp and $HOME
    (kept on disk under ``workdir``, not in a 64 MiB tmpfs) and hides the host's, keeps the
    job's environment out (``--cleanenv``), and gives it its own PID and IPC namespaces, so
    it sees no other process (another pod's ``/proc/<pid>/cwd`` or ``root`` would lead into
    that pod's sandbox). ``--no-mount hostfs,cwd`` refuses the host's file systems and the
    current directory whatever apptainer.conf says. ``--no-eval`` stops Apptainer from
    shell-evaluating the environment values. The network is the host's, so the pod's
    containers reach each other on localhost.
    """
    app = spec.get("apptainer") or {}
    cmd = [app.get("binary") or "apptainer", "--silent", mode]
    cmd += list(app.get("args") or [])
    cmd += list(container.get("apptainer_args") or [])
    cmd += ["--containall", "--no-mount", "hostfs,cwd", "--workdir", workdir]
    if no_eval:
        cmd.append("--no-eval")
    if home is not None:
        cmd += ["--home", "%s/home:%s" % (workdir, home)]
    cmd += binds
    cmd += ["--pwd", container.get("working_dir") or "/"]
    cmd.append(container["image"])
    cmd += argv
    return cmd


def supports_no_eval(binary: str) -> bool:
    """``--no-eval`` appeared in Apptainer 1.1 / SingularityCE 3.10: ask the binary."""
    try:
        p = subprocess.Popen(
            [fsb(binary), b"exec", b"--help"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = p.communicate(timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log("cannot ask %s for its options: %s" % (binary, e))
        return False
    return b"--no-eval" in out


# ---------------------------------------------------------------------------------------
# CRI logs


def cri_records(stream: bytes, text: bytes, full: bool, stamp: bytes) -> List[bytes]:
    """CRI log records for one line (``full``) or line fragment; long lines are split."""
    chunks = [text[i : i + MAX_LOG_LINE] for i in range(0, len(text), MAX_LOG_LINE)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        tag = b"F" if full and i == len(chunks) - 1 else b"P"
        out.append(stamp + b" " + stream + b" " + tag + b" " + chunk + b"\n")
    return out


class CriLog(object):
    """One container's log file, shared by its stdout and stderr readers."""

    def __init__(self, path: bytes) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()

    def write(self, records: List[bytes]) -> None:
        if not records:
            return
        data = b"".join(records)
        with self._lock:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]

    def note(self, text: str) -> None:
        """A line from the wrapper itself, on the container's stderr stream."""
        stamp = fsb(rfc3339_nano(time.time()))
        self.write(cri_records(b"stderr", fsb("[interlink-htcondor] " + text), True, stamp))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class Pump(threading.Thread):
    """Copies one pipe into a CRI log: whole lines at once, partial lines after a pause."""

    def __init__(self, fd: int, stream: bytes, out: CriLog, watch_fatal: bool = False) -> None:
        threading.Thread.__init__(self, name="pump-%d" % fd)
        self.daemon = True
        self.fd = fd
        self.stream = stream
        self.out = out
        self.stop = threading.Event()
        self.watch_fatal = watch_fatal
        self.fatal: Optional[bytes] = None

    def _emit(self, lines: List[bytes], partial: bytes) -> None:
        stamp = fsb(rfc3339_nano(time.time()))
        records: List[bytes] = []
        for line in lines:
            records += cri_records(self.stream, line, True, stamp)
            if self.watch_fatal and self.fatal is None and line.startswith(b"FATAL:"):
                self.fatal = line
        if partial:
            records += cri_records(self.stream, partial, False, stamp)
        self.out.write(records)

    def run(self) -> None:
        buf = b""
        poller = select.poll()  # not select(): no FD_SETSIZE limit for pods with many containers
        poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while not self.stop.is_set():
                ready = poller.poll(int(PARTIAL_FLUSH_SECONDS * 1000))
                if not ready:
                    if buf:
                        self._emit([], buf)
                        buf = b""
                    continue
                data = os.read(self.fd, 65536)
                if not data:
                    break
                lines = (buf + data).split(b"\n")
                buf = lines.pop()
                if len(buf) >= MAX_LOG_LINE:
                    self._emit(lines, buf)
                    buf = b""
                elif lines:
                    self._emit(lines, b"")
            if buf:
                self._emit([], buf)
        except (OSError, ValueError) as e:
            log("log copy failed: %s" % e)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)


# ---------------------------------------------------------------------------------------
# Process trees (no cgroups: /proc is enough)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Proc(object):
    __slots__ = ("pid", "ppid", "sid", "comm", "rss")

    def __init__(self, pid: int, ppid: int, sid: int, comm: bytes, rss: int) -> None:
        self.pid, self.ppid, self.sid, self.comm, self.rss = pid, ppid, sid, comm, rss


def read_proc(pid: int) -> Optional[Proc]:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    open_, close = data.find(b"("), data.rfind(b")")
    fields = data[close + 2 :].split()
    if open_ < 0 or close < 0 or len(fields) < 22:
        return None
    return Proc(
        pid, int(fields[1]), int(fields[3]), data[open_ + 1 : close], int(fields[21]) * _PAGE
    )


def scan_processes() -> Dict[int, Proc]:
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = read_proc(int(name))
            if p is not None:
                procs[p.pid] = p
    return procs


_HAS_CHILDREN = os.path.exists("/proc/self/task/%d/children" % os.getpid())


def descendants(root: int) -> Optional[List[int]]:
    """The root and its descendants from the kernel's per-thread children lists: reads only
    the tree, not all of /proc. None where the kernel has no such lists."""
    if not _HAS_CHILDREN:
        return None
    found = [root]
    seen = set(found)
    i = 0
    while i < len(found):
        pid = found[i]
        i += 1
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid), "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    found.append(kid)
    return found


def process_tree(procs: Dict[int, Proc], root: int) -> List[int]:
    """The root, its descendants, and anything left in its session (reparented orphans)."""
    children: Dict[int, List[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found = set(p.pid for p in procs.values() if p.sid == root)
    found.add(root)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return [pid for pid in found if pid in procs]


def kill_tree(root: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(root, sig)
    for pid in process_tree(scan_processes(), root):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def tree_memory(procs: Dict[int, Proc], root: int, precise: bool) -> int:
    return memory_of(procs, process_tree(procs, root), precise)


def memory_of(procs: Dict[int, Proc], pids: List[int], precise: bool) -> int:
    """Bytes used by the container's own processes (Apptainer's helpers excluded).

    The cheap figure sums RSS from ``stat``; ``precise`` sums PSS from ``smaps_rollup``
    instead, so memory shared between the processes is counted once (as a cgroup would).
    """
    total = 0
    for pid in pids:
        p = procs.get(pid)
        if p is None or p.comm in APPTAINER_HELPERS:
            continue
        pss = _pss(pid) if precise else None
        total += p.rss if pss is None else pss
    return total


def _pss(pid: int) -> Optional[int]:
    try:
        with open("/proc/%d/smaps_rollup" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def dir_usage(path: bytes) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


# ---------------------------------------------------------------------------------------
# State reporting


def find_chirp(hint: str) -> Optional[str]:
    if hint:
        return hint if os.access(hint, os.X_OK) else None
    found = shutil.which("condor_chirp")
    if found:
        return found
    candidates = []
    ccv = shutil.which("condor_config_val")
    if ccv:
        try:
            out = subprocess.check_output(
                [ccv, "LIBEXEC"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30
            )
            libexec = out.decode("utf-8", "replace").strip()
            if libexec:
                candidates.append(os.path.join(libexec, "condor_chirp"))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [
        "/usr/libexec/condor/condor_chirp",
        "/usr/lib/condor/libexec/condor_chirp",
        "/usr/local/libexec/condor/condor_chirp",
        "/opt/condor/libexec/condor_chirp",
    ]
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return None


class Reporter(threading.Thread):
    """Sends state changes to the job ad with condor_chirp, newest value per attribute.

    Runs in its own thread so a slow or absent chirp never delays the containers; a
    failure is logged and the pod goes on (``status.json`` still has every state).
    """

    def __init__(self, chirp_hint: str) -> None:
        threading.Thread.__init__(self, name="chirp")
        self.daemon = True
        self.hint = chirp_hint
        self.cond = threading.Condition()
        self.pending: Dict[str, str] = {}
        self.order: List[str] = []
        self.busy = False
        self.closed = False
        self.failures = 0
        self.sent = 0

    def set(self, attr: str, value: str) -> None:
        with self.cond:
            if attr not in self.pending:
                self.order.append(attr)
            self.pending[attr] = value
            self.cond.notify_all()

    def run(self) -> None:
        binary = find_chirp(self.hint)
        if binary is None:
            log(
                "condor_chirp not found%s: container states are only in %s"
                % (" at %s" % self.hint if self.hint else "", STATUS_FILE)
            )
        while True:
            with self.cond:
                while not self.order and not self.closed:
                    self.cond.wait()
                if not self.order:
                    return
                attr = self.order.pop(0)
                value = self.pending.pop(attr)
                self.busy = True
            if binary is not None:
                self._send(binary, attr, value)
            with self.cond:
                self.busy = False
                self.cond.notify_all()

    def _send(self, binary: str, attr: str, value: str) -> None:
        # A ClassAd string literal; the state encoding has no quotes or backslashes.
        argv = [binary, "set_job_attr", attr, '"%s"' % value]
        try:
            p = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            out, _ = p.communicate(timeout=CHIRP_TIMEOUT)
            ok, detail = p.returncode == 0, out.decode("utf-8", "replace").strip()
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            ok, detail = False, "timed out"
        except OSError as e:
            ok, detail = False, str(e)
        if ok:
            self.sent += 1
            return
        self.failures += 1
        if self.failures <= 5 or self.failures % 50 == 0:
            log(
                "condor_chirp set_job_attr %s failed (%d so far): %s"
                % (attr, self.failures, detail)
            )

    def flush(self, timeout: float) -> bool:
        """Stops after sending what is queued; False if that took longer than ``timeout``."""
        end = time.monotonic() + timeout
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            while self.order or self.busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


# ---------------------------------------------------------------------------------------
# Containers


class Container(object):
    def __init__(self, pod: "Pod", kind: str, index: int, spec: Dict[str, Any]) -> None:
        self.pod = pod
        self.kind = kind
        self.index = index
        self.spec = spec
        self.name: str = spec["name"]
        self.attr = state_attr(kind, index)
        self.lock = threading.RLock()
        self.state = "waiting"
        self.exit_code = 0
        self.reason = POD_INITIALIZING
        self.message = ""
        self.started = 0
        self.finished = 0
        self.restart_count = 0
        self.proc: "Optional[subprocess.Popen[bytes]]" = None
        self.kill_reason: Optional[str] = None
        self.kill_message = ""
        self.thread: Optional[threading.Thread] = None
        self.log: Optional[CriLog] = None
        self.workdir = os.path.join(pod.work_root, "containers", self.name)

    # -- state -------------------------------------------------------------------------

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "message": self.message,
            "started": self.started,
            "finished": self.finished,
            "restart_count": self.restart_count,
        }

    def _transition(
        self, state: str, exit_code: int = 0, reason: str = "", message: str = ""
    ) -> None:
        with self.lock:
            self.state, self.exit_code, self.reason, self.message = (
                state,
                exit_code,
                reason,
                message,
            )
            if state == "running":
                self.started, self.finished = int(time.time()), 0
            elif state == "terminated":
                self.finished = int(time.time())
            encoded = encode_state(state, exit_code, reason, self.started, self.finished)
        log("container %s: %s" % (self.name, encoded + (" (%s)" % message if message else "")))
        self.pod.report(self, encoded)

    def terminate_unstarted(self, reason: str, message: str) -> None:
        self._transition("terminated", EXIT_NOT_STARTED, reason, message)

    def failed(self) -> bool:
        return self.state == "terminated" and (self.exit_code != 0 or self.reason != COMPLETED)

    def is_running(self) -> bool:
        with self.lock:
            return self.proc is not None

    # -- running -------------------------------------------------------------------------

    def _spawn(self, cmd: List[str], env_vars: Dict[bytes, bytes]) -> "subprocess.Popen[bytes]":
        """Start an apptainer command (container or hook) with piped output, in its own
        session so that its whole process tree can be signalled together."""
        return subprocess.Popen(
            [fsb(a) for a in cmd],
            env=process_env(self.pod.host_env, env_vars),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=fsb(self.pod.sandbox),
            start_new_session=True,
        )

    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name="container-" + self.name)
        self.thread.daemon = True
        self.thread.start()

    def _main(self) -> None:
        try:
            self.log = CriLog(fsb(os.path.join(self.pod.log_dir, self.name + ".log")))
            self._loop()
        except Exception as e:  # the pod must still end with a state for this container
            log("container %s: wrapper error: %r" % (self.name, e))
            if self.state != "terminated":
                self._transition("terminated", EXIT_CANNOT_RUN, CANNOT_RUN, "wrapper error: %s" % e)
        finally:
            if self.log is not None:
                self.log.close()

    def _should_restart(self) -> bool:
        policy = self.pod.restart_policy
        if self.pod.stopping or policy == "Never":
            return False
        if self.kind == "init" or policy == "OnFailure":
            return self.failed()
        return True  # Always

    def _loop(self) -> None:
        backoff = self.pod.backoff_base
        while True:
            ran_for = self._run_once()
            if ran_for is None or not self._should_restart():
                return
            if ran_for >= BACKOFF_RESET_SECONDS:
                backoff = self.pod.backoff_base
            with self.lock:
                last = (self.exit_code, self.reason)
            self._transition(
                "waiting",
                last[0],
                CRASH_LOOP,
                "back-off %gs restarting container %s (last exit %d, %s)"
                % (backoff, self.name, last[0], last[1]),
            )
            if self.pod.stop_event.wait(backoff) or self.pod.stopping:
                self._transition("terminated", last[0], last[1], "not restarted: pod stopping")
                return
            backoff = min(backoff * 2, BACKOFF_CAP_SECONDS)
            self.restart_count += 1

    def _run_once(self) -> Optional[float]:
        """Runs the container once; returns how long it ran, or None if it never started."""
        assert self.log is not None
        env_vars, home, warnings = env_for_apptainer(self.spec.get("env") or [], self.pod.host_env)
        for w in warnings:
            self.log.note(w)
            log("container %s: %s" % (self.name, w))
        try:
            binds = self.pod.binds_for(self.spec)
            self._fresh_workdir(home)
        except (OSError, SpecError) as e:
            self._transition("terminated", EXIT_CANNOT_RUN, CANNOT_RUN, str(e))
            self.log.note(str(e))
            return None
        mode = self.spec["mode"]
        cmd = apptainer_command(
            self.pod.spec, self.spec, mode, list(self.spec.get("argv") or []), binds,
            self.workdir, home, self.pod.no_eval,
        )  # fmt: skip
        with self.lock:
            if self.pod.stopping:
                return None
            self.kill_reason, self.kill_message = None, ""
            try:
                proc = self._spawn(cmd, env_vars)
            except (OSError, ValueError) as e:
                msg = "cannot start %s: %s" % (cmd[0], e)
                self.log.note(msg)
                self._transition("terminated", EXIT_CANNOT_RUN, CANNOT_RUN, msg)
                return None
            self.proc = proc
        began = time.monotonic()
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            Pump(os.dup(proc.stdout.fileno()), b"stdout", self.log),
            Pump(os.dup(proc.stderr.fileno()), b"stderr", self.log, watch_fatal=True),
        ]
        proc.stdout.close()
        proc.stderr.close()
        self._transition("running")  # before any output can reach the log
        for p in pumps:
            p.start()
        rc = proc.wait()
        # Like a container runtime: when the main process ends, the rest of it goes too.
        kill_tree(proc.pid, signal.SIGKILL)
        for p in pumps:
            p.join(2.0)
            p.stop.set()
            p.join()
        exit_code, reason, message = self._outcome(rc, pumps[1].fatal)
        with self.lock:
            self.proc = None
        self._transition("terminated", exit_code, reason, message)
        return time.monotonic() - began

    def _fresh_workdir(self, home: Optional[str]) -> None:
        """A restarted container starts with empty /tmp and $HOME, as a new container would."""
        wd = fsb(self.workdir)
        if os.path.lexists(wd):
            shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(wd)
        if home is not None:
            os.makedirs(os.path.join(wd, b"home"))

    def _outcome(self, rc: int, fatal: Optional[bytes]) -> Tuple[int, str, str]:
        code = 128 - rc if rc < 0 else rc
        with self.lock:
            kill_reason, kill_message = self.kill_reason, self.kill_message
        if kill_reason == OOM_KILLED:
            return EXIT_OOM, OOM_KILLED, kill_message
        if kill_reason is not None:
            return code if code else 1, kill_reason, kill_message
        if rc == 255 and fatal is not None:
            # Apptainer itself failed before the container's process started.
            text = fatal.decode("utf-8", "replace")[len("FATAL:") :].strip()
            if "executable file not found" in text or (
                "no such file or directory" in text and text.startswith("stat ")
            ):
                return EXIT_NOT_FOUND, CANNOT_RUN, text
            return EXIT_CANNOT_RUN, CANNOT_RUN, text
        if code == 0:
            return 0, COMPLETED, ""
        return code, ERROR, ""

    def signal(self, sig: int) -> None:
        """Signals the container's main process (Apptainer forwards it to the payload)."""
        with self.lock:
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(OSError):
                    self.proc.send_signal(sig)

    def kill(self, reason: Optional[str], message: str) -> None:
        with self.lock:
            if self.proc is None:
                return
            if reason is not None and self.kill_reason is None:
                self.kill_reason, self.kill_message = reason, message
            pid = self.proc.pid
        kill_tree(pid, signal.SIGKILL)

    def set_kill_reason(self, reason: str, message: str) -> None:
        with self.lock:
            if self.kill_reason is None:
                self.kill_reason, self.kill_message = reason, message

    def run_pre_stop(self, timeout: float) -> None:
        """Runs the preStop exec hook in a new container of the same image, binds and env."""
        hook = self.spec.get("pre_stop")
        if not hook or timeout <= 0:
            return
        env_vars, home, _ = env_for_apptainer(self.spec.get("env") or [], self.pod.host_env)
        workdir = self.workdir + ".prestop"
        try:
            binds = self.pod.binds_for(self.spec)
            shutil.rmtree(fsb(workdir), ignore_errors=True)
            os.makedirs(fsb(os.path.join(workdir, "home")))
        except (OSError, SpecError) as e:
            log("container %s: preStop not run: %s" % (self.name, e))
            return
        cmd = apptainer_command(
            self.pod.spec, self.spec, "exec", list(hook["argv"]), binds, workdir, home,
            self.pod.no_eval,
        )  # fmt: skip
        path = os.path.join(self.pod.log_dir, self.name + ".prestop.log")
        out = CriLog(fsb(path))
        log("container %s: running preStop hook" % self.name)
        try:
            proc = self._spawn(cmd, env_vars)
        except (OSError, ValueError) as e:
            log("container %s: preStop not run: %s" % (self.name, e))
            out.close()
            return
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            Pump(os.dup(proc.stdout.fileno()), b"stdout", out),
            Pump(os.dup(proc.stderr.fileno()), b"stderr", out),
        ]
        proc.stdout.close()
        proc.stderr.close()
        for p in pumps:
            p.start()
        try:
            rc = proc.wait(timeout=timeout)
            log("container %s: preStop hook exited with %d" % (self.name, rc))
        except subprocess.TimeoutExpired:
            log(
                "container %s: preStop hook still running at the end of the grace period"
                % self.name
            )
        kill_tree(proc.pid, signal.SIGKILL)
        proc.wait()
        for p in pumps:
            p.join(1.0)
            p.stop.set()
            p.join()
        out.close()


# ---------------------------------------------------------------------------------------
# The pod


class Pod(object):
    def __init__(self, spec: Dict[str, Any], sandbox: str, scratch: str) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self.scratch = scratch
        self.log_dir = os.path.join(sandbox, LOG_DIR)
        self.work_root = os.path.join(scratch, WORK_DIR)
        self.host_env: Dict[bytes, bytes] = dict(os.environb)
        self.restart_policy: str = spec.get("restart_policy") or "Never"
        self.grace = float(spec.get("termination_grace_seconds", 30) or 0)
        deadline = spec.get("active_deadline_seconds")
        self.started_at = time.monotonic()
        self.deadline_at: Optional[float] = self.started_at + deadline if deadline else None
        try:
            self.backoff_base = float(os.environ.get(BACKOFF_ENV, "10"))
        except ValueError:
            self.backoff_base = 10.0
        self.init = [
            Container(self, "init", i, c) for i, c in enumerate(spec.get("init_containers") or [])
        ]
        self.apps = [
            Container(self, "app", i, c) for i, c in enumerate(spec.get("containers") or [])
        ]
        self.stopping: Optional[str] = None
        self.stop_event = threading.Event()
        self.term_requested = False
        self.evict_message: Optional[str] = None
        self.done = threading.Event()
        self.status_lock = threading.Lock()
        self.reporter = Reporter(spec.get("chirp") or "")
        self.volume_paths: Dict[str, str] = {}
        self.prologue_groups: List[int] = []
        self.pod_message = ""
        self.no_eval = False
        self.next_sweep = 0.0
        self.strays: Dict[int, Set[int]] = {}  # container pid -> its processes at the last sweep

    # -- reporting ---------------------------------------------------------------------

    def report(self, c: Container, encoded: str) -> None:
        self.reporter.set(c.attr, encoded)
        self.write_status(final=False)

    def write_status(self, final: bool, exit_code: Optional[int] = None) -> None:
        doc = {
            "version": SPEC_VERSION,
            "pod": self.spec.get("pod"),
            "final": final,
            "exit_code": exit_code,
            "message": self.pod_message,
            "init_containers": [c.as_dict() for c in self.init],
            "containers": [c.as_dict() for c in self.apps],
        }
        write_json(os.path.join(self.sandbox, STATUS_FILE), doc, self.status_lock)

    # -- volumes ---------------------------------------------------------------------

    def prepare_volumes(self) -> None:
        for name, vol in (self.spec.get("volumes") or {}).items():
            kind = vol["kind"]
            if kind == "emptyDir":
                path = os.path.join(self.work_root, "emptydir", name)
                if not os.path.isdir(fsb(path)):
                    os.makedirs(fsb(path))
                os.chmod(fsb(path), 0o777)  # as kubelet makes them: any uid in the pod writes
            elif kind == "sandbox":
                path = os.path.join(self.sandbox, vol.get("path") or os.path.join(VOLUME_DIR, name))
                if not os.path.isdir(fsb(path)):
                    os.makedirs(fsb(path))  # a configMap with no keys is an empty directory
            else:
                path = vol["path"]
            self.volume_paths[name] = path

    def binds_for(self, container: Dict[str, Any]) -> List[str]:
        out: List[str] = []
        for m in container.get("mounts") or []:
            base = self.volume_paths[m["volume"]]
            source = base
            sub = m.get("sub_path") or ""
            if sub:
                source = os.path.join(base, sub)
                if not os.path.lexists(fsb(source)):
                    os.makedirs(fsb(source))  # kubelet creates a missing subPath directory
                if not _within(fsb(source), fsb(base)):
                    raise SpecError(
                        "subPath %r of volume %r leaves the volume" % (sub, m["volume"])
                    )
            if not os.path.exists(fsb(source)):
                raise SpecError("volume %r: %s does not exist" % (m["volume"], source))
            out += bind_args(source, m["mount_path"], bool(m.get("read_only")))
        return out

    # -- the run -------------------------------------------------------------------------

    def run(self) -> int:
        os.makedirs(fsb(self.log_dir), exist_ok=True)
        os.makedirs(fsb(self.work_root), exist_ok=True)
        self.reporter.start()
        self.write_status(final=False)
        monitor = threading.Thread(target=self._monitor, name="monitor")
        monitor.daemon = True
        monitor.start()
        try:
            self.prepare_volumes()
        except (OSError, SpecError) as e:
            self._fail_all(CANNOT_RUN, "cannot prepare volumes: %s" % e)
            return self._finish(EXIT_CANNOT_RUN)
        binary = (self.spec.get("apptainer") or {}).get("binary") or "apptainer"
        self.no_eval = supports_no_eval(binary)
        if not self.no_eval:
            log("%s has no --no-eval: environment values may be shell-evaluated" % binary)
        prologue_rc = self._run_prologue()
        if prologue_rc is not None:
            return self._finish(prologue_rc)
        for i, c in enumerate(self.init):
            if self.stopping:
                break
            c.start()
            self._wait([c])
            if self.stopping:
                break
            if c.failed():
                rest = self.init[i + 1 :] + self.apps
                for other in rest:
                    other.terminate_unstarted(
                        INIT_FAILED, "init container %s failed (exit %d)" % (c.name, c.exit_code)
                    )
                break
        else:
            if not self.stopping:
                for c in self.apps:
                    c.start()
                self._wait(self.apps)
        return self._finish(None)

    def _wait(self, containers: List[Container]) -> None:
        """Waits for containers to end, acting on SIGTERM, the deadline and evictions."""
        while True:
            alive = [c for c in containers if c.thread is not None and c.thread.is_alive()]
            if not alive:
                return
            self._check_stop()
            for c in alive:
                c.thread.join(POLL_SECONDS / len(alive))  # type: ignore[union-attr]

    def _check_stop(self) -> None:
        if self.stopping:
            return
        if self.term_requested:
            self.stop(POD_TERMINATED, "the job was asked to stop (SIGTERM)")
        elif self.deadline_at is not None and time.monotonic() >= self.deadline_at:
            self.stop(
                DEADLINE_EXCEEDED,
                "pod ran longer than activeDeadlineSeconds=%s"
                % self.spec.get("active_deadline_seconds"),
            )
        elif self.evict_message is not None:
            self.stop(EVICTED, self.evict_message)

    def stop(self, reason: str, message: str) -> None:
        """preStop hooks, then SIGTERM, then SIGKILL when the grace period is over."""
        self.stopping = reason
        self.pod_message = message
        self.stop_event.set()
        log("stopping the pod: %s" % message)
        end = time.monotonic() + self.grace
        running = [c for c in self.init + self.apps if c.is_running()]
        if reason != POD_TERMINATED:
            for c in running:
                c.set_kill_reason(reason, message)
        hooks = []
        for c in running:
            if c.spec.get("pre_stop"):
                t = threading.Thread(target=c.run_pre_stop, args=(end - time.monotonic(),))
                t.daemon = True
                t.start()
                hooks.append(t)
        for t in hooks:
            t.join(max(0.0, end - time.monotonic()))
        for c in running:
            c.signal(signal.SIGTERM)
        for c in running:
            while c.is_running() and time.monotonic() < end:
                time.sleep(0.05)
        for c in running:
            if c.is_running():
                log("container %s: still running after the grace period, killing it" % c.name)
                c.kill(None, "")

    def _monitor(self) -> None:
        """Memory limits (RSS of each container's process tree) and emptyDir size limits."""
        next_disk_check = time.monotonic() + EVICTION_CHECK_SECONDS
        while not self.done.wait(POLL_SECONDS):
            try:
                self._check_memory()
                if time.monotonic() >= next_disk_check:
                    next_disk_check = time.monotonic() + EVICTION_CHECK_SECONDS
                    self._check_disk()
            except Exception as e:  # never let the monitor die silently
                log("monitor error: %r" % e)

    def _check_memory(self) -> None:
        limited = []
        for c in self.init + self.apps:
            limit = c.spec.get("memory_limit_bytes")
            with c.lock:
                pid = c.proc.pid if c.proc is not None else None
            if limit and pid is not None:
                limited.append((c, pid, int(limit)))
        if not limited:
            self.strays.clear()
            return
        # Each tick reads only the containers' own trees; a full /proc scan every few
        # seconds also finds processes that left their tree (double-forked daemons).
        procs: Optional[Dict[int, Proc]] = None
        if time.monotonic() >= self.next_sweep:
            procs = scan_processes()
            self.next_sweep = time.monotonic() + SWEEP_SECONDS
        for c, pid, limit in limited:
            tree = descendants(pid) if procs is None else None
            if tree is None:
                if procs is None:
                    procs = scan_processes()
                pids = process_tree(procs, pid)
                self.strays[pid] = set(pids)
                current = procs
            else:
                pids = tree + [p for p in self.strays.get(pid, ()) if p not in tree]
                current = {}
                for p in pids:
                    proc = read_proc(p)
                    # A stray counts only while it is still in the container's session.
                    if proc is not None and (p in tree or proc.sid == pid):
                        current[p] = proc
            used = memory_of(current, pids, precise=False)
            if used > limit:
                used = memory_of(current, pids, precise=True)
            if used > limit:
                msg = "memory limit of %d bytes exceeded (%d bytes in use)" % (limit, used)
                log("container %s: %s, killing it" % (c.name, msg))
                c.kill(OOM_KILLED, msg)

    def _check_disk(self) -> None:
        if self.evict_message is not None:
            return
        for name, vol in (self.spec.get("volumes") or {}).items():
            limit = vol.get("size_limit_bytes")
            if vol.get("kind") == "emptyDir" and limit and name in self.volume_paths:
                used = dir_usage(fsb(self.volume_paths[name]))
                if used > limit:
                    self.evict_message = (
                        "emptyDir volume %s uses %d bytes, over its sizeLimit of %d"
                        % (name, used, limit)
                    )
                    return

    def _run_prologue(self) -> Optional[int]:
        """Runs the prologue; returns None when it succeeded, else the pod's exit code."""
        commands = self.spec.get("prologue") or []
        if not commands:
            return None
        fd = os.open(
            fsb(os.path.join(self.log_dir, PROLOGUE_LOG)),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o600,
        )
        try:
            for i, command in enumerate(commands):
                log("prologue command %d starting" % i)
                try:
                    # Background processes it leaves (tunnels) live on until the pod ends.
                    proc = subprocess.Popen(
                        [b"/bin/sh", b"-c", fsb(command)],
                        stdin=subprocess.DEVNULL,
                        stdout=fd,
                        stderr=fd,
                        cwd=fsb(self.sandbox),
                        start_new_session=True,
                    )
                except (OSError, ValueError) as e:
                    return self._prologue_failed("prologue command %d cannot start: %s" % (i, e), 1)
                self.prologue_groups.append(proc.pid)
                while proc.poll() is None:
                    self._check_stop()
                    if self.stopping:
                        kill_tree(proc.pid, signal.SIGKILL)
                        proc.wait()
                        self._fail_all(self.stopping, self.pod_message)
                        return 1
                    time.sleep(0.05)
                if proc.returncode != 0:
                    rc = proc.returncode if proc.returncode > 0 else 128 - proc.returncode
                    return self._prologue_failed(
                        "prologue command %d exited with %d (see %s/%s)"
                        % (i, rc, LOG_DIR, PROLOGUE_LOG),
                        rc,
                    )
        finally:
            os.close(fd)
        return None

    def _prologue_failed(self, message: str, rc: int) -> int:
        self._fail_all(PROLOGUE_FAILED, message)
        return rc

    def _fail_all(self, reason: str, message: str) -> None:
        self.pod_message = message
        log(message)
        for c in self.init + self.apps:
            if c.state != "terminated":
                c.terminate_unstarted(reason, message)

    def _finish(self, forced: Optional[int]) -> int:
        for c in self.init + self.apps:
            if c.state != "terminated":
                if self.stopping:
                    c.terminate_unstarted(self.stopping, self.pod_message)
                else:  # e.g. a wrapper error: never leave a container without an end
                    c.terminate_unstarted(ERROR, "the pod ended before this container ran")
        self.done.set()
        for pgid in self.prologue_groups:
            kill_tree(pgid, signal.SIGKILL)
        code = forced if forced is not None else self.exit_code()
        if not self.reporter.flush(10.0 if self.stopping else CHIRP_TIMEOUT * 2):
            log("some container states could not be sent with condor_chirp in time")
        self.write_status(final=True, exit_code=code)
        log("pod finished with exit code %d" % code)
        return code

    def exit_code(self) -> int:
        for c in self.init + self.apps:
            if c.failed():
                return max(1, min(255, c.exit_code))
        return 0


def write_json(path: str, doc: Dict[str, Any], lock: Optional[Any] = None) -> None:
    """Atomic replace, so a reader never sees half a file."""
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")
    tmp = path + ".tmp"
    if lock is not None:
        lock.acquire()
    try:
        with open(fsb(tmp), "wb") as f:
            f.write(data)
        os.replace(fsb(tmp), fsb(path))
    except OSError as e:
        log("cannot write %s: %s" % (path, e))
    finally:
        if lock is not None:
            lock.release()


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_path = args[0] if args else SPEC_FILE
    sandbox = os.getcwd()
    scratch = os.environ.get("_CONDOR_SCRATCH_DIR") or sandbox
    try:
        spec = load_spec(spec_path)
    except SpecError as e:
        log("cannot run the pod: %s" % e)
        write_json(
            os.path.join(sandbox, STATUS_FILE),
            {
                "version": SPEC_VERSION,
                "final": True,
                "exit_code": EXIT_SPEC_ERROR,
                "message": str(e),
            },
        )
        return EXIT_SPEC_ERROR
    pod = Pod(spec, sandbox, scratch)

    def on_signal(signum: int, frame: Any) -> None:
        pod.term_requested = True  # acted on by the main loop: nothing here may block

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    ident = spec.get("pod") or {}
    log(
        "pod %s/%s (uid %s): %d init, %d app containers"
        % (
            ident.get("namespace"),
            ident.get("name"),
            ident.get("uid"),
            len(pod.init),
            len(pod.apps),
        )
    )
    return pod.run()


if __name__ == "__main__":
    sys.exit(main())
