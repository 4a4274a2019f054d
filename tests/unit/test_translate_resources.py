"""Resources: Kubernetes quantities and the pod-level rule -> HTCondor requests."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from _translate_support import container, pod, request, settings, spec_of
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as kubernetes_parse_quantity

from interlink_htcondor.core.translate import TranslationError, translate
from interlink_htcondor.core.translate.resources import parse, parse_quantity
from interlink_htcondor.settings import ResourceSettings


def res(
    requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"resources": {"requests": requests, "limits": limits}}


def submit_for(
    *containers: dict[str, Any], init: list[dict[str, Any]] | None = None, **cfg: Any
) -> dict[str, str]:
    return translate(request(pod(*containers, init=init)), settings(**cfg)).submit


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("1.5Gi", Decimal(1610612736)),
        ("3000", Decimal(3000)),
        ("1e3", Decimal(1000)),
        ("128974848", Decimal(128974848)),
        ("129M", Decimal(129000000)),
        ("123Mi", Decimal(128974848)),
        ("0", Decimal(0)),
        (".5", Decimal("0.5")),
    ],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse(text, "x") == value


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("abc", "not a Kubernetes quantity"),
        ("1 Gi", "not a Kubernetes quantity"),
        (" 1", "not a Kubernetes quantity"),
        ("inf", "not a Kubernetes quantity"),
        ("NaN", "not a Kubernetes quantity"),
        ("1GB", "not a Kubernetes quantity"),
        ("", "not a Kubernetes quantity"),
        ("-1", "negative"),
        ("1e400", "absurdly large"),
        ("9Ei", "absurdly large"),
    ],
)
def test_bad_quantities(text: str, why: str) -> None:
    with pytest.raises(TranslationError, match=why):
        parse(text, "container 'x': resources.requests[cpu]")


def test_error_names_container_and_field() -> None:
    with pytest.raises(TranslationError) as e:
        submit_for(container("worker", **res({"memory": "lots"})))
    assert "container 'worker': resources.requests[memory]: 'lots'" in str(e.value)
    with pytest.raises(TranslationError) as e:
        submit_for(container(), init=[container("setup", **res(limits={"cpu": "-2"}))])
    assert "init container 'setup': resources.limits[cpu]" in str(e.value)


def test_request_above_limit_is_refused() -> None:
    with pytest.raises(TranslationError, match="request 2Gi for memory exceeds its limit 1Gi"):
        submit_for(container(**res({"memory": "2Gi"}, {"memory": "1Gi"})))


def test_cpu_rounds_up_and_memory_is_mib() -> None:
    s = submit_for(container(**res({"cpu": "500m", "memory": "1.5Gi"})))
    assert s["request_cpus"] == "1"
    assert s["request_memory"] == "1536"


def test_memory_in_bytes_and_decimal_units() -> None:
    # "3000" is 3000 bytes: one MiB once rounded up, never "3000 MB".
    assert submit_for(container(**res({"memory": "3000"})))["request_memory"] == "1"
    # 1G = 10^9 bytes = 953.67 MiB -> 954
    assert submit_for(container(**res({"memory": "1G"})))["request_memory"] == "954"


def test_limit_alone_is_the_request_and_is_enforced() -> None:
    plan = translate(
        request(pod(container(**res(limits={"cpu": "2", "memory": "1Gi"})))), settings()
    )
    assert plan.submit["request_cpus"] == "2"
    assert plan.submit["request_memory"] == "1024"
    assert spec_of(plan).containers[0].memory_limit_bytes == 1024**3


def test_request_is_used_and_limit_kept_for_the_wrapper() -> None:
    plan = translate(
        request(pod(container(**res({"memory": "256Mi"}, {"memory": "1Gi"})))), settings()
    )
    assert plan.submit["request_memory"] == "256"
    assert spec_of(plan).containers[0].memory_limit_bytes == 1024**3


def test_no_limit_no_enforcement() -> None:
    plan = translate(request(pod(container(**res({"memory": "256Mi"})))), settings())
    assert spec_of(plan).containers[0].memory_limit_bytes is None


def test_pod_effective_is_max_of_app_sum_and_init_max() -> None:
    apps = [
        container("a", **res({"cpu": "1500m", "memory": "1Gi"})),
        container("b", **res({"cpu": "1", "memory": "512Mi"})),
    ]
    small_init = [container("i1", **res({"cpu": "2", "memory": "256Mi"}))]
    s = submit_for(*apps, init=small_init)
    assert (s["request_cpus"], s["request_memory"]) == ("3", "1536")
    big_init = [container("i2", **res({"cpu": "4", "memory": "8Gi"})), *small_init]
    s = submit_for(*apps, init=big_init)
    assert (s["request_cpus"], s["request_memory"]) == ("4", "8192")


def test_admin_defaults_when_nothing_is_set() -> None:
    s = submit_for(
        container(),
        resources={"default_cpus": 2, "default_memory_mib": 3000, "default_disk_mib": 5},
    )
    assert (s["request_cpus"], s["request_memory"], s["request_disk"]) == ("2", "3000", "5120")
    assert "request_gpus" not in s


def test_defaults_apply_per_resource() -> None:
    s = submit_for(container(**res({"cpu": "3"})), resources={"default_memory_mib": 777})
    assert (s["request_cpus"], s["request_memory"]) == ("3", "777")


def test_request_disk_is_kib_exactly() -> None:
    assert submit_for(container(**res({"ephemeral-storage": "10Gi"})))["request_disk"] == str(
        10 * 1024 * 1024
    )
    # 1000 bytes -> 1 KiB; 1025 bytes -> 2 KiB (rounded up, never truncated)
    assert submit_for(container(**res({"ephemeral-storage": "1000"})))["request_disk"] == "1"
    assert submit_for(container(**res({"ephemeral-storage": "1025"})))["request_disk"] == "2"


@pytest.mark.parametrize("vendor", ["nvidia.com/gpu", "amd.com/gpu"])
def test_gpus(vendor: str) -> None:
    plan = translate(
        request(pod(container(**res(limits={vendor: "2"})), container("b"))), settings()
    )
    assert plan.submit["request_gpus"] == "2"
    flag = {"nvidia.com/gpu": "--nv", "amd.com/gpu": "--rocm"}[vendor]
    spec = spec_of(plan)
    assert flag in spec.containers[0].apptainer_args
    assert flag not in spec.containers[1].apptainer_args


def test_gpu_errors() -> None:
    with pytest.raises(TranslationError, match="whole number"):
        submit_for(container(**res(limits={"nvidia.com/gpu": "500m"})))
    with pytest.raises(TranslationError, match="must be equal"):
        submit_for(container(**res({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"})))
    with pytest.raises(TranslationError, match="two vendors"):
        submit_for(container(**res(limits={"nvidia.com/gpu": "1", "amd.com/gpu": "1"})))
    with pytest.raises(TranslationError, match="several vendors"):
        submit_for(
            container("a", **res(limits={"nvidia.com/gpu": "1"})),
            container("b", **res(limits={"amd.com/gpu": "1"})),
        )


@pytest.mark.parametrize(
    ("r", "match"),
    [
        ({"cpu": "65"}, "65 CPUs; this site accepts at most 64"),
        ({"memory": "513Gi"}, "525312 MiB of memory; this site accepts at most 524288 MiB"),
        ({"ephemeral-storage": "11Ti"}, "ephemeral storage"),
        ({"nvidia.com/gpu": "9"}, "9 GPUs; this site accepts at most 8"),
    ],
)
def test_site_maxima(r: dict[str, str], match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        submit_for(container(**res(r)))


def test_maxima_are_configurable() -> None:
    with pytest.raises(TranslationError, match="at most 2"):
        submit_for(container(**res({"cpu": "3"})), resources={"max_cpus": 2})
    assert ResourceSettings().max_cpus == 64


def test_unknown_extended_resources_are_ignored() -> None:
    s = submit_for(container(**res({"example.com/widget": "3", "hugepages-2Mi": "1Gi"})))
    assert "request_gpus" not in s


QUANTITY = r"[+-]?(\d{1,12}(\.\d{0,6})?|\.\d{1,6})([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d{1,2})?"


# No deadline: the machine is shared, and each example is microseconds of arithmetic.
@hypothesis_settings(max_examples=300, deadline=None)
@given(st.from_regex(QUANTITY, fullmatch=True))
def test_quantities_parse_as_the_kubernetes_client_does(text: str) -> None:
    # The plugin's own parser, against the Kubernetes client's (the reference; dev only).
    reference: Callable[[str], Decimal] = kubernetes_parse_quantity
    assert parse_quantity(text) == reference(text)
