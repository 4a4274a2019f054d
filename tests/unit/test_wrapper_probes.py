"""The job wrapper's probes, lifecycle hooks and restarts.

The pure parts (result counting, ticks, HTTP and TCP checks) run in this process. The rest
runs the wrapper with the Apptainer stand-in, whose "container" is a host process, so exec
probes and hooks are host commands too. Probe periods are the smallest Kubernetes allows
(1 s); every wait polls with a deadline, and the containers themselves wait for files the
test creates, so nothing depends on how fast this machine is.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _wrapper_harness import Harness, container, py, wait_for

from interlink_htcondor.core import classad_attrs, jobspec
from interlink_htcondor.jobside import wrapper as w


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def check(code: str) -> list[str]:
    """An exec probe/hook running Python code on the host (the stand-in's "container")."""
    return py(code)


def exists(path: Path) -> list[str]:
    return check(f"import os, sys; sys.exit(0 if os.path.exists({str(path)!r}) else 1)")


def probe(argv: list[str] | None = None, **kw: Any) -> jobspec.ProbeSpec:
    kw.setdefault("period_seconds", 1)
    return jobspec.ProbeSpec(argv=argv, **kw)


def chirped(h: Harness) -> list[classad_attrs.ReportedState]:
    """States sent for the first app container so far, in order."""
    out = []
    if h.chirp_file.exists():
        for line in h.chirp_file.read_text().splitlines():
            argv = json.loads(line)
            if argv[1] == "InterlinkStateC0":
                decoded = classad_attrs.decode_state(argv[2][1:-1])
                assert decoded is not None, argv
                out.append(decoded)
    return out


def until(what: str, cond: Callable[[], bool], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_until_stop(path: Path) -> str:
    """Python code: wait (at most 60 s) until ``path`` exists."""
    return (
        "import os, time\nend = time.time() + 60\n"
        f"while not os.path.exists({str(path)!r}) and time.time() < end: time.sleep(0.05)\n"
    )


# ------------------------------------------------------------------------- pure parts


def test_counter_applies_thresholds_like_the_kubelet() -> None:
    c = w.ProbeCounter(success_threshold=2, failure_threshold=3)
    assert [c.add(r) for r in (False, False)] == [None, None]
    assert c.add(False) is False  # third failure in a row: takes effect
    assert c.add(False) is False  # and stays in effect
    assert c.add(True) is None  # one success is not enough
    assert c.add(False) is None  # the failure streak starts again
    assert [c.add(True), c.add(True), c.add(True)] == [None, True, True]


def test_ticks_skip_those_a_slow_probe_missed() -> None:
    assert w.next_tick(100.0, 10.0, 100.5) == 110.0
    assert w.next_tick(100.0, 10.0, 110.0) == 120.0  # the tick at 110 is now: too late
    assert w.next_tick(100.0, 10.0, 135.0) == 140.0
    assert w.next_tick(100.0, 1.0, 100.2) == 101.0


class _Server(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []
    other_port = 0

    def do_GET(self) -> None:
        _Server.seen.append((self.path, dict(self.headers)))
        if self.path == "/slow":
            time.sleep(3)
        routes: dict[str, tuple[int, dict[str, str]]] = {
            "/ok": (200, {}),
            "/boom": (500, {}),
            "/moved": (302, {"Location": "/boom"}),
            "/away": (302, {"Location": f"http://localhost:{self.other_port}/x"}),
            "/loop": (302, {"Location": "/loop"}),
        }
        status, headers = routes.get(self.path, (404, {}))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    _Server.seen = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


def _get(port: int, path: str, **kw: Any) -> dict[str, Any]:
    return {"scheme": "http", "host": "127.0.0.1", "port": port, "path": path, **kw}


def test_http_probe_statuses_redirects_and_headers(server: int) -> None:
    assert w.http_probe(_get(server, "/ok"), 2) == (True, "")
    assert w.http_probe(_get(server, "/boom"), 2) == (
        False,
        "HTTP probe failed with statuscode: 500",
    )
    assert w.http_probe(_get(server, "/nope"), 2)[1].endswith("statuscode: 404")
    # A redirect to the same host is followed; to another host it is not, and counts.
    assert w.http_probe(_get(server, "/moved"), 2)[1].endswith("statuscode: 500")
    assert w.http_probe(_get(server, "/away"), 2) == (True, "")
    ok, msg = w.http_probe(_get(server, "/loop"), 5)
    assert not ok and "stopped after 10 redirects" in msg
    _Server.seen.clear()
    w.http_probe(_get(server, "/ok", headers=[["X-Token", "t"], ["Accept", "text/plain"]]), 2)
    path, headers = _Server.seen[0]
    assert path == "/ok" and headers["X-Token"] == "t"
    assert headers["User-Agent"] == "kube-probe/interlink-htcondor"
    assert headers["Accept"] == "text/plain" and headers["Host"] == f"127.0.0.1:{server}"


def test_http_probe_timeout_and_refused_connection(server: int) -> None:
    t0 = time.monotonic()
    ok, msg = w.http_probe(_get(server, "/slow"), 1)
    assert not ok and msg == f'Get "http://127.0.0.1:{server}/slow": context deadline exceeded'
    assert time.monotonic() - t0 < 2.5
    port = free_port()
    ok, msg = w.http_probe(_get(port, "/healthz"), 1)
    assert (ok, msg) == (
        False,
        f'Get "http://127.0.0.1:{port}/healthz": dial tcp 127.0.0.1:{port}: connect: '
        "connection refused",
    )


def test_http_probe_with_a_header_http_client_refuses_fails_cleanly(server: int) -> None:
    ok, msg = w.http_probe(_get(server, "/ok", headers=[["X-Bad", "a\r\nInjected: 1"]]), 2)
    assert not ok and msg.startswith(f'Get "http://127.0.0.1:{server}/ok": ')
    assert all("Injected" not in h for _, hs in _Server.seen for h in hs)


def test_tcp_check(server: int) -> None:
    assert w.tcp_check({"host": "127.0.0.1", "port": server}, 1) == (True, "")
    port = free_port()
    assert w.tcp_check({"host": "127.0.0.1", "port": port}, 1) == (
        False,
        f"dial tcp 127.0.0.1:{port}: connect: connection refused",
    )


@pytest.mark.parametrize(
    ("handler", "probe", "message"),
    [
        ({}, True, "exactly one action"),
        ({"argv": ["x"], "sleep_seconds": 1}, False, "exactly one action"),
        ({"sleep_seconds": 1}, True, "exactly one action"),  # no sleep probes
        ({"argv": []}, False, "non-empty list"),
        ({"tcp_socket": {"host": "h", "port": 0}}, True, "a host and a port"),
        ({"http_get": {"host": "h", "port": 1, "scheme": "ftp", "path": "/"}}, True, "a scheme"),
        ({"argv": ["x"], "period_seconds": 0}, True, "period_seconds must be an integer of at"),
        ({"argv": ["x"], "termination_grace_seconds": 0}, True, "termination_grace_seconds"),
    ],
)
def test_spec_handlers_are_checked(handler: dict[str, Any], probe: bool, message: str) -> None:
    with pytest.raises(w.SpecError, match=message):
        w.check_handler(handler, "container 'c': x", probe)


# ------------------------------------------------------------------------- probes


def test_exec_joins_a_container_only_in_namespaces_of_its_own() -> None:
    """An exec probe or hook joins the container's namespaces where they are the job
    user's own (Apptainer in user-namespace mode). The wrapper's own namespaces (a setuid
    Apptainer, or the test double) and a process that is gone give None: a new apptainer
    exec runs the command then."""
    assert w.join_options(os.getpid()) is None
    with subprocess.Popen(["sleep", "30"], env={"X": "a=b", "EMPTY": ""}) as p:
        try:
            # Popen can return before /proc shows the exec'd sleep, and its environment a
            # moment after its exe.
            until(
                "sleep to be exec'd",
                lambda: (
                    Path(f"/proc/{p.pid}/exe").resolve().name == "sleep"
                    and bool(w.read_environ(p.pid))
                ),
            )
            assert w.join_options(p.pid) is None
            assert w.read_environ(p.pid) == {b"X": b"a=b", b"EMPTY": b""}
            assert w.payload_pid(p.pid) == p.pid  # not one of Apptainer's own processes
        finally:
            p.kill()
    assert w.join_options(p.pid) is None and w.read_environ(p.pid) is None
    assert w.join_command("/usr/bin/nsenter", 42, ["-U", "-m", "-p"], ["cat", "/tmp/x"]) == [
        "/usr/bin/nsenter", "-t", "42", "-U", "-m", "-p", "-r", "-w",
        "--preserve-credentials", "--", "cat", "/tmp/x",
    ]  # fmt: skip
    sh = w.find_program("sh", {b"PATH": b"/nonexistent"})
    assert sh is not None and os.access(sh, os.X_OK)
    assert w.find_program("no-such-program-here", {}) is None


def test_startup_probe_gates_liveness_and_readiness(h: Harness, tmp_path: Path) -> None:
    started, calls, stop = tmp_path / "started", tmp_path / "calls", tmp_path / "stop"
    record = check(
        f"import time; open({str(calls)!r}, 'a').write('%f\\n' % time.time()); print('NOISE')"
    )
    code = (
        "import time, pathlib\n"
        f"time.sleep(1.5); pathlib.Path({str(started)!r}).write_text('%f' % time.time())\n"
        + wait_until_stop(stop)
    )
    spec = h.spec(
        [
            container(
                "web",
                py(code),
                startup_probe=probe(exists(started), failure_threshold=30),
                liveness_probe=probe(record),
                readiness_probe=probe(record),
            )
        ]
    )
    h.start(spec)
    until(
        "two liveness/readiness runs",
        lambda: calls.exists() and len(calls.read_text().split()) >= 4,
    )
    assert chirped(h)[-1].is_started and chirped(h)[-1].ready
    stop.touch()
    run = h.finish()
    assert run.returncode == 0, run.stderr
    started_at = float(started.read_text())
    assert all(float(t) >= started_at for t in calls.read_text().split())
    running = [s for s in chirped(h) if s.state == "running"]
    assert (running[0].is_started, running[0].ready) == (False, False)
    assert b"NOISE" not in run.text("web") and b"NOISE" not in run.text("web", "stderr")


def test_readiness_flips_live(h: Harness, tmp_path: Path) -> None:
    ready, flip, stop = tmp_path / "ready", tmp_path / "flip", tmp_path / "stop"
    code = (
        f"import os, pathlib, time\npathlib.Path({str(ready)!r}).touch()\n"
        + wait_until_stop(flip)
        + f"os.remove({str(ready)!r})\n"
        + wait_until_stop(stop)
    )
    spec = h.spec(
        [container("web", py(code), readiness_probe=probe(exists(ready), failure_threshold=1))]
    )
    h.start(spec)
    until("ready", lambda: any(s.ready for s in chirped(h)))
    flip.touch()
    until("not ready", lambda: (s := chirped(h)[-1]).state == "running" and not s.ready)
    assert chirped(h)[-1].is_started  # not ready, still started and running
    stop.touch()
    run = h.finish()
    assert run.returncode == 0 and run.state("web")["restart_count"] == 0


def test_liveness_failure_restarts_with_last_state_and_separate_logs(
    h: Harness, tmp_path: Path
) -> None:
    sick, counter = tmp_path / "sick", tmp_path / "count"
    code = (
        f"import pathlib, time\np = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\n"
        "print('instance', n, flush=True)\n"
        f"sick = pathlib.Path({str(sick)!r})\n"
        "if n == 1:\n    sick.touch()\n    time.sleep(60)\n"
        "sick.unlink()\n"
        "time.sleep(3)\n"  # past the grace period of the first instance's kill
    )
    liveness = check(
        "import os, sys; print('PROBE-OUTPUT')\n"
        f"sys.exit(1 if os.path.exists({str(sick)!r}) else 0)"
    )
    spec = h.spec(
        [container("web", py(code), liveness_probe=probe(liveness, failure_threshold=2))],
        restart_policy="OnFailure",
        termination_grace_seconds=1,
    )
    run = h.run(spec)
    assert run.returncode == 0, run.stderr
    st = run.state("web")
    assert (st["state"], st["reason"], st["restart_count"]) == ("terminated", "Completed", 1)
    last = st["last_state"]
    assert (last["exit_code"], last["reason"]) == (143, "Error")  # SIGTERM, as the kubelet's kill
    assert last["message"].startswith("Liveness probe failed: command exited with code 1")
    assert "PROBE-OUTPUT" in last["message"]  # the output, in status.json only
    assert last["message"].endswith("container web failed liveness probe, will be restarted")
    assert run.text("web") == b"instance 2\n"
    assert run.text("web.previous") == b"instance 1\n"
    assert b"PROBE-OUTPUT" not in (h.sandbox / "logs" / "web.log").read_bytes()
    states = [s for s in (chirped(h)) if s.restarts == 1]
    assert states and states[0].last == classad_attrs.LastState(
        143, "Error", last["started"], last["finished"]
    )
    assert all("PROBE-OUTPUT" not in s.message for s in chirped(h))
    assert "CrashLoopBackOff" not in [s.reason for s in chirped(h)]  # the first restart: at once


def test_liveness_failure_with_never_uses_the_probe_grace_period(
    h: Harness, tmp_path: Path
) -> None:
    stubborn = py(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    spec = h.spec(
        [
            container(
                "web",
                stubborn,
                liveness_probe=probe(
                    check("import sys; sys.exit(3)"),
                    failure_threshold=1,
                    termination_grace_seconds=1,
                ),
            )
        ],
        restart_policy="Never",
        termination_grace_seconds=60,  # the probe's own grace (1 s) applies
    )
    run = h.run(spec, timeout=40)
    st = run.state("web")
    assert (st["exit_code"], st["reason"], st["restart_count"]) == (137, "Error", 0)
    assert st["message"] == (
        "Liveness probe failed: command exited with code 3; container web failed liveness probe"
    )
    assert run.returncode == 137
    assert run.elapsed < 30


def test_exec_probe_timeout(h: Harness, tmp_path: Path) -> None:
    spec = h.spec(
        [
            container(
                "web",
                py("import time; time.sleep(60)"),
                startup_probe=probe(
                    check("import time; time.sleep(30)"), timeout_seconds=1, failure_threshold=1
                ),
            )
        ],
        termination_grace_seconds=2,
    )
    run = h.run(spec, timeout=40)
    st = run.state("web")
    assert st["message"].startswith("Startup probe failed: command timed out after 1s")
    assert st["reason"] == "Error" and run.elapsed < 30


def test_http_probes_reach_the_container(h: Harness, tmp_path: Path) -> None:
    port = free_port()
    log, stop = tmp_path / "requests", tmp_path / "stop"
    server = (
        "import http.server, threading, time\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        line = self.path + ' ' + self.headers['X-Probe'] + '\\n'\n"
        f"        open({str(log)!r}, 'a').write(line)\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "time.sleep(1)\n"  # not listening at first: the startup probe fails, then passes
        f"s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n"
        "threading.Thread(target=s.serve_forever, daemon=True).start()\n" + wait_until_stop(stop)
    )
    action = jobspec.HttpGetSpec(port=port, path="/ready?x=1", headers=[("X-Probe", "r")])
    spec = h.spec(
        [
            container(
                "web",
                py(server),
                startup_probe=probe(
                    tcp_socket=jobspec.TcpSocketSpec(port=port), failure_threshold=30
                ),
                readiness_probe=probe(http_get=action),
            )
        ]
    )
    h.start(spec)
    until("ready", lambda: any(s.ready for s in chirped(h)))
    stop.touch()
    run = h.finish()
    assert run.returncode == 0, run.stderr
    assert "/ready?x=1 r" in log.read_text().splitlines()


# ------------------------------------------------------------------------- hooks


def test_post_start_runs_before_the_container_counts_as_running(h: Harness, tmp_path: Path) -> None:
    began, release, marker = tmp_path / "began", tmp_path / "release", tmp_path / "marker"
    hook = check(
        f"import pathlib; pathlib.Path({str(began)!r}).touch(); print('HOOK-OUTPUT')\n"
        + wait_until_stop(release)
        + f"pathlib.Path({str(marker)!r}).write_text('from postStart')"
    )
    # The container ends only once reported running, so that its end cannot overtake the
    # hook's return (the wrapper watches the hook's process every few milliseconds).
    status_file = h.sandbox / "status.json"
    code = (
        wait_until_stop(marker)
        + f"print(open({str(marker)!r}).read(), flush=True)\n"
        + "import json\n"
        + "while time.time() < end:\n"
        + f"    doc = json.load(open({str(status_file)!r}))\n"
        + "    if doc['containers'][0]['state'] == 'running': break\n"
        + "    time.sleep(0.05)\n"
    )
    spec = h.spec([container("web", py(code), post_start=jobspec.HandlerSpec(argv=hook))])
    h.start(spec)
    wait_for(began)
    status = json.loads((h.sandbox / "status.json").read_text())["containers"][0]
    assert (status["state"], status["reason"]) == ("waiting", "ContainerCreating")
    assert all(s.state != "running" for s in chirped(h))
    release.touch()
    run = h.finish()
    assert run.returncode == 0, run.stderr
    assert run.text("web") == b"from postStart\n"
    # Every transition is in the wrapper's log (chirps send only the newest pending state).
    prefix = " interlink-wrapper: container web: "
    words = [ln.split(prefix, 1)[1].split()[0] for ln in run.stderr.splitlines() if prefix in ln]
    transitions = [x for x in words if x in ("waiting", "running", "terminated")]
    assert transitions[:3] == ["waiting", "running", "terminated"], run.stderr
    assert b"HOOK-OUTPUT" in (h.sandbox / "logs" / "web.poststart.log").read_bytes()
    assert b"HOOK-OUTPUT" not in (h.sandbox / "logs" / "web.log").read_bytes()


def test_failed_post_start_kills_with_the_kubelet_reason(h: Harness, tmp_path: Path) -> None:
    hooks, runs = tmp_path / "hooks", tmp_path / "runs"
    count = (
        "p = pathlib.Path({!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\n"
    )
    # The hook fails the first time only: under OnFailure the container then runs again.
    hook = check(
        "import pathlib, sys\n" + count.format(str(hooks)) + "print('HOOK-SAYS', n)\n"
        "sys.exit(3 if n == 1 else 0)"
    )
    code = (
        "import pathlib, time\n"
        + count.format(str(runs))
        + "if n == 1: time.sleep(60)\nprint('ran')"
    )
    spec = h.spec(
        [container("web", py(code), post_start=jobspec.HandlerSpec(argv=hook))],
        restart_policy="OnFailure",
    )
    run = h.run(spec)
    assert run.returncode == 0, run.stderr
    st = run.state("web")
    assert (st["reason"], st["restart_count"]) == ("Completed", 1)
    last = st["last_state"]
    assert (last["reason"], last["exit_code"]) == ("FailedPostStartHook", 143)
    assert last["message"].startswith(f"Exec lifecycle hook ([{sys.executable} -c ")
    assert (
        'for Container "web" in Pod "pod_ns(uid-1)" failed - error: command terminated '
        in (last["message"])
    )
    assert 'message: "HOOK-SAYS 1\\n"' in last["message"]
    assert all("HOOK-SAYS" not in s.message for s in chirped(h))
    assert any(s.last and s.last.reason == "FailedPostStartHook" for s in chirped(h))


def test_failed_post_start_with_never_terminates(h: Harness) -> None:
    spec = h.spec(
        [
            container(
                "web",
                py("import time; time.sleep(60)"),
                post_start=jobspec.HandlerSpec(argv=check("import sys; sys.exit(1)")),
            )
        ],
        restart_policy="Never",
        termination_grace_seconds=3,
    )
    run = h.run(spec, timeout=40)
    st = run.state("web")
    assert (st["state"], st["reason"], st["exit_code"]) == (
        "terminated",
        "FailedPostStartHook",
        143,
    )
    assert "Exec lifecycle hook" in st["message"] and run.returncode == 143
    reasons = [s.reason for s in chirped(h)]
    assert reasons[-1] == "FailedPostStartHook" and "CrashLoopBackOff" not in reasons


def test_pre_stop_http_and_sleep_hooks_on_sigterm(h: Harness, tmp_path: Path) -> None:
    port = free_port()
    events, ready = tmp_path / "events", tmp_path / "ready"
    server = (
        "import http.server, pathlib, signal, sys, threading, time\n"
        "def note(text):\n"
        f"    open({str(events)!r}, 'a').write('%s %f\\n' % (text, time.time()))\n"
        "signal.signal(signal.SIGTERM, lambda *_: (note('TERM'), sys.exit(0)))\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        note(self.path + '|' + self.headers['User-Agent'])\n"
        "        self.send_response(500); self.end_headers()\n"  # no matter: any answer is fine
        "    def log_message(self, *a): pass\n"
        f"s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n"
        "threading.Thread(target=s.serve_forever, daemon=True).start()\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "while True: time.sleep(0.1)\n"
    )
    sleeper = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(events)!r}, 'a').write("
        "'SLEEPER-TERM %f\\n' % time.time()), sys.exit(0)))\n"
        "while True: time.sleep(0.1)\n"
    )
    action = jobspec.HttpGetSpec(port=port, path="/shutdown")
    spec = h.spec(
        [
            container("web", py(server), pre_stop=jobspec.HandlerSpec(http_get=action)),
            container("sleeper", py(sleeper), pre_stop=jobspec.HandlerSpec(sleep_seconds=1)),
        ],
        termination_grace_seconds=10,
    )
    proc = h.start(spec)
    wait_for(ready)
    until("both running", lambda: all(c.get("state") == "running" for c in _containers(h)))
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    run = h.finish()
    assert run.returncode == 0, run.stderr
    lines = [line.rsplit(" ", 1) for line in events.read_text().splitlines()]
    names = [n for n, _ in lines]
    assert names.index("/shutdown|kube-lifecycle/interlink-htcondor") < names.index("TERM")
    sleeper_term = float(dict(lines)["SLEEPER-TERM"])
    assert sleeper_term - sent >= 0.9  # the sleep hook ran before the SIGTERM


def _containers(h: Harness) -> list[dict[str, Any]]:
    try:
        data: list[dict[str, Any]] = json.loads((h.sandbox / "status.json").read_text())[
            "containers"
        ]
    except (OSError, ValueError):
        return []
    return data


def test_first_restart_is_immediate_then_back_off(h: Harness, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    code = (
        f"import pathlib; p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n))\n"
        "raise SystemExit(0 if n == 2 else 1)\n"
    )
    spec = h.spec([container("flaky", py(code))], restart_policy="OnFailure")
    # A back-off of 60 s would show: the kubelet restarts a crashed container at once the
    # first time, and backs off only from the second crash on.
    run = h.run(spec, env={"INTERLINK_WRAPPER_BACKOFF_SECONDS": "60"}, timeout=50)
    assert run.returncode == 0, run.stderr
    assert run.state("flaky")["restart_count"] == 1
    assert "CrashLoopBackOff" not in [s.reason for s in chirped(h)]


def test_initial_delay_counts_from_the_command_not_apptainer(h: Harness, tmp_path: Path) -> None:
    """Apptainer may take a while to mount an image: the kubelet counts initialDelaySeconds
    from the container's start, so a probe must not fail for Apptainer's start-up time."""
    up, calls, stop = tmp_path / "up", tmp_path / "calls", tmp_path / "stop"
    code = f"# slow to start\nimport pathlib\npathlib.Path({str(up)!r}).touch()\n"
    liveness = check(
        f"import os, sys; open({str(calls)!r}, 'a').write('x\\n')\n"
        f"sys.exit(0 if os.path.exists({str(up)!r}) else 1)"
    )
    spec = h.spec(
        [
            container(
                "web",
                py(code + wait_until_stop(stop)),
                liveness_probe=probe(liveness, initial_delay_seconds=1, failure_threshold=1),
            )
        ]
    )
    # The container's command starts 2.5 s after its apptainer process (the probes' at once).
    h.start(spec, env={"APPTAINER_DOUBLE_SLOW_START": "2.5:# slow to start"})
    until("two liveness probes", lambda: calls.exists() and len(calls.read_text().split()) >= 2)
    stop.touch()
    run = h.finish()
    assert run.returncode == 0, run.stderr
    st = run.state("web")
    assert (st["reason"], st["restart_count"]) == ("Completed", 0), st
    assert "liveness probe failed" not in run.stderr
