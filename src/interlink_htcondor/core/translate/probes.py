"""Probes and lifecycle hooks of one container -> ``ProbeSpec`` / ``HandlerSpec``.

The checks are the API server's (one handler, non-negative timings, ``successThreshold``
1 for liveness and startup probes, a sleep no longer than the grace period) plus what the
job wrapper needs to run the handler without surprises: ports that resolve (a named port
must be one of the container's ``ports``), a host and path that form a request line, header
names that are HTTP tokens, and the site's bounds (``limits.*``, through ``limits.py`` as
every other bound of a pod): timings at most ``max_probe_seconds``, a probe's grace period
at most ``max_grace_seconds``, exec commands charged to the container's budget. Unset
timings get the API server's defaults, as interLink only sends pods the API server has
already defaulted, but ``render`` reads raw manifests.

An exec probe's command expands ``$(VAR)`` as the kubelet expands it: against the
container's ``env`` values as written (a ``valueFrom`` entry expands to an empty string).
Hook commands are not expanded, as the kubelet does not expand them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from interlink_htcondor.core.jobspec import HandlerSpec, HttpGetSpec, ProbeSpec, TcpSocketSpec
from interlink_htcondor.core.models import (
    Container,
    HTTPGetAction,
    LifecycleHandler,
    PortRef,
    Probe,
    TCPSocketAction,
)
from interlink_htcondor.core.translate.envvars import check_value, expand
from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.limits import ContainerBudget, check_count, check_seconds

STARTUP, LIVENESS, READINESS = "startupProbe", "livenessProbe", "readinessProbe"
POST_START, PRE_STOP = "postStart", "preStop"

# The API server's defaults for unset (or 0) probe timings.
DEFAULT_PERIOD, DEFAULT_TIMEOUT, DEFAULT_SUCCESS, DEFAULT_FAILURE = 10, 1, 1, 3
DEFAULT_GRACE = 30  # the pod's terminationGracePeriodSeconds when unset
MAX_THRESHOLD = 10_000
MAX_HEADERS = 32
MAX_HEADER_BYTES = 4096  # one header's name and value
MAX_PATH = 2048

_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name
_HOST = re.compile(r"^[A-Za-z0-9._:%-]{1,253}$")  # a host name or an IPv4/IPv6 address


class Probes(NamedTuple):
    startup: ProbeSpec | None
    liveness: ProbeSpec | None
    readiness: ProbeSpec | None


class Hooks(NamedTuple):
    post_start: HandlerSpec | None
    pre_stop: HandlerSpec | None


def build_probes(c: Container, where: str, budget: ContainerBudget) -> Probes:
    """The container's startup, liveness and readiness probes; their exec commands are
    charged to the container's ``budget``."""
    env = {e.name: e.value or "" for e in c.env}  # kubelet's EnvVarsToMap
    return Probes(
        _maybe_probe(c, c.startup_probe, STARTUP, where, env, budget),
        _maybe_probe(c, c.liveness_probe, LIVENESS, where, env, budget),
        _maybe_probe(c, c.readiness_probe, READINESS, where, env, budget),
    )


def _maybe_probe(
    c: Container,
    p: Probe | None,
    kind: str,
    where: str,
    env: dict[str, str],
    budget: ContainerBudget,
) -> ProbeSpec | None:
    return None if p is None else _probe(c, p, kind, f"{where}: {kind}", env, budget)


def build_hooks(c: Container, where: str, grace: int | None, budget: ContainerBudget) -> Hooks:
    """The container's postStart and preStop hooks; ``grace`` is the pod's
    terminationGracePeriodSeconds (already within ``limits.max_grace_seconds``)."""
    grace = DEFAULT_GRACE if grace is None else grace
    if c.lifecycle is None:
        return Hooks(None, None)
    return Hooks(
        _hook(c, c.lifecycle.post_start, f"{where}: lifecycle.{POST_START}", grace, budget),
        _hook(c, c.lifecycle.pre_stop, f"{where}: lifecycle.{PRE_STOP}", grace, budget),
    )


def refuse_on_init_container(c: Container, where: str) -> None:
    """Init containers may have neither probes nor hooks (the API server's rule)."""
    for name, value in (
        ("lifecycle", c.lifecycle),
        (STARTUP, c.startup_probe),
        (LIVENESS, c.liveness_probe),
        (READINESS, c.readiness_probe),
    ):
        if value is not None:
            raise TranslationError(f"{where}: {name} may not be set for init containers")


