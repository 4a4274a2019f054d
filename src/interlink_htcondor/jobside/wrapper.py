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
4. runs the app containers in parallel, each with its postStart hook and its startup,
   liveness and readiness probes as the kubelet runs them, restarting them as
   ``restartPolicy`` says (with the kubelet's back-off), and ends when all have ended;
5. writes each container's stdout and stderr to ``logs/<container>.log`` in the CRI log
   format, line by line as they come (the previous instance of a restarted container in
   ``logs/<container>.previous.log``);
6. reports each container's state (waiting, running, terminated, with restarts, readiness
   and the previous instance's end) into the job ad with ``condor_chirp`` and into
   ``status.json``;
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
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

# Must match interlink_htcondor.core.jobspec (tests/unit check that they agree).
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
CONTAINER_CREATING = "ContainerCreating"
FAILED_POST_START = "FailedPostStartHook"  # the kubelet's reason for that kill

EXIT_SPEC_ERROR = 2  # the spec is unreadable or from another release: nothing ran
EXIT_NOT_STARTED = 1  # a container that never ran because the pod failed before it
EXIT_CANNOT_RUN = 128  # apptainer could not start the container (what kubelets report)
EXIT_NOT_FOUND = 127  # the command does not exist in the image (as a shell reports it)
EXIT_OOM = 137  # 128 + SIGKILL, as after a kernel OOM kill

POLL_SECONDS = 0.25  # memory polling and main-loop period
PARTIAL_FLUSH_SECONDS = 0.5  # an unterminated line is written as a "P" record after this
MAX_LOG_LINE = 16 * 1024  # longer lines are split into "P" records, like containerd
EVICTION_CHECK_SECONDS = 5.0  # emptyDir size-limit check period
# Full /proc scan period of the memory monitor: a safety net only (--containall gives each
# container a PID namespace, whose orphans stay in the tree), and it reads every process
# of the machine: 64 idle wrappers used 0.41 of a core scanning every 5 s, 0.26 every 30 s.
SWEEP_SECONDS = 30.0
CHIRP_TIMEOUT = 30.0
BACKOFF_CAP_SECONDS = 300.0  # kubelet's restart backoff: 10 s doubling up to 5 min
BACKOFF_RESET_SECONDS = 600.0  # a container that ran this long restarts without delay
BACKOFF_ENV = "INTERLINK_WRAPPER_BACKOFF_SECONDS"  # first backoff step (default 10 s)
PREVIOUS_LOG = ".previous.log"  # "<container>.previous.log": the instance before a restart

# Probes and lifecycle hooks.
STARTUP, LIVENESS, READINESS = "Startup", "Liveness", "Readiness"
PROBE_KEYS = (
    (STARTUP, "startup_probe"),
    (LIVENESS, "liveness_probe"),
    (READINESS, "readiness_probe"),
)
OUTPUT_LIMIT = 10 * 1024  # of a probe's or hook's output kept for its message (kubelet: 10 KiB)
MESSAGE_OUTPUT = 1024  # of that output quoted in the state's message (status.json)
MAX_MESSAGE = 512  # characters of a message carried in the job ad
MAX_REDIRECTS = 10  # an HTTP probe follows redirects to the same host, as the kubelet does
EXEC_START_LIMIT = 30.0  # Apptainer's own start-up before an exec probe's timeout counts
MIN_KILL_GRACE = 2.0  # SIGTERM to SIGKILL after a preStop hook at least (kubelet: 2 s)
PROBE_AGENT = "kube-probe/interlink-htcondor"
# The namespaces of its container that an exec probe or hook joins, as CRI exec does (the
# network is the execute point's, shared by the pod's containers).
JOINED_NAMESPACES = (("user", "-U"), ("mnt", "-m"), ("pid", "-p"), ("ipc", "-i"))
HOOK_AGENT = "kube-lifecycle/interlink-htcondor"

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


def clean_message(message: str) -> str:
    """Same as ``core.classad_attrs.clean_message``: one line, no quote or backslash."""
    text = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in message)
    text = " ".join(text.replace('"', "'").replace("\\", "/").split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text


def encode_state(
    state: str,
    exit_code: int,
    reason: str,
    started: int,
    finished: int,
    restarts: int = 0,
    flags: str = "",
    last: Optional[Tuple[int, str, int, int]] = None,
    message: str = "",
) -> str:
    """Same format as ``core.classad_attrs.encode_state`` (checked by a unit test):
    ``flags`` holds ``S`` (started) and ``R`` (ready); ``last`` is the previous instance's
    (exit code, reason, started, finished)."""
    text = "%s %d %s %d %d %d %s %s" % (
        state,
        exit_code,
        reason or "-",
        started,
        finished,
        restarts,
        flags or "-",
        "-" if last is None else "%d:%s:%d:%d" % (last[0], last[1] or "-", last[2], last[3]),
    )
    message = clean_message(message)
    return text + " " + message if message else text


def state_attr(kind: str, index: int) -> str:
    """Same names as ``core.classad_attrs.state_attr``."""
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
            for key in ("post_start", "pre_stop"):
                if c.get(key) is not None:
                    check_handler(c[key], "container %r: %s" % (name, key), probe=False)
            for _kind, key in PROBE_KEYS:
                if c.get(key) is not None:
                    check_handler(c[key], "container %r: %s" % (name, key), probe=True)
    if spec.get("restart_policy", "Never") not in ("Always", "OnFailure", "Never"):
        raise SpecError("unknown restart policy %r" % spec.get("restart_policy"))


def _is_int(v: Any, low: int, high: int = 1 << 31) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def check_handler(h: Any, what: str, probe: bool) -> None:
    """A probe or hook: exactly one action, each of the shape the wrapper runs."""
    if not isinstance(h, dict):
        raise SpecError("%s must be an object" % what)
    actions = [
        k for k in ("argv", "http_get", "tcp_socket", "sleep_seconds") if h.get(k) is not None
    ]
    if len(actions) != 1 or (probe and actions[0] == "sleep_seconds"):
        raise SpecError("%s needs exactly one action" % what)
    argv = h.get("argv")
    if argv is not None and (
        not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)
    ):
        raise SpecError("%s: argv must be a non-empty list of strings" % what)
    for key in ("http_get", "tcp_socket"):
        action = h.get(key)
        if action is None:
            continue
        if (
            not isinstance(action, dict)
            or not _is_int(action.get("port"), 1, 65535)
            or not isinstance(action.get("host"), str)
            or not action["host"]
        ):
            raise SpecError("%s: %s needs a host and a port" % (what, key))
        if key == "http_get" and (
            action.get("scheme") not in ("http", "https")
            or not str(action.get("path") or "").startswith("/")
            or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                for p in action.get("headers") or []
            )
        ):
            raise SpecError("%s: http_get needs a scheme, a path and [name, value] headers" % what)
    if h.get("sleep_seconds") is not None and not _is_int(h["sleep_seconds"], 0):
        raise SpecError("%s: sleep_seconds must be a non-negative integer" % what)
    if probe:
        for key, low in (
            ("initial_delay_seconds", 0),
            ("period_seconds", 1),
            ("timeout_seconds", 1),
            ("success_threshold", 1),
            ("failure_threshold", 1),
        ):
            if key in h and not _is_int(h[key], low):
                raise SpecError("%s: %s must be an integer of at least %d" % (what, key, low))
        grace = h.get("termination_grace_seconds")
        if grace is not None and not _is_int(grace, 1):
            raise SpecError("%s: termination_grace_seconds must be a positive integer" % what)


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
    """Copies one pipe into a CRI log: whole lines at once, partial lines after a pause.

    Without ``out`` the output is only read; ``capture`` keeps its first bytes (a probe's or
    hook's output, for its failure message).
    """

    def __init__(
        self,
        fd: int,
        stream: bytes,
        out: Optional[CriLog],
        watch_fatal: bool = False,
        capture: int = 0,
    ) -> None:
        threading.Thread.__init__(self, name="pump-%d" % fd)
        self.daemon = True
        self.fd = fd
        self.stream = stream
        self.out = out
        self.stop = threading.Event()
        self.watch_fatal = watch_fatal
        self.fatal: Optional[bytes] = None
        self.capture = capture
        self.captured = b""

    def _emit(self, lines: List[bytes], partial: bytes) -> None:
        stamp = fsb(rfc3339_nano(time.time()))
        records: List[bytes] = []
        for line in lines:
            records += cri_records(self.stream, line, True, stamp)
            if self.watch_fatal and self.fatal is None and line.startswith(b"FATAL:"):
                self.fatal = line
        if partial:
            records += cri_records(self.stream, partial, False, stamp)
        if len(self.captured) < self.capture:
            text = b"".join(line + b"\n" for line in lines) + partial
            self.captured = (self.captured + text)[: self.capture]
        if self.out is not None:
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


