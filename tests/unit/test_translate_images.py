"""Image references -> what execute points run."""

from __future__ import annotations

import pytest
from _translate_support import container, pod, request, settings, spec_of

from interlink_htcondor.core.translate import TranslationError, translate
from interlink_htcondor.core.translate.images import resolve, split_reference
from interlink_htcondor.settings import ImageRule

RULES = [
    ImageRule(match="busybox:*", target="/images/busybox.sif"),
    ImageRule(match="python:3.11*", target="/images/python311.sif"),
    ImageRule(match="ghcr.io/dask/*", target="/cvmfs/unpacked.cern.ch/{repository}:{tag}"),
    ImageRule(match="registry.example.org/*", target="oras://{image}"),
    ImageRule(match="*", target="docker://mirror.example.org/{repository}:{tag}"),
]


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("busybox", ("busybox", "latest", "")),
        ("busybox:1.36", ("busybox", "1.36", "")),
        ("localhost:5000/team/app:v2", ("localhost:5000/team/app", "v2", "")),
        ("localhost:5000/team/app", ("localhost:5000/team/app", "latest", "")),
        ("ghcr.io/dask/dask@sha256:abc", ("ghcr.io/dask/dask", "", "sha256:abc")),
        ("ghcr.io/dask/dask:2025.1.0@sha256:abc", ("ghcr.io/dask/dask", "2025.1.0", "sha256:abc")),
    ],
)
def test_split_reference(image: str, parts: tuple[str, str, str]) -> None:
    assert split_reference(image) == parts


@pytest.mark.parametrize(
    ("image", "target"),
    [
        ("busybox:1.36", "/images/busybox.sif"),
        ("busybox", "docker://mirror.example.org/busybox:latest"),  # "busybox" lacks ":"
        ("python:3.11-slim", "/images/python311.sif"),
        ("python:3.12", "docker://mirror.example.org/python:3.12"),
        ("ghcr.io/dask/dask:2025.1.0", "/cvmfs/unpacked.cern.ch/ghcr.io/dask/dask:2025.1.0"),
        ("registry.example.org/x/y:1", "oras://registry.example.org/x/y:1"),
        # already runnable: passes through untouched by rules
        ("docker://busybox:1.36", "docker://busybox:1.36"),
        ("oras://ghcr.io/a/b:1", "oras://ghcr.io/a/b:1"),
        ("/cvmfs/unpacked.cern.ch/x:y", "/cvmfs/unpacked.cern.ch/x:y"),
    ],
)
def test_rules(image: str, target: str) -> None:
    assert resolve(image, RULES, "c") == target


def test_default_is_docker() -> None:
    assert resolve("ghcr.io/dask/dask:2025.1.0", [], "c") == "docker://ghcr.io/dask/dask:2025.1.0"


def test_first_matching_rule_wins() -> None:
    rules = [ImageRule(match="*", target="/a.sif"), ImageRule(match="busybox:*", target="/b.sif")]
    assert resolve("busybox:1", rules, "c") == "/a.sif"


@pytest.mark.parametrize("image", ["bad image", "busybox\n", "a,b", '"quoted"', "$(EVIL)", "-rf"])
def test_invalid_references(image: str) -> None:
    with pytest.raises(TranslationError, match="not a valid image reference"):
        resolve(image, [], "container 'x'")


def test_unknown_placeholder_in_rule() -> None:
    with pytest.raises(TranslationError, match="unknown placeholder"):
        resolve("busybox:1", [ImageRule(match="*", target="/x/{image.__class__}")], "c")


def test_translate_uses_rules_and_keeps_the_pods_reference_for_status() -> None:
    p = pod(
        container("a", "busybox:1.36"),
        container("b", "python:3.11"),
        init=[container("i", "alpine:3")],
    )
    plan = translate(
        request(p),
        settings(containers={"image_rules": [r.model_dump() for r in RULES[:2]]}),
    )
    spec = spec_of(plan)
    assert [c.image for c in spec.containers] == ["/images/busybox.sif", "/images/python311.sif"]
    assert spec.init_containers[0].image == "docker://alpine:3"
    assert plan.submit["+InterlinkImages"] == '"alpine:3,busybox:1.36,python:3.11"'