def _probe(
    c: Container, p: Probe, kind: str, where: str, env: dict[str, str], budget: ContainerBudget
) -> ProbeSpec:
    _one_handler(
        where,
        "exec, httpGet, tcpSocket or grpc",
        exec=p.exec,
        httpGet=p.http_get,
        tcpSocket=p.tcp_socket,
        grpc=p.grpc,
    )
    if p.grpc is not None:
        raise TranslationError(
            f"{where}: grpc probes are not supported (the job wrapper has no gRPC client); "
            "use an exec probe running a gRPC health check client from the image, or an "
            "httpGet or tcpSocket probe"
        )
    limits = budget.limits
    seconds = limits.max_probe_seconds, "limits.max_probe_seconds"
    initial = _timing(p.initial_delay_seconds, "initialDelaySeconds", 0, 0, where, *seconds)
    period = _timing(p.period_seconds, "periodSeconds", DEFAULT_PERIOD, 1, where, *seconds)
    timeout = _timing(p.timeout_seconds, "timeoutSeconds", DEFAULT_TIMEOUT, 1, where, *seconds)
    success = _timing(
        p.success_threshold, "successThreshold", DEFAULT_SUCCESS, 1, where, MAX_THRESHOLD
    )
    failure = _timing(
        p.failure_threshold, "failureThreshold", DEFAULT_FAILURE, 1, where, MAX_THRESHOLD
    )
    if kind != READINESS and success != 1:
        raise TranslationError(f"{where}: successThreshold must be 1, not {success}")
    grace = p.termination_grace_period_seconds
    if grace is not None:
        if kind == READINESS:
            raise TranslationError(
                f"{where}: terminationGracePeriodSeconds must not be set for readiness probes"
            )
        if grace < 1:
            raise TranslationError(f"{where}: terminationGracePeriodSeconds must be positive")
        check_seconds(
            grace,
            f"{where}: terminationGracePeriodSeconds",
            limits.max_grace_seconds,
            "limits.max_grace_seconds",
        )
    return ProbeSpec(
        argv=None if p.exec is None else _command(p.exec.command, where, env, budget),
        http_get=None if p.http_get is None else _http_get(c, p.http_get, where),
        tcp_socket=None if p.tcp_socket is None else _tcp_socket(c, p.tcp_socket, where),
        initial_delay_seconds=initial,
        period_seconds=period,
        timeout_seconds=timeout,
        success_threshold=success,
        failure_threshold=failure,
        termination_grace_seconds=grace,
    )


def _one_handler(where: str, allowed: str, **handlers: object) -> None:
    given = [name for name, value in handlers.items() if value is not None]
    if len(given) != 1:
        raise TranslationError(
            f"{where}: needs exactly one of {allowed}"
            + (f" (got {', '.join(given)})" if given else "")
        )


def _timing(
    raw: int | None, name: str, default: int, low: int, where: str, high: int, setting: str = ""
) -> int:
    """The value to use: unset and 0 mean the default, as the API server's defaulting makes
    them (``initialDelaySeconds`` defaults to 0 itself). Seconds past the site's limit are
    refused by ``check_seconds`` (``setting`` names the limit), never clamped."""
    if raw is None or raw == 0:
        return default
    if raw < low:
        raise TranslationError(
            f"{where}: {name} {raw} must be at least {low} (unset or 0: {default})"
        )
    if setting:
        return check_seconds(raw, f"{where}: {name}", high, setting)
    if raw > high:
        raise TranslationError(f"{where}: {name} {raw} must be at most {high}")
    return raw