def find_program(name: str, host_env: Dict[bytes, bytes]) -> Optional[str]:
    """``name`` on the job's PATH, or in the system's own directories (a job's PATH may be
    minimal)."""
    path = host_env.get(b"PATH", b"").decode("utf-8", "replace")
    return shutil.which(name, path=os.pathsep.join([path, "/usr/bin:/bin:/usr/sbin:/sbin"]))


CHIRP_PLACES = (
    "/usr/libexec/condor/condor_chirp",
    "/usr/lib/condor/libexec/condor_chirp",
    "/usr/local/libexec/condor/condor_chirp",
    "/opt/condor/libexec/condor_chirp",
)


def find_chirp(hint: str) -> Optional[str]:
    if hint:
        return hint if os.access(hint, os.X_OK) else None
    found = shutil.which("condor_chirp")
    if found:
        return found
    # The usual places first: asking condor_config_val costs a process start.
    for path in CHIRP_PLACES:
        if os.access(path, os.X_OK):
            return path
    ccv = shutil.which("condor_config_val")
    if ccv:
        try:
            out = subprocess.check_output(
                [ccv, "LIBEXEC"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30
            )
            libexec = out.decode("utf-8", "replace").strip()
            path = os.path.join(libexec, "condor_chirp")
            if libexec and os.access(path, os.X_OK):
                return path
        except (OSError, subprocess.SubprocessError):
            pass
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
# Probes: the kubelet's counting and timing (pure), HTTP and TCP checks


class ProbeCounter(object):
    """The kubelet's counting of one probe's results: a result takes effect once it came
    ``success_threshold`` (or ``failure_threshold``) times in a row, and stays in effect
    while it keeps coming."""

    def __init__(self, success_threshold: int, failure_threshold: int) -> None:
        self.success_threshold = success_threshold
        self.failure_threshold = failure_threshold
        self.last: Optional[bool] = None
        self.run = 0

    def add(self, ok: bool) -> Optional[bool]:
        """Counts one result; returns it when it takes effect, else None."""
        if ok == self.last:
            self.run += 1
        else:
            self.last, self.run = ok, 1
        needed = self.success_threshold if ok else self.failure_threshold
        return ok if self.run >= needed else None


def next_tick(due: float, period: float, now: float) -> float:
    """The probe's next run after the one due at ``due``: ticks every ``period`` from the
    first, those already past skipped (a probe that outlasts its period does not make the
    next ones pile up), as with the kubelet's ticker."""
    due += period
    if due <= now:
        due += period * (int((now - due) // period) + 1)
    return due


def _dial_error(e: BaseException, where: str) -> str:
    """Go's words for a failed connection, as the kubelet's messages show them."""
    if isinstance(e, socket.timeout):
        return "dial tcp %s: i/o timeout" % where
    if isinstance(e, ConnectionRefusedError):
        return "dial tcp %s: connect: connection refused" % where
    if isinstance(e, socket.gaierror):
        return "dial tcp: lookup %s: no such host" % where.rsplit(":", 1)[0]
    return "dial tcp %s: %s" % (where, getattr(e, "strerror", None) or e)


def _host_port(host: str, port: int) -> str:
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def tcp_check(action: Dict[str, Any], timeout: float) -> Tuple[bool, str]:
    """(ok, message) of a tcpSocket probe: the port accepts a connection."""
    where = _host_port(action["host"], action["port"])
    try:
        conn = socket.create_connection((action["host"], action["port"]), timeout=timeout)
    except OSError as e:
        return False, _dial_error(e, where)
    conn.close()
    return True, ""


def http_get(action: Dict[str, Any], timeout: float, agent: str) -> Tuple[Optional[int], str, str]:
    """One GET as the kubelet's prober sends it, following redirects to the same host.

    Returns (status code or None when no answer came, error message, URL asked). HTTPS
    certificates are not verified, as the kubelet does not verify them.
    """
    # Imported here: the HTTP client and TLS are a sixth of the wrapper's start-up, and
    # most pods have no httpGet probe or hook.
    import http.client
    import ssl
    from urllib.parse import urljoin, urlsplit

    host, port, path = action["host"], int(action["port"]), action["path"]
    scheme = action["scheme"]
    headers = dict((k, v) for k, v in action.get("headers") or [])
    names = set(k.lower() for k in headers)
    if "user-agent" not in names:
        headers["User-Agent"] = agent
    if "accept" not in names:
        headers["Accept"] = "*/*"
    url = "%s://%s%s" % (scheme, _host_port(host, port), path)
    end = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        left = end - time.monotonic()
        if left <= 0:
            return None, 'Get "%s": context deadline exceeded' % url, url
        conn: http.client.HTTPConnection
        if scheme == "https":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, port, timeout=left, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=left)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read(OUTPUT_LIMIT)
            status, location = resp.status, resp.getheader("Location")
        except socket.timeout:
            return None, 'Get "%s": context deadline exceeded' % url, url
        except (OSError, http.client.HTTPException, ValueError) as e:
            # ValueError: a header http.client refuses to send (the plugin checks them).
            return None, 'Get "%s": %s' % (url, _dial_error(e, _host_port(host, port))), url
        finally:
            conn.close()
        if status not in (301, 302, 303, 307, 308) or not location:
            return status, "", url
        target = urlsplit(urljoin(url, location))
        if target.scheme not in ("http", "https") or target.hostname != host:
            return status, "", url  # not followed, as the kubelet's prober: the 3xx counts
        scheme = target.scheme
        port = target.port or (443 if scheme == "https" else 80)
        path = (target.path or "/") + ("?" + target.query if target.query else "")
        url = "%s://%s%s" % (scheme, _host_port(host, port), path)
    return None, 'Get "%s": stopped after %d redirects' % (url, MAX_REDIRECTS), url


def http_probe(action: Dict[str, Any], timeout: float) -> Tuple[bool, str]:
    """(ok, message) of an httpGet probe: 200 <= status < 400 is a success."""
    status, error, _url = http_get(action, timeout, PROBE_AGENT)
    if status is None:
        return False, error
    if 200 <= status < 400:
        return True, ""
    return False, "HTTP probe failed with statuscode: %d" % status


def payload_started(root: int) -> bool:
    """Whether Apptainer, started as ``root``, has started the command it runs: a process
    of its tree is not one of Apptainer's own. True where the tree cannot be read."""
    pids = descendants(root)
    if pids is None:
        return True
    for pid in pids:
        p = read_proc(pid)
        if p is not None and p.comm not in APPTAINER_HELPERS:
            return True
    return False


def payload_pid(root: int) -> Optional[int]:
    """The container's own command in Apptainer's tree started as ``root`` (the first
    process that is not one of Apptainer's), or None while Apptainer is still starting."""
    pids = descendants(root)
    if pids is None:
        pids = sorted(process_tree(scan_processes(), root))
    for pid in pids:
        p = read_proc(pid)
        if p is not None and p.comm not in APPTAINER_HELPERS:
            return pid
    return None


def join_options(pid: int) -> Optional[List[str]]:
    """nsenter's options joining the namespaces of ``pid`` that differ from the wrapper's,
    or None where its container cannot be joined by the job's user: Apptainer made no user
    and mount namespaces of the user's own (a setuid installation), or the process is gone."""
    options = []
    for ns, flag in JOINED_NAMESPACES:
        try:
            if os.readlink("/proc/%d/ns/%s" % (pid, ns)) != os.readlink("/proc/self/ns/" + ns):
                options.append(flag)
        except OSError:
            return None
    if "-U" not in options or "-m" not in options:
        return None
    return options


def join_command(nsenter: str, pid: int, options: List[str], argv: List[str]) -> List[str]:
    """``argv`` run inside the container of ``pid``: in its namespaces, its root and its
    working directory, as the job's user (whom Apptainer maps to itself)."""
    return [nsenter, "-t", str(pid)] + options + ["-r", "-w", "--preserve-credentials", "--"] + argv


def read_environ(pid: int) -> Optional[Dict[bytes, bytes]]:
    """The environment ``pid`` started with (what Apptainer gave the container's command)."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    env: Dict[bytes, bytes] = {}
    for item in data.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env[name] = value
    return env


def pod_name(spec: Dict[str, Any]) -> str:
    """The pod as the kubelet names it in messages: ``name_namespace(uid)``."""
    ident = spec.get("pod") or {}
    return "%s_%s(%s)" % (ident.get("name"), ident.get("namespace"), ident.get("uid"))


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
        self.public_message = ""  # the message without command output (it goes to the job ad)
        self.started = 0
        self.finished = 0
        self.restart_count = 0
        self.is_started = False  # running and past its startup probe
        self.ready = False  # started and its readiness probe passing
        self.last_state: Optional[Dict[str, Any]] = None  # the previous instance's end
        self.proc: "Optional[subprocess.Popen[bytes]]" = None
        self.kill_reason: Optional[str] = None
        self.kill_message = ""
        self.kill_public = ""
        self.restart_anyway = False  # killed by a probe or postStart: only "Never" keeps it
        self.pre_stop_done = False
        self.instance_done = threading.Event()  # the current instance's process has ended
        self.version = 0  # of the state, counted under the lock
        self.reported_version = 0  # under the pod's report lock
        self.thread: Optional[threading.Thread] = None
        self.log: Optional[CriLog] = None
        self.workdir = os.path.join(pod.work_root, "containers", self.name)

    # -- state -------------------------------------------------------------------------

    def as_dict(self) -> Dict[str, Any]:
        with self.lock:
            return {
                "name": self.name,
                "state": self.state,
                "exit_code": self.exit_code,
                "reason": self.reason,
                "message": self.message,
                "started": self.started,
                "finished": self.finished,
                "restart_count": self.restart_count,
                "is_started": self.is_started,
                "ready": self.ready,
                "last_state": self.last_state,
            }

    def _encoded(self) -> str:
        last = self.last_state
        return encode_state(
            self.state,
            self.exit_code,
            self.reason,
            self.started,
            self.finished,
            self.restart_count,
            ("S" if self.is_started else "") + ("R" if self.ready else ""),
            None
            if last is None
            else (last["exit_code"], last["reason"], last["started"], last["finished"]),
            self.public_message,
        )

    def _transition(
        self,
        state: str,
        exit_code: int = 0,
        reason: str = "",
        message: str = "",
        public: Optional[str] = None,
        started_at: int = 0,
    ) -> None:
        """Enters a state; ``public`` is the message for the job ad when ``message`` holds
        command output (which pool users must not read)."""
        with self.lock:
            self.state, self.exit_code, self.reason, self.message = (
                state,
                exit_code,
                reason,
                message,
            )
            self.public_message = message if public is None else public
            if state == "running":
                self.started, self.finished = started_at or int(time.time()), 0
                # Without a startup probe it has started; without a readiness probe, once
                # started it is ready.
                self.is_started = not self.spec.get("startup_probe")
                self.ready = self.is_started and not self.spec.get("readiness_probe")
            else:
                self.is_started = self.ready = False
                if state == "terminated":
                    self.finished = int(time.time())
            self.version += 1
            encoded, version = self._encoded(), self.version
        # The encoding holds the message as the job ad has it: shortened, without output.
        shown = clean_message(self.public_message)
        full = " (%s)" % message if message and clean_message(message) != shown else ""
        log("container %s: %s%s" % (self.name, encoded, full))
        self.pod.report(self, encoded, version)

    def _set_flags(self, started: Optional[bool] = None, ready: Optional[bool] = None) -> None:
        """A probe's result took effect: report the new started/ready flags, if changed."""
        with self.lock:
            if self.state != "running":
                return
            before = (self.is_started, self.ready)
            if started is not None:
                self.is_started = started
                if started and not self.spec.get("readiness_probe"):
                    self.ready = True
            if ready is not None:
                self.ready = ready and self.is_started
            if (self.is_started, self.ready) == before:
                return
            self.version += 1
            encoded, version = self._encoded(), self.version
        log("container %s: started %s, ready %s" % (self.name, self.is_started, self.ready))
        self.pod.report(self, encoded, version)

    def terminate_unstarted(self, reason: str, message: str) -> None:
        self._transition("terminated", EXIT_NOT_STARTED, reason, message)

    def failed(self) -> bool:
        return self.state == "terminated" and (self.exit_code != 0 or self.reason != COMPLETED)

    def is_running(self) -> bool:
        with self.lock:
            return self.proc is not None

    # -- running -------------------------------------------------------------------------

    def _spawn(
        self,
        cmd: List[str],
        env_vars: Dict[bytes, bytes],
        merge: bool = False,
        env: Optional[Dict[bytes, bytes]] = None,
    ) -> "subprocess.Popen[bytes]":
        """Start an apptainer command (container or hook), or ``env`` given, a command that
        joins a running container, with piped output (stderr into stdout when ``merge``),
        in its own session so that its whole process tree can be signalled together."""
        return subprocess.Popen(
            [fsb(a) for a in cmd],
            env=env if env is not None else process_env(self.pod.host_env, env_vars),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            cwd=fsb(self.pod.sandbox),
            start_new_session=True,
        )

    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name="container-" + self.name)
        self.thread.daemon = True
        self.thread.start()

    def _main(self) -> None:
        try:
            self._loop()
        except Exception as e:  # the pod must still end with a state for this container
            log("container %s: wrapper error: %r" % (self.name, e))
            if self.state != "terminated":
                self._transition("terminated", EXIT_CANNOT_RUN, CANNOT_RUN, "wrapper error: %s" % e)
        finally:
            if self.log is not None:
                self.log.close()

    def _open_log(self) -> CriLog:
        """The instance's CRI log. A restart moves the previous instance's log aside (the
        kubelet keeps it for ``kubectl logs --previous``), so each log holds one instance."""
        path = os.path.join(self.pod.log_dir, self.name + ".log")
        if self.log is not None:
            self.log.close()
            try:
                os.replace(fsb(path), fsb(os.path.join(self.pod.log_dir, self.name + PREVIOUS_LOG)))
            except OSError as e:
                log("container %s: cannot keep the previous log: %s" % (self.name, e))
        self.log = CriLog(fsb(path))
        return self.log

    def _should_restart(self) -> bool:
        policy = self.pod.restart_policy
        if self.pod.stopping or policy == "Never":
            return False
        if self.restart_anyway:
            return True  # the kubelet restarts what a probe or postStart killed, exit 0 too
        if self.kind == "init" or policy == "OnFailure":
            return self.failed()
        return True  # Always

    def _loop(self) -> None:
        # The kubelet's back-off: the first restart at once, then 10 s, doubling up to a cap,
        # from the start again after a long enough good run.
        backoff = 0.0
        while True:
            ran_for = self._run_once()
            if ran_for is None or not self._should_restart():
                return
            if ran_for >= BACKOFF_RESET_SECONDS:
                backoff = 0.0
            with self.lock:
                last = (self.exit_code, self.reason, self.message, self.public_message)
                previous = self.last_state
                self.last_state = {
                    "exit_code": self.exit_code,
                    "reason": self.reason,
                    "message": self.message,
                    "started": self.started,
                    "finished": self.finished,
                }
            if backoff > 0:
                why = "back-off %gs restarting failed container=%s pod=%s" % (
                    backoff,
                    self.name,
                    pod_name(self.pod.spec),
                )
                detail = " (last exit %d, %s%s)"
                self._transition(
                    "waiting",
                    last[0],
                    CRASH_LOOP,
                    why + detail % (last[0], last[1], ": " + last[2] if last[2] else ""),
                    why + detail % (last[0], last[1], ": " + last[3] if last[3] else ""),
                )
                if self.pod.stop_event.wait(backoff) or self.pod.stopping:
                    with self.lock:
                        self.last_state = previous
                    self._transition("terminated", last[0], last[1], "not restarted: pod stopping")
                    return
            backoff = min(backoff * 2, BACKOFF_CAP_SECONDS) if backoff else self.pod.backoff_base
            self.restart_count += 1

    def _run_once(self) -> Optional[float]:
        """Runs the container once; returns how long it ran, or None if it never started."""
        out = self._open_log()
        env_vars, home, warnings = env_for_apptainer(self.spec.get("env") or [], self.pod.host_env)
        for w in warnings:
            out.note(w)
            log("container %s: %s" % (self.name, w))
        try:
            binds = self.pod.binds_for(self.spec)
            self._fresh_workdir(home)
        except (OSError, SpecError) as e:
            self._transition("terminated", EXIT_CANNOT_RUN, CANNOT_RUN, str(e))
            out.note(str(e))
            return None
        mode = self.spec["mode"]
        cmd = apptainer_command(
            self.pod.spec, self.spec, mode, list(self.spec.get("argv") or []), binds,
            self.workdir, home, self.pod.no_eval,
        )  # fmt: skip
        done = threading.Event()
        with self.lock:
            if self.pod.stopping:
                return None
            self.kill_reason, self.kill_message, self.kill_public = None, "", ""
            self.restart_anyway = self.pre_stop_done = False
            self.instance_done = done
            try:
                proc = self._spawn(cmd, env_vars)
            except (OSError, ValueError) as e:
                msg = "cannot start %s: %s" % (cmd[0], e)
                out.note(msg)
                self._transition("terminated", EXIT_CANNOT_RUN, CANNOT_RUN, msg)
                return None
            self.proc = proc
        began = time.monotonic()
        started_at = int(time.time())
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            Pump(os.dup(proc.stdout.fileno()), b"stdout", out),
            Pump(os.dup(proc.stderr.fileno()), b"stderr", out, watch_fatal=True),
        ]
        proc.stdout.close()
        proc.stderr.close()
        start = self._watch_start(proc.pid, done)
        hook = self.spec.get("post_start")
        # Not running until its postStart hook has returned, as under the kubelet.
        if hook:
            self._transition("waiting", 0, CONTAINER_CREATING, "running the postStart hook")
        else:
            self._transition("running", started_at=started_at)  # before any output is logged
        for p in pumps:
            p.start()
        if hook and self._post_start(hook, proc):
            self._transition("running", started_at=started_at)
        if self.state == "running":
            self._start_probes(start, done)
        rc = proc.wait()
        done.set()
        # Like a container runtime: when the main process ends, the rest of it goes too.
        kill_tree(proc.pid, signal.SIGKILL)
        for p in pumps:
            p.join(2.0)
            p.stop.set()
            p.join()
        exit_code, reason, message, public = self._outcome(rc, pumps[1].fatal)
        with self.lock:
            self.proc = None
        self._transition("terminated", exit_code, reason, message, public)
        return time.monotonic() - began

    def _fresh_workdir(self, home: Optional[str]) -> None:
        """A restarted container starts with empty /tmp and $HOME, as a new container would."""
        wd = fsb(self.workdir)
        if os.path.lexists(wd):
            shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(wd)
        if home is not None:
            os.makedirs(os.path.join(wd, b"home"))

    def _outcome(self, rc: int, fatal: Optional[bytes]) -> Tuple[int, str, str, Optional[str]]:
        """(exit code, reason, message, message for the job ad or None if the same)."""
        code = 128 - rc if rc < 0 else rc
        with self.lock:
            kill_reason, kill_message, kill_public = (
                self.kill_reason,
                self.kill_message,
                self.kill_public,
            )
        if kill_reason == OOM_KILLED:
            return EXIT_OOM, OOM_KILLED, kill_message, None
        if kill_reason is not None:
            return code if code else 1, kill_reason, kill_message, kill_public or None
        if kill_message:  # killed by a failed probe: ends with its own exit, as it would
            return code, COMPLETED if code == 0 else ERROR, kill_message, kill_public or None
        if rc == 255 and fatal is not None:
            # Apptainer itself failed before the container's process started.
            text = fatal.decode("utf-8", "replace")[len("FATAL:") :].strip()
            if "executable file not found" in text or (
                "no such file or directory" in text and text.startswith("stat ")
            ):
                return EXIT_NOT_FOUND, CANNOT_RUN, text, None
            return EXIT_CANNOT_RUN, CANNOT_RUN, text, None
        if code == 0:
            return 0, COMPLETED, "", None
        return code, ERROR, "", None

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

    def _ended(self, done: Optional[threading.Event] = None) -> bool:
        """Whether an instance's process has ended: the one whose end sets ``done`` (by
        default the current one). The container's own thread, which is not waiting for the
        process then (postStart), asks the process itself."""
        if threading.current_thread() is self.thread:
            with self.lock:
                proc = self.proc
            return proc is None or proc.poll() is not None
        return (self.instance_done if done is None else done).is_set()

    def stop_instance(self, grace: float, done: Optional[threading.Event] = None) -> None:
        """The kubelet's kill of one container instance (by default the current one):
        preStop hook, SIGTERM, and SIGKILL when ``grace`` is over (at least 2 s after the
        hook). A restart never makes it act on the next instance."""
        with self.lock:
            proc = self.proc
            done = self.instance_done if done is None else done
            if proc is None or done is not self.instance_done:
                return
        end = time.monotonic() + grace
        self.run_pre_stop(grace, done)
        if not self._ended(done):
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
        limit = time.monotonic() + max(end - time.monotonic(), MIN_KILL_GRACE)
        while not self._ended(done) and time.monotonic() < limit:
            time.sleep(0.05)
        if not self._ended(done):
            log("container %s: still running after the grace period, killing it" % self.name)
            kill_tree(proc.pid, signal.SIGKILL)

    # -- hooks and probes ------------------------------------------------------------------

    def exec_in_container(
        self,
        argv: List[str],
        end: float,
        timeout: Optional[float],
        out: Optional[CriLog],
        done: Optional[threading.Event] = None,
    ) -> Tuple[Optional[int], bytes, str]:
        """Runs ``argv`` in the container, as CRI exec does: in the running instance's own
        namespaces (its processes, IPC, mounts and root file system, so its /tmp, $HOME
        and volumes), with the environment and working directory its command started
        with, on the pod's network (``join_command``). Where the instance cannot be
        joined (no nsenter, a setuid Apptainer), a new ``apptainer exec`` of its image
        with its binds, environment, working directory and ``--workdir`` runs it instead:
        the same files, /tmp and $HOME, but processes and IPC of its own.

        ``timeout`` counts from the moment the command runs (Apptainer's start-up is not
        the command's time), everything ends at ``end`` or when the container (the
        instance whose end sets ``done``, by default the current one) ends. Returns
        (exit code, or None if it was stopped; its output's first bytes; error).
        """
        env_vars: Dict[bytes, bytes] = {}
        env: Optional[Dict[bytes, bytes]] = None
        joined = self._join(argv, end, done)
        if joined is not None:
            cmd, env = joined
        else:
            env_vars, home, _ = env_for_apptainer(self.spec.get("env") or [], self.pod.host_env)
            try:
                binds = self.pod.binds_for(self.spec)
            except (OSError, SpecError) as e:
                return None, b"", str(e)
            cmd = apptainer_command(
                self.pod.spec, self.spec, "exec", argv, binds, self.workdir, home, self.pod.no_eval
            )
        try:
            proc = self._spawn(cmd, env_vars, merge=True, env=env)
        except (OSError, ValueError) as e:
            return None, b"", "cannot start %s: %s" % (cmd[0], e)
        assert proc.stdout is not None
        pump = Pump(os.dup(proc.stdout.fileno()), b"stdout", out, True, OUTPUT_LIMIT)
        proc.stdout.close()
        pump.start()
        ran = False
        limit = end if timeout is None else min(end, time.monotonic() + EXEC_START_LIMIT)
        error = ""
        while proc.poll() is None:
            now = time.monotonic()
            if timeout is not None and not ran and payload_started(proc.pid):
                ran, limit = True, min(end, now + timeout)
            if now >= limit or self._ended(done):
                error = "timed out" if now >= limit else "the container ended"
                break
            time.sleep(0.02)
        kill_tree(proc.pid, signal.SIGKILL)
        proc.wait()
        pump.join(1.0)
        pump.stop.set()
        pump.join()
        if error:
            return None, pump.captured, error
        if joined is not None and proc.returncode != 0 and pump.captured.startswith(b"nsenter: "):
            # nsenter itself failed (the kernel refused to join): never a probe's failure.
            # This pod's execs use a new apptainer exec from now on.
            reason = pump.captured.decode("utf-8", "replace").strip()
            log("cannot join container %s, using apptainer exec: %s" % (self.name, reason))
            self.pod.nsenter = None
            return self.exec_in_container(argv, end, timeout, out, done)
        if proc.returncode == 255 and pump.fatal is not None:
            return None, pump.captured, pump.fatal.decode("utf-8", "replace")
        return proc.returncode, pump.captured, ""

    def _join(
        self, argv: List[str], end: float, done: Optional[threading.Event]
    ) -> Optional[Tuple[List[str], Dict[bytes, bytes]]]:
        """The command and environment that run ``argv`` inside the running instance, or
        None where it cannot be joined. Waits (until ``end``, at most Apptainer's start-up
        limit) for the instance's own command to start: a postStart hook may come first."""
        with self.lock:
            proc = self.proc
        if not self.pod.nsenter or proc is None:
            return None
        limit = min(end, time.monotonic() + EXEC_START_LIMIT)
        pid = payload_pid(proc.pid)
        while pid is None and time.monotonic() < limit and not self._ended(done):
            time.sleep(0.02)
            pid = payload_pid(proc.pid)
        options = None if pid is None else join_options(pid)
        env = None if pid is None else read_environ(pid)
        if pid is None or options is None or env is None:
            return None
        return join_command(self.pod.nsenter, pid, options, argv), env

    def _run_handler(
        self, h: Dict[str, Any], hook: str, end: float, done: Optional[threading.Event] = None
    ) -> Tuple[bool, str, str]:
        """Runs a lifecycle hook until ``end``; returns (ok, message, message for the job ad)
        in the kubelet's words."""
        where = 'for Container "%s" in Pod "%s"' % (self.name, pod_name(self.pod.spec))
        timeout_note = "did not return within the pod's grace period (%gs)" % self.pod.grace
        if h.get("argv") is not None:
            path = os.path.join(self.pod.log_dir, "%s.%s.log" % (self.name, hook.lower()))
            out = CriLog(fsb(path))
            try:
                rc, output, error = self.exec_in_container(h["argv"], end, None, out, done)
            finally:
                out.close()
            if rc == 0:
                return True, "", ""
            if error == "timed out":
                error = timeout_note
            elif rc is not None:
                error = "command terminated with non-zero exit code: exit status %d" % rc
            text = output.decode("utf-8", "replace")[:MESSAGE_OUTPUT]
            head = "Exec lifecycle hook (%s) %s failed" % (_go_list(h["argv"]), where)
            public = "Exec lifecycle hook %s failed - error: %s" % (where, error)
            return False, "%s - error: %s, message: %s" % (head, error, json.dumps(text)), public
        if h.get("http_get") is not None:
            action = h["http_get"]
            status, error, _url = http_get(action, max(0.0, end - time.monotonic()), HOOK_AGENT)
            if status is not None:
                return True, "", ""  # any answer: the kubelet does not look at the status
            msg = "HTTP lifecycle hook (%s) %s failed - error: %s" % (action["path"], where, error)
            return False, msg, msg
        # sleep: cut short by the end of the grace period or of the container.
        stop = min(end, time.monotonic() + float(h.get("sleep_seconds") or 0))
        while time.monotonic() < stop and not self._ended(done):
            time.sleep(min(0.1, max(0.0, stop - time.monotonic())))
        return True, "", ""

    def _post_start(self, hook: Dict[str, Any], proc: "subprocess.Popen[bytes]") -> bool:
        """Runs the postStart hook; a failure kills the container (preStop, SIGTERM, grace,
        SIGKILL) with the kubelet's reason. True when the hook succeeded."""
        log("container %s: postStart hook started" % self.name)
        bound = max(self.pod.grace, MIN_KILL_GRACE)
        ok, message, public = self._run_handler(hook, "postStart", time.monotonic() + bound)
        if ok or proc.poll() is not None:
            return ok and proc.poll() is None
        log("container %s: %s" % (self.name, message))
        with self.lock:
            self.kill_reason, self.kill_message, self.kill_public = (
                FAILED_POST_START,
                message,
                public,
            )
            self.restart_anyway = True
        self.stop_instance(self.pod.grace)
        return False

    def run_pre_stop(self, timeout: float, done: Optional[threading.Event] = None) -> None:
        """Runs the preStop hook once per instance (the one whose end sets ``done``, by
        default the current one), within ``timeout``; its failure is only logged (the
        kubelet goes on with the stop)."""
        hook = self.spec.get("pre_stop")
        with self.lock:
            done = self.instance_done if done is None else done
            if not hook or self.pre_stop_done or self.proc is None or timeout <= 0:
                return
            if done is not self.instance_done:
                return
            self.pre_stop_done = True
        log("container %s: preStop hook started" % self.name)
        ok, message, _public = self._run_handler(hook, "preStop", time.monotonic() + timeout, done)
        log("container %s: preStop hook %s" % (self.name, "done" if ok else message))

    def _watch_start(self, pid: int, done: threading.Event) -> List[float]:
        """When the container's own command starts (Apptainer's start-up, mounting the
        image, is not the container's): the kubelet counts initialDelaySeconds from the
        container's start. Filled in by a thread, only for a container with probes."""
        start: List[float] = []
        if not any(self.spec.get(key) for _kind, key in PROBE_KEYS):
            return start

        def watch() -> None:
            end = time.monotonic() + EXEC_START_LIMIT
            while not payload_started(pid) and time.monotonic() < end and not done.wait(0.02):
                pass
            start.append(time.monotonic())

        t = threading.Thread(target=watch, name="start-" + self.name)
        t.daemon = True
        t.start()
        return start

    def _start_probes(self, start: List[float], done: threading.Event) -> None:
        for kind, key in PROBE_KEYS:
            probe = self.spec.get(key)
            if probe:
                t = threading.Thread(
                    target=self._probe_loop,
                    args=(kind, probe, start, done),
                    name="%s-probe-%s" % (kind.lower(), self.name),
                )
                t.daemon = True
                t.start()

    def _probe_loop(
        self, kind: str, probe: Dict[str, Any], start: List[float], done: threading.Event
    ) -> None:
        """One probe of one container instance, as the kubelet's probe worker runs it."""
        counter = ProbeCounter(probe.get("success_threshold", 1), probe.get("failure_threshold", 3))
        period = float(probe.get("period_seconds") or 10)
        while not start and not done.wait(0.02):
            pass  # until the container's command has started
        if not start:
            return
        due = start[0] + float(probe.get("initial_delay_seconds") or 0)
        failing: Optional[bool] = False  # None: the probe could not run
        while not done.wait(max(0.0, due - time.monotonic())):
            due = next_tick(due, period, time.monotonic())
            if kind != READINESS and self.pod.stopping:
                return  # a pod being deleted is not killed for failing probes
            with self.lock:
                started = self.is_started
            if kind == STARTUP and started:
                return
            if kind != STARTUP and not started:
                continue  # liveness and readiness wait for the startup probe
            ok, public, message = self.probe_once(probe, done)
            if done.is_set():
                return
            if ok is None:  # the probe could not run: not counted, as the kubelet does
                if failing is not None:
                    log("container %s: %s probe errored: %s" % (self.name, kind.lower(), message))
                failing = None
                continue
            if not ok and failing is not True:
                log("container %s: %s probe failed: %s" % (self.name, kind.lower(), message))
            failing = not ok
            settled = counter.add(ok)
            if settled is None:
                continue
            if kind == READINESS:
                self._set_flags(ready=settled)
            elif kind == STARTUP and settled:
                self._set_flags(started=True)
            elif not settled:
                self._probe_kill(kind, probe, public, message, done)
                return

    def probe_once(
        self, probe: Dict[str, Any], done: Optional[threading.Event] = None
    ) -> Tuple[Optional[bool], str, str]:
        """Runs a probe once: (success, or None if it could not run; message for the job ad;
        message with the command's output)."""
        timeout = float(probe.get("timeout_seconds") or 1)
        if probe.get("http_get") is not None:
            ok, msg = http_probe(probe["http_get"], timeout)
            return ok, msg, msg
        if probe.get("tcp_socket") is not None:
            ok, msg = tcp_check(probe["tcp_socket"], timeout)
            return ok, msg, msg
        rc, output, error = self.exec_in_container(
            probe["argv"], time.monotonic() + EXEC_START_LIMIT + timeout, timeout, None, done
        )
        if rc == 0:
            return True, "", ""
        if error == "the container ended":
            return None, error, error
        if error == "timed out":
            public = "command timed out after %gs" % timeout
        elif rc is None:
            return None, error, error  # apptainer could not run it at all
        else:
            public = "command exited with code %d" % rc
        text = output.decode("utf-8", "replace").strip()[:MESSAGE_OUTPUT]
        return False, public, public + (": " + text if text else "")

    def _probe_kill(
        self,
        kind: str,
        probe: Dict[str, Any],
        public: str,
        message: str,
        done: threading.Event,
    ) -> None:
        """A startup or liveness probe failed ``failureThreshold`` times: kill the container
        within the probe's grace period (else the pod's); the restart policy decides."""
        restart = self.pod.restart_policy != "Never"
        note = "container %s failed %s probe%s" % (
            self.name,
            kind.lower(),
            ", will be restarted" if restart else "",
        )
        with self.lock:
            if self.instance_done is not done or self.proc is None:
                return  # that instance has ended already
            if self.kill_reason is not None or self.kill_message:
                return
            self.kill_message = "%s probe failed: %s; %s" % (kind, message, note)
            self.kill_public = "%s probe failed: %s; %s" % (kind, public, note)
            self.restart_anyway = True
        log("container %s: %s" % (self.name, self.kill_message))
        grace = probe.get("termination_grace_seconds") or self.pod.grace
        self.stop_instance(float(grace), done)


def _go_list(argv: List[str]) -> str:
    """A command as Go's %v prints a []string (the kubelet's hook messages)."""
    return "[%s]" % " ".join(argv)


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
        self.report_lock = threading.Lock()
        self.reporter = Reporter(spec.get("chirp") or "")
        self.volume_paths: Dict[str, str] = {}
        self.prologue_groups: List[int] = []
        self.pod_message = ""
        self.no_eval = False
        self.nsenter: Optional[str] = None  # joins a running container (exec probes, hooks)
        self.next_sweep = 0.0
        self.strays: Dict[int, Set[int]] = {}  # container pid -> its processes at the last sweep

    # -- reporting ---------------------------------------------------------------------

    def report(self, c: Container, encoded: str, version: int) -> None:
        """Sends a container's state; a state older than one already sent (encoded by a
        probe thread while the container thread moved on) is dropped."""
        with self.report_lock:
            if version <= c.reported_version:
                return
            c.reported_version = version
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
        self.nsenter = find_program("nsenter", self.host_env)
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
        # Each tick reads only the containers' own trees; a full /proc scan now and then
        # also finds processes that left their tree (double-forked daemons, should a
        # site's Apptainer options take the PID namespace away: --no-pid).
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
