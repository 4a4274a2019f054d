"""Annotations under htcondor.interlink.eu/, the old plugin's, and interLink's prologue."""

from __future__ import annotations

from typing import Any

import pytest
from _translate_support import container, pod, request, settings, spec_of

from interlink_htcondor.core.translate import TranslationError, translate
from interlink_htcondor.core.translate.annotations import parse_duration

P = "htcondor.interlink.eu/"


def plan_for(annotations: dict[str, str], *containers: dict[str, Any], **cfg: Any) -> Any:
    return translate(request(pod(*containers, annotations=annotations)), settings(**cfg))


def test_unknown_key_under_our_prefix_is_an_error() -> None:
    with pytest.raises(TranslationError, match=f"annotation {P}memory: unknown annotation"):
        plan_for({P + "memory": "2G"})


def test_other_prefixes_are_ignored() -> None:
    plan = plan_for(
        {"example.com/anything": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    )
    assert "requirements" not in plan.submit


def test_requirements_are_anded_and_parsed() -> None:
    plan = plan_for({P + "requirements": 'OpSys == "LINUX" && Arch == "X86_64"'})
    assert plan.submit["requirements"] == '(OpSys == "LINUX" && Arch == "X86_64")'


@pytest.mark.parametrize(
    "expr",
    [
        "true) || (true",
        "Memory >",
        "a = 1",
        "x\ny",
        "1 2",
        "",
        # The parser stops quietly at ']': the rest used to pass unseen.
        "true ] junk",
        "true ]\x1fexecutable = /bin/evil",
        "x) ] [ y = (2",
        "1); Foo = (2",
        "true // the rest of the line",
        "true\x1f",
        "true\tfalse",
        "true\u2028",
        "x" * 5000,
    ],
)
def test_requirements_must_be_one_expression(expr: str) -> None:
    with pytest.raises(TranslationError, match=r"annotation htcondor\.interlink\.eu/requirements"):
        plan_for({P + "requirements": expr})


def test_requirements_may_use_the_whole_classad_language() -> None:
    expr = 'regexp("^T2_", GLIDEIN_Site) && (Memory > 4 * 1024) /* big */ && x.y[0] =?= "]"'
    assert plan_for({P + "requirements": expr}).submit["requirements"] == f"({expr})"


def test_every_submit_value_is_validated_whole() -> None:
    allow = {"allowed_submit_commands": ["priority", "MY.Note"]}
    for value in ("5\x1f6", "5\r", "\x00", "5\x85"):
        with pytest.raises(TranslationError, match="control character"):
            plan_for({P + "submit.priority": value}, policy=allow)
    for value in ('"a"); Evil = (1', '"a" ] [ Evil = 1', '"a" ]'):
        with pytest.raises(TranslationError, match=r"MY\.Note: .* ClassAd expression"):
            plan_for({P + "submit.MY.Note": value}, policy=allow)
    with pytest.raises(TranslationError, match=r"limits\.max_expression_bytes"):
        plan_for({P + "submit.priority": "1" * 5000}, policy=allow)


def test_accounting_group_from_policy_and_annotation() -> None:
    policy = {"accounting_groups": {"team-a": "group_physics", "*": "group_other"}}
    plan = plan_for({}, policy=policy)
    assert plan.submit["accounting_group"] == "group_physics"
    plan = plan_for({P + "accounting-group": "group_physics.higgs"}, policy=policy)
    assert plan.submit["accounting_group"] == "group_physics.higgs"
    with pytest.raises(TranslationError, match="not 'group_physics' or one of its subgroups"):
        plan_for({P + "accounting-group": "group_admin"}, policy=policy)
    with pytest.raises(TranslationError, match="accounting group name"):
        plan_for({P + "accounting-group": "a b"})
    other_ns = translate(request(pod(namespace="other")), settings(policy=policy))
    assert other_ns.submit["accounting_group"] == "group_other"
    # no mapping at all: the annotation is used as given, and nothing by default
    assert plan_for({P + "accounting-group": "g1"}).submit["accounting_group"] == "g1"
    assert "accounting_group" not in plan_for({}).submit


def test_accounting_group_user() -> None:
    plan = plan_for({}, policy={"accounting_groups": {"*": "g"}, "accounting_group_user": "svc"})
    assert plan.submit["accounting_group_user"] == "svc"


ON = {"allow_apptainer_options": True}
DATA = {"host_path_allow": ["/data"], "shared_dir": "/srv/pods"}


def test_apptainer_options_are_off_by_default() -> None:
    # A bind of the shared pods directory showed other pods' Secrets: refused by default.
    for key in (P + "apptainer-options", "htcondor-job.vk.io/singularity-options"):
        with pytest.raises(TranslationError, match=r"policy\.allow_apptainer_options"):
            plan_for({key: "--bind /var/lib/interlink-htcondor/pods:/x"})
        with pytest.raises(TranslationError, match="does not let pods set apptainer options"):
            plan_for({key: "--nv"})


def test_apptainer_options_are_checked_argv_data() -> None:
    annotations = {
        P + "apptainer-options": "--nv -B '/data/my dir:/in:ro' --writable-tmpfs",
        P + "apptainer-options.side": "--bind=/data/x",
    }
    plan = plan_for(annotations, container("main"), container("side"), policy=ON, storage=DATA)
    spec = spec_of(plan)
    assert spec.apptainer.args == ["--nv", "--bind=/data/my dir:/in:ro", "--writable-tmpfs"]
    assert spec.containers[0].apptainer_args == []
    assert spec.containers[1].apptainer_args == ["--bind=/data/x"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("--bind 'unterminated", "cannot split"),
        ("--contain", "option --contain is not allowed"),
        ("--env X=1", "option --env is not allowed"),
        ("--home /data:/home/x", "option --home is not allowed"),
        ("--env-file /srv/pods/other/pod.json", "option --env-file is not allowed"),
        ("; cat /etc/passwd", "is not an option"),
        ("-Bfoo", "is not an option"),
        ("--nv=1", "takes no value"),
        ("--bind", "needs a value"),
        ("--bind /etc:/x", "outside the allowed prefixes"),
        ("--bind /data/../etc:/x", r"must not contain '\.\.'"),
        ("--bind data:/x", "must be an absolute path"),
        ("--bind /data:/x:image-src=/", "bind option 'image-src=/' is not allowed"),
        ("--bind /data:/", "must not be '/'"),
        ("--bind /data,/etc", "outside the allowed prefixes"),
        ("--bind /data:/x:ro:extra", "is not src"),
        ("--nv\x1f--bind=/etc", "control characters"),
        ("--nv\n--bind /etc", "control characters"),
    ],
)
def test_apptainer_option_refusals(text: str, match: str) -> None:
    allowed = ["--nv", "--bind", "-B", "--writable-tmpfs"]
    with pytest.raises(TranslationError, match=match):
        plan_for(
            {P + "apptainer-options": text},
            policy={**ON, "allowed_apptainer_options": allowed},
            storage=DATA,
        )