def _hook(
    c: Container, h: LifecycleHandler | None, where: str, grace: int, budget: ContainerBudget
) -> HandlerSpec | None:
    if h is None:
        return None
    _one_handler(
        where,
        "exec, httpGet or sleep",
        exec=h.exec,
        httpGet=h.http_get,
        tcpSocket=h.tcp_socket,
        sleep=h.sleep,
    )
    if h.tcp_socket is not None:
        raise TranslationError(
            f"{where}: tcpSocket is not a lifecycle handler (Kubernetes keeps the field for "
            "compatibility and fails it at run time); use exec, httpGet or sleep"
        )
    if h.exec is not None:
        return HandlerSpec(argv=_command(h.exec.command, where, None, budget))
    if h.http_get is not None:
        return HandlerSpec(http_get=_http_get(c, h.http_get, where))
    assert h.sleep is not None
    if not 0 <= h.sleep.seconds <= grace:
        raise TranslationError(
            f"{where}: sleep.seconds {h.sleep.seconds} must be non-negative and at most the "
            f"pod's terminationGracePeriodSeconds ({grace})"
        )
    return HandlerSpec(sleep_seconds=h.sleep.seconds)


def _command(
    command: list[str], where: str, env: dict[str, str] | None, budget: ContainerBudget
) -> list[str]:
    """An exec handler's argv, ``$(VAR)`` expanded against ``env`` (probes) or not (hooks),
    each item bounded and charged to the container's budget as its own argv is."""
    if not command:
        raise TranslationError(f"{where}: exec needs a command")
    limits = budget.limits
    check_count(command, limits.max_args, f"{where}: exec.command", "limits.max_args")
    out = []
    for i, arg in enumerate(command):
        w = f"{where}: exec.command[{i}]"
        value = arg if env is None else expand(arg, env, limits.max_value_bytes, w)
        budget.charge(check_value(value, w, limits.max_value_bytes) + 1, w)
        out.append(value)
    return out


def _port(c: Container, port: PortRef, where: str) -> int:
    """A port number, or the number of the container port of that name (the kubelet also
    reads a string of digits as a number)."""
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise TranslationError(f"{where}: port {port} must be between 1 and 65535")
        return port
    if not _PORT_NAME.fullmatch(port) or not any(ch.isalpha() for ch in port):
        raise TranslationError(f"{where}: port {port!r} is neither a number nor a port name")
    for p in c.ports:
        if p.name == port:
            if not 1 <= p.container_port <= 65535:
                raise TranslationError(f"{where}: port {port!r} has no valid containerPort")
            return p.container_port
    names = ", ".join(repr(p.name) for p in c.ports if p.name) or "none"
    raise TranslationError(
        f"{where}: port {port!r} is not the name of one of the container's ports ({names})"
    )


def _host(host: str, where: str) -> str:
    # The pod's containers share the execute point's network: its loopback is where a
    # server of the pod listening on all interfaces answers (the kubelet uses the pod IP).
    if not host:
        return "127.0.0.1"
    if not _HOST.fullmatch(host):
        raise TranslationError(f"{where}: host {host!r} is not a host name or IP address")
    return host


def _http_get(c: Container, a: HTTPGetAction, where: str) -> HttpGetSpec:
    if a.scheme not in ("HTTP", "HTTPS"):
        raise TranslationError(f"{where}: scheme {a.scheme!r} must be HTTP or HTTPS")
    path = a.path or "/"
    if not path.startswith("/"):
        path = "/" + path  # as Go's URL.String() writes it
    if len(path) > MAX_PATH or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in path):
        raise TranslationError(
            f"{where}: path must be at most {MAX_PATH} characters without blanks or "
            "control characters (percent-encode them)"
        )
    if len(a.http_headers) > MAX_HEADERS:
        raise TranslationError(f"{where}: at most {MAX_HEADERS} httpHeaders are supported")
    headers = []
    for h in a.http_headers:
        if not _TOKEN.fullmatch(h.name):
            raise TranslationError(f"{where}: httpHeaders name {h.name!r} is not an HTTP token")
        if any(ch in h.value for ch in "\r\n\x00") or len(h.name) + len(h.value) > MAX_HEADER_BYTES:
            raise TranslationError(
                f"{where}: httpHeaders {h.name!r} value must be one line of at most "
                f"{MAX_HEADER_BYTES} characters"
            )
        headers.append((h.name, h.value))
    return HttpGetSpec(
        scheme="https" if a.scheme == "HTTPS" else "http",
        host=_host(a.host, where),
        port=_port(c, a.port, where),
        path=path,
        headers=headers,
    )


def _tcp_socket(c: Container, a: TCPSocketAction, where: str) -> TcpSocketSpec:
    return TcpSocketSpec(host=_host(a.host, where), port=_port(c, a.port, where))
