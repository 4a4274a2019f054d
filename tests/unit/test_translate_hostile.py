"""Hostile input in every field a pod controls: refused, or carried intact, never mixed in.

For each field, hypothesis puts arbitrary text (every control character included, and a
corpus of strings that break submit files, ClassAds, shells and bind specs) into one
benign pod. ``translate`` must then either raise ``TranslationError`` (a 422), or give
a plan whose submit description:

- has exactly the commands the plugin meant (those of the benign pod, plus the one the
  field itself adds), as HTCondor's own parser reads them back;
- has every command not fed by the field unchanged from the benign pod's, so nothing
  leaked from the field into another command;
- holds no control character, and travels intact in the gateway's batched submit;

and whose job spec carries the value intact where the field goes there. A batch of
hostile and benign pods then fails only the hostile ones. (The request model refusing a
value, pydantic's ValidationError, is a 422 as well.)
"""

from __future__ import annotations

import copy
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import classad2
import htcondor2
import pytest
from _translate_support import Json, configmap, container, pod, request, secret, settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from interlink_htcondor.core.itemdata import batch, check_commands
from interlink_htcondor.core.jobspec import SPEC_FILE, JobSpec
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.core.translate import TranslationError, translate
from interlink_htcondor.core.translate.values import first_control
from interlink_htcondor.settings import Settings

P = "htcondor.interlink.eu/"
CONTROLS = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]) + "\u2028\u2029"
CORPUS = [
    "\x1f",
    "true ]\x1fexecutable = /bin/evil",
    "a\nqueue\nexecutable = /bin/sh",
    "x\r\n+Evil = true",
    "$(DOLLAR)$$(x)$(v0)",
    "#comment",
    ")",
    "trailing\\",
    "]",
    '"quoted" \\" [ ]',
    "/srv/pods:/x",
    "--bind /srv/pods:/x",
    "; rm -rf / && `id` $(id)",
    "..",
    "../../etc/passwd",
    "a,b:c",
    " padded ",
    "\u202e\u200b",
    "x" * 300,
]
HOSTILE = st.one_of(
    st.sampled_from(CORPUS),
    st.text(max_size=60),
    st.text(alphabet=st.sampled_from(CONTROLS + "$()[]\\\"' #:,/=;-_.aZ9"), max_size=40),
)
SHARED = "/srv/pods"


def cfg() -> Settings:
    return settings(
        storage={"shared_dir": SHARED, "host_path_allow": ["/data"]},
        policy={
            "allow_apptainer_options": True,
            "allowed_submit_commands": ["priority", "MY.Note"],
            "prologue_namespaces": ["team-a"],
        },
    )


def base_pod() -> Json:
    return pod(
        container(
            "main",
            command=["sh", "-c", "echo hi"],
            args=["one"],
            env=[{"name": "GREETING", "value": "hello"}],
            workingDir="/work",
            volumeMounts=[
                {"name": "cfg", "mountPath": "/etc/app"},
                {"name": "sec", "mountPath": "/etc/sec", "subPath": "dir"},
            ],
            lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "sleep 1"]}}},
        ),
        volumes=[
            {"name": "cfg", "configMap": {"name": "cm"}},
            {"name": "sec", "secret": {"secretName": "s"}},
        ],
        annotations={"example.com/note": "benign"},
        labels={"app": "demo"},
    )


BASE_CM = {"key.txt": "data"}
BASE_SECRET: dict[str, bytes | str] = {"dir": "secret"}


def run(p: Json, cm: dict[str, str] | None = None, sec: dict[str, Any] | None = None) -> JobPlan:
    return translate(
        request(
            p,
            configmaps=[configmap("cm", cm if cm is not None else BASE_CM)],
            secrets=[secret("s", sec if sec is not None else BASE_SECRET)],
        ),
        cfg(),
    )


BASE = run(base_pod())


def spec_of(plan: JobPlan) -> JobSpec:
    raw = next(f for f in plan.files if f.path == SPEC_FILE).content
    return JobSpec.model_validate_json(raw)


def files_of(plan: JobPlan) -> dict[str, bytes]:
    return {f.path: f.content for f in plan.files}


def norm(path: str) -> str:
    """A path as the translator normalises it (POSIX keeps a leading '//'; it does not)."""
    return posixpath.normpath(path).replace("//", "/")


def escape(value: str) -> str:
    """The text a pod writes so that ``$(VAR)`` expansion gives back ``value``."""
    return value.replace("$", "$$")