def test_binds_never_reach_the_sandboxes() -> None:
    # Even where the admin allows every host path, the pods' own directory stays out.
    storage = {"host_path_allow": ["/"], "shared_dir": "/srv/pods"}
    for source in ("/srv/pods", "/srv/pods/team-b_x_1", "/srv", "/"):
        with pytest.raises(TranslationError, match="the pods' sandboxes"):
            plan_for({P + "apptainer-options": f"--bind {source}:/x"}, policy=ON, storage=storage)
    plan = plan_for({P + "apptainer-options": "-B /cvmfs"}, policy=ON, storage=storage)
    assert spec_of(plan).apptainer.args == ["--bind=/cvmfs"]


def test_binds_need_host_path_allow() -> None:
    with pytest.raises(TranslationError, match="binds are not allowed on this site"):
        plan_for({P + "apptainer-options": "--bind /data"}, policy=ON)


def test_only_checkable_options_may_be_allowed() -> None:
    with pytest.raises(ValueError, match="cannot check apptainer options"):
        settings(policy={"allowed_apptainer_options": ["--nv", "--fusemount"]})


def test_site_apptainer_args_come_first() -> None:
    plan = plan_for(
        {P + "apptainer-options": "--nv"},
        containers={
            "apptainer_args": ["--cleanenv-extra"],
            "apptainer": "/opt/apptainer/bin/apptainer",
        },
        policy=ON,
    )
    spec = spec_of(plan)
    assert spec.apptainer.binary == "/opt/apptainer/bin/apptainer"
    assert spec.apptainer.args == ["--cleanenv-extra", "--nv"]


def test_legacy_singularity_options() -> None:
    plan = plan_for(
        {"htcondor-job.vk.io/singularity-options": "--nv --bind /data"}, policy=ON, storage=DATA
    )
    assert spec_of(plan).apptainer.args == ["--nv", "--bind=/data"]


def test_apptainer_options_for_an_unknown_container() -> None:
    with pytest.raises(TranslationError, match="no container 'ghost'"):
        plan_for({P + "apptainer-options.ghost": "--nv"}, policy=ON)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("90s", 90),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2h45m30s", 9930),
        ("1500ms", 2),
        ("10m0s", 600),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "1d", "h", "-5m", "0", "0s", "1h 30m", "ten", "٣"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(TranslationError):
        parse_duration(text, "x")


def test_wall_time_annotation_and_deadline() -> None:
    spec = spec_of(plan_for({P + "wall-time": "2h"}))
    assert spec.active_deadline_seconds == 7200
    p = pod(annotations={P + "wall-time": "2h"}, activeDeadlineSeconds=600)
    plan = translate(request(p), settings())
    assert spec_of(plan).active_deadline_seconds == 600  # the smaller one wins
    assert plan.submit["allowed_job_duration"] == str(600 + 30 + 60)