def check_submit(plan: JobPlan, fed: set[str], added: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """The invariants every accepted plan's submit description must hold."""
    submit = plan.submit
    assert set(submit) == set(BASE.submit) | added, "a command appeared or vanished"
    parsed = htcondor2.Submit(submit)

    def name(key: str) -> str:
        return "my." + key[1:].lower() if key.startswith("+") else key.lower()

    assert {name(k) for k in parsed} == {name(k) for k in submit}
    for key, value in submit.items():
        assert first_control(value) is None, key
        if key not in fed and key not in added:
            assert value == BASE.submit[key], f"{key} changed"
    commands = {**submit, "+InterlinkPlugin": '"x"'}
    check_commands(commands)  # travels intact in a batched submit


IDENTITY_FED = {"batch_name", "executable", "initialdir", "+InterlinkSandbox"}


@dataclass(frozen=True)
class Field:
    """One pod-controlled field: how to put a value there, and what must come of it."""

    name: str
    put: Callable[[Json, str], dict[str, Any]]  # mutates the pod; returns run() kwargs
    check: Callable[[JobPlan, str], None]


def _c(p: Json) -> Json:
    c: Json = p["spec"]["containers"][0]
    return c


def put_env_value(p: Json, v: str) -> dict[str, Any]:
    _c(p)["env"].append({"name": "HOSTILE", "value": escape(v)})
    return {}


def check_env_value(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert dict(spec_of(plan).containers[0].env)["HOSTILE"] == v


def put_env_name(p: Json, v: str) -> dict[str, Any]:
    _c(p)["env"].append({"name": v, "value": "x"})
    return {}


def check_env_name(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert dict(spec_of(plan).containers[0].env)[v] == "x"


def put_arg(p: Json, v: str) -> dict[str, Any]:
    _c(p)["args"] = ["one", escape(v)]
    return {}


def check_arg(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert spec_of(plan).containers[0].argv == ["sh", "-c", "echo hi", "one", v]


def put_command(p: Json, v: str) -> dict[str, Any]:
    _c(p)["command"] = [escape(v)]
    _c(p)["args"] = []
    return {}


def check_command(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert spec_of(plan).containers[0].argv == [v]


def put_working_dir(p: Json, v: str) -> dict[str, Any]:
    _c(p)["workingDir"] = "/" + v
    return {}


def check_working_dir(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert spec_of(plan).containers[0].working_dir == "/" + v


def put_pre_stop(p: Json, v: str) -> dict[str, Any]:
    _c(p)["lifecycle"]["preStop"]["exec"]["command"] = ["sh", "-c", v]
    return {}


def check_pre_stop(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    hook = spec_of(plan).containers[0].pre_stop
    assert hook is not None and hook.argv == ["sh", "-c", v]


def put_image(p: Json, v: str) -> dict[str, Any]:
    _c(p)["image"] = v
    return {}


def check_image(plan: JobPlan, v: str) -> None:
    check_submit(plan, {"+InterlinkImages"})
    assert plan.submit["+InterlinkImages"] == classad2.quote(v).replace("$", "$(DOLLAR)")


def put_container_name(p: Json, v: str) -> dict[str, Any]:
    _c(p)["name"] = v
    return {}


def check_container_name(plan: JobPlan, v: str) -> None:
    check_submit(plan, {"+InterlinkContainers"})
    assert plan.containers == (v,)


def put_pod_name(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["name"] = v
    return {}


def check_pod_name(plan: JobPlan, v: str) -> None:
    check_submit(plan, IDENTITY_FED | {"+InterlinkPodName"})
    assert plan.submit["+InterlinkPodName"] == classad2.quote(v)


def put_namespace(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["namespace"] = v
    return {}


def check_namespace(plan: JobPlan, v: str) -> None:
    check_submit(plan, IDENTITY_FED | {"+InterlinkPodNamespace"})
    assert plan.submit["+InterlinkPodNamespace"] == classad2.quote(v)


def put_uid(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["uid"] = v
    return {}


def check_uid(plan: JobPlan, v: str) -> None:
    check_submit(plan, IDENTITY_FED | {"+InterlinkPodUID"})
    assert plan.submit["+InterlinkPodUID"] == classad2.quote(v)


def put_label(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["labels"] = {"app": v, v: "x"}
    return {}


def check_unchanged(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())


def put_foreign_annotation(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {"example.com/note": v, f"example.com/{v}": v}
    return {}


def put_our_annotation_key(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {P + v: "1"}
    return {}


def put_requirements(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {P + "requirements": v}
    return {}


def check_requirements(plan: JobPlan, v: str) -> None:
    check_submit(plan, set(), {"requirements"})
    assert plan.submit["requirements"] == f"({v})".replace("$", "$(DOLLAR)")
    assert htcondor2.Submit(plan.submit).expand("requirements") == f"({v})"


def put_accounting_group(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {P + "accounting-group": v}
    return {}


def check_accounting_group(plan: JobPlan, v: str) -> None:
    check_submit(plan, set(), {"accounting_group"})
    assert plan.submit["accounting_group"] == v


def put_wall_time(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {P + "wall-time": v}
    return {}


def check_wall_time(plan: JobPlan, v: str) -> None:
    check_submit(plan, set(), {"allowed_job_duration"})
    assert plan.submit["allowed_job_duration"].isdigit()


def put_submit_value(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {P + "submit.priority": v, P + "submit.MY.Note": v}
    return {}


def check_submit_value(plan: JobPlan, v: str) -> None:
    check_submit(plan, set(), {"priority", "MY.Note"})
    parsed = htcondor2.Submit(plan.submit)
    assert parsed.expand("priority") == v and parsed.expand("MY.Note") == v


def put_apptainer_options(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {P + "apptainer-options": v}
    return {}


def check_apptainer_options(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    for arg in spec_of(plan).apptainer.args:
        assert arg in ("--nv", "--rocm", "--writable-tmpfs") or arg.startswith("--bind=/data")
        assert SHARED not in arg


def put_prologue(p: Json, v: str) -> dict[str, Any]:
    p["metadata"]["annotations"] = {"slurm-job.vk.io/pre-exec": v}
    return {}


def check_prologue(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert spec_of(plan).prologue == ([v] if v else [])


def put_cm_key(p: Json, v: str) -> dict[str, Any]:
    return {"cm": {v: "content"}}


def check_cm_key(plan: JobPlan, v: str) -> None:
    check_submit(plan, set(), {"transfer_input_files"} & set(plan.submit))
    assert files_of(plan)[f"volumes/cfg/{v}"] == b"content"


def put_cm_data(p: Json, v: str) -> dict[str, Any]:
    return {"cm": {"key.txt": v}}


def check_cm_data(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert files_of(plan)["volumes/cfg/key.txt"] == v.encode()


def put_secret_data(p: Json, v: str) -> dict[str, Any]:
    return {"sec": {"dir": v.encode("utf-8", "surrogatepass"), "other": b"\x00\xff" + v.encode()}}


def check_secret_data(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert files_of(plan)["volumes/sec/dir"] == v.encode()


def put_mount_path(p: Json, v: str) -> dict[str, Any]:
    _c(p)["volumeMounts"][0]["mountPath"] = "/" + v
    return {}


def check_mount_path(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert spec_of(plan).containers[0].mounts[0].mount_path == norm("/" + v)


def put_sub_path(p: Json, v: str) -> dict[str, Any]:
    _c(p)["volumeMounts"][1]["subPath"] = v
    return {}


def check_sub_path(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert spec_of(plan).containers[0].mounts[1].sub_path == v


def put_item_path(p: Json, v: str) -> dict[str, Any]:
    p["spec"]["volumes"][0]["configMap"]["items"] = [{"key": "key.txt", "path": v}]
    return {}


def check_item_path(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    assert files_of(plan)[f"volumes/cfg/{v}"] == b"data"


def put_host_path(p: Json, v: str) -> dict[str, Any]:
    p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": v}})
    _c(p)["volumeMounts"].append({"name": "host", "mountPath": "/host"})
    return {}


def check_host_path(plan: JobPlan, v: str) -> None:
    check_submit(plan, set())
    path = spec_of(plan).volumes["host"].path
    assert path == norm(v) and (path == "/data" or path.startswith("/data/"))


def put_memory(p: Json, v: str) -> dict[str, Any]:
    _c(p)["resources"] = {"requests": {"memory": v}}
    return {}


def check_memory(plan: JobPlan, v: str) -> None:
    check_submit(plan, {"request_memory"})
    assert plan.submit["request_memory"].isdigit()


FIELDS = [
    Field("env value", put_env_value, check_env_value),
    Field("env name", put_env_name, check_env_name),
    Field("args", put_arg, check_arg),
    Field("command", put_command, check_command),
    Field("workingDir", put_working_dir, check_working_dir),
    Field("preStop command", put_pre_stop, check_pre_stop),
    Field("image", put_image, check_image),
    Field("container name", put_container_name, check_container_name),
    Field("pod name", put_pod_name, check_pod_name),
    Field("namespace", put_namespace, check_namespace),
    Field("uid", put_uid, check_uid),
    Field("labels", put_label, check_unchanged),
    Field("foreign annotations", put_foreign_annotation, check_unchanged),
    Field("our annotation keys", put_our_annotation_key, check_unchanged),
    Field("requirements", put_requirements, check_requirements),
    Field("accounting group", put_accounting_group, check_accounting_group),
    Field("wall time", put_wall_time, check_wall_time),
    Field("submit values", put_submit_value, check_submit_value),
    Field("apptainer options", put_apptainer_options, check_apptainer_options),
    Field("prologue", put_prologue, check_prologue),
    Field("configMap keys", put_cm_key, check_cm_key),
    Field("configMap data", put_cm_data, check_cm_data),
    Field("secret data", put_secret_data, check_secret_data),
    Field("mountPath", put_mount_path, check_mount_path),
    Field("subPath", put_sub_path, check_sub_path),
    Field("items path", put_item_path, check_item_path),
    Field("hostPath", put_host_path, check_host_path),
    Field("memory quantity", put_memory, check_memory),
]


def attempt(field: Field, value: str) -> JobPlan | None:
    """The plan for the benign pod with ``value`` in ``field``; None when refused."""
    p = copy.deepcopy(base_pod())
    try:
        kwargs = field.put(p, value)
        return run(p, **kwargs)
    except (TranslationError, ValidationError):  # both a 422
        return None
    except UnicodeEncodeError:  # lone surrogates cannot even be sent as JSON text
        return None


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=HOSTILE)
def test_hostile_value_is_refused_or_carried_intact(field: Field, value: str) -> None:
    plan = attempt(field, value)
    if plan is not None:
        field.check(plan, value)


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_every_control_character_in_every_field(field: Field) -> None:
    for ch in CONTROLS:
        value = f"a{ch}b"
        plan = attempt(field, value)
        if plan is not None:
            field.check(plan, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requirements", "true ]\x1fexecutable = /bin/evil"),
        ("apptainer options", f"--bind {SHARED}:/x"),
        ("hostPath", SHARED),
        ("hostPath", "/etc"),
        ("prologue", "cat /srv/pods/*/volumes/*/*"),
        ("pod name", "../../etc"),
        ("env value", "$(A)" * 40_000),
    ],
)
def test_known_attacks_are_refused(field: str, value: str) -> None:
    f = next(f for f in FIELDS if f.name == field)
    p = copy.deepcopy(base_pod())
    if field == "prologue":
        p["metadata"]["namespace"] = "team-b"  # not among policy.prologue_namespaces
    if field == "env value":
        _c(p)["env"].append({"name": "HOSTILE", "value": value})
        with pytest.raises(TranslationError):
            run(p)
        return
    kwargs = f.put(p, value)
    with pytest.raises(TranslationError):
        run(p, **kwargs)


def rows_back(template: dict[str, str], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows as HTCondor reads them from the text htcondor2 writes (see test_itemdata)."""
    keys = list(rows[0])
    text = "".join(f"{k} = {v}\n" for k, v in template.items())
    text += f"queue {','.join(keys)} from (\n"
    text += "".join("\x1f".join(r[k] for k in keys) + "\n" for r in rows)
    return list(htcondor2.Submit(text + ")\n").itemdata())


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(FIELDS), st.one_of(st.none(), HOSTILE)), min_size=2, max_size=8
    )
)
def test_a_batch_of_hostile_and_benign_pods_fails_only_the_hostile_ones(
    pods: list[tuple[Field, str | None]],
) -> None:
    """Pods created at the same moment: each hostile one is refused on its own, and the
    others' rows come back exactly as each pod's own commands."""
    accepted: list[tuple[int, dict[str, str]]] = []
    for i, (field, value) in enumerate(pods):
        uid = f"3f1c2b9e-7a64-4d1e-9b0a-{i:012d}"
        p = copy.deepcopy(base_pod())
        p["metadata"]["uid"] = uid
        kwargs: dict[str, Any] = {}
        try:
            if value is not None:
                kwargs = field.put(p, value)
                p["metadata"]["uid"] = uid if field.name != "uid" else p["metadata"]["uid"]
            plan = run(p, **kwargs)
        except (TranslationError, ValidationError, UnicodeEncodeError):
            assert value is not None, "a benign pod was refused"
            continue
        accepted.append((i, {**plan.submit, "+InterlinkPlugin": '"x"'}))
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for _, commands in accepted:
        groups.setdefault(tuple(sorted(commands)), []).append(commands)
    for group in groups.values():
        template, rows = batch(group)
        back = rows_back(template, rows)
        assert back == rows
        assert [{k: r[f"v{j}"] for j, k in enumerate(template)} for r in back] == group


def test_the_corpus_reaches_pod_json_byte_for_byte() -> None:
    # One pod holding every corpus string in env, args and a volume file at once.
    values = [v for v in CORPUS if "\x00" not in v]
    p = base_pod()
    _c(p)["env"] += [{"name": f"H{i}", "value": escape(v)} for i, v in enumerate(values)]
    _c(p)["args"] = [escape(v) for v in values]
    plan = run(p, cm={f"k{i}": v for i, v in enumerate(values)})
    spec = json.loads(files_of(plan)[SPEC_FILE])
    env = dict(map(tuple, spec["containers"][0]["env"]))
    assert [env[f"H{i}"] for i in range(len(values))] == values
    assert spec["containers"][0]["argv"][3:] == values
    for i, v in enumerate(values):
        assert files_of(plan)[f"volumes/cfg/k{i}"] == v.encode()