def test_wall_time_default_and_cap() -> None:
    assert (
        spec_of(plan_for({}, resources={"default_wall_seconds": 900})).active_deadline_seconds
        == 900
    )
    assert (
        spec_of(plan_for({}, resources={"max_wall_seconds": 7200})).active_deadline_seconds == 7200
    )
    assert spec_of(plan_for({})).active_deadline_seconds is None
    with pytest.raises(TranslationError, match="at most 3600 s"):
        plan_for({P + "wall-time": "2h"}, resources={"max_wall_seconds": 3600})


def test_container_mode_annotation() -> None:
    plan = plan_for({P + "container-mode": "container-universe"}, container(command=["/bin/true"]))
    assert plan.submit["universe"] == "container"
    with pytest.raises(TranslationError, match="not one of"):
        plan_for({P + "container-mode": "docker"})


def test_submit_commands_need_the_allow_list() -> None:
    with pytest.raises(TranslationError, match="not allowed on this site"):
        plan_for({P + "submit.max_idle": "5"})
    allow = {"allowed_submit_commands": ["Priority", "MY.DESIRED_Sites", "request_memory"]}
    plan = plan_for(
        {
            P + "submit.priority": "5",
            P + "submit.MY.DESIRED_Sites": '"T2_CH_CERN"',
            P + "submit.Request_Memory": "4096",
        },
        policy=allow,
    )
    assert plan.submit["priority"] == "5"
    assert plan.submit["MY.DESIRED_Sites"] == '"T2_CH_CERN"'
    # replaces the translator's own request_memory instead of adding a twin
    assert plan.submit["Request_Memory"] == "4096" and "request_memory" not in plan.submit


@pytest.mark.parametrize(
    "command",
    [
        "executable",
        "Universe",
        "leave_in_queue",
        "MY.WantIOProxy",
        "MY.InterlinkPodUID",
        "InterlinkPlugin",
        "queue",
    ],
)
def test_translator_owned_commands_are_never_overridden(command: str) -> None:
    with pytest.raises(TranslationError, match="set by the plugin itself"):
        plan_for({P + f"submit.{command}": "x"}, policy={"allowed_submit_commands": [command]})


def test_submit_values_cannot_inject_lines() -> None:
    allow = {"allowed_submit_commands": ["priority"]}
    with pytest.raises(TranslationError, match="control character"):
        plan_for({P + "submit.priority": "5\nexecutable = /bin/evil"}, policy=allow)
    with pytest.raises(TranslationError, match="must not end with"):
        plan_for({P + "submit.priority": "5\\"}, policy=allow)
    with pytest.raises(TranslationError, match="submit command name"):
        plan_for({P + "submit.a-b": "1"}, policy={"allowed_submit_commands": ["a-b"]})


def test_dollar_in_submit_values_is_not_a_macro() -> None:
    allow = {"allowed_submit_commands": ["MY.Note"]}
    plan = plan_for(
        {P + "submit.MY.Note": '"$(Cluster) $ENV(HOME) $RANDOM_INTEGER(1,9)"'}, policy=allow
    )
    assert (
        plan.submit["MY.Note"]
        == '"$(DOLLAR)(Cluster) $(DOLLAR)ENV(HOME) $(DOLLAR)RANDOM_INTEGER(1,9)"'
    )


WSTUNNEL = (
    "curl -sL https://example.org/wstunnel -o wstunnel\n"
    "./wstunnel client -R tcp://0.0.0.0:8786:localhost:8786 wss://x &"
)
MESH = "cat <<'EOFMESH' > $TMPDIR/mesh.sh\n#!/bin/sh\nEOFMESH\nsh $TMPDIR/mesh.sh"
PROLOGUE = {"slurm-job.vk.io/pre-exec": MESH, "interlink.eu/wstunnel-client-commands": WSTUNNEL}


def test_prologue_is_off_by_default() -> None:
    # Prologue commands run outside any container: a pod read another pod's Secret so.
    for key, value in PROLOGUE.items():
        with pytest.raises(TranslationError, match=r"annotation .*policy\.prologue_namespaces"):
            plan_for({key: value})
    assert spec_of(plan_for({})).prologue == []


def test_prologue_for_allowed_namespaces() -> None:
    for allowed in (["team-a"], ["*"]):
        spec = spec_of(plan_for(PROLOGUE, policy={"prologue_namespaces": allowed}))
        assert spec.prologue == [WSTUNNEL, MESH]
    with pytest.raises(TranslationError, match="namespace 'team-a'"):
        plan_for(PROLOGUE, policy={"prologue_namespaces": ["team-b"]})
    with pytest.raises(TranslationError, match="NUL"):
        plan_for({"slurm-job.vk.io/pre-exec": "a\x00b"}, policy={"prologue_namespaces": ["*"]})


def test_instance_serves_only_its_namespaces() -> None:
    assert plan_for({}, policy={"namespaces": ["team-a", "team-b"]}).namespace == "team-a"
    with pytest.raises(TranslationError, match=r"not 'team-a' \(policy\.namespaces\)"):
        plan_for({}, policy={"namespaces": ["team-b"]})
